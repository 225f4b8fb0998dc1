"""Offline checks of infra/ (the azd templates): each returns the problems it finds, [] if none.

The templates are read with pycep-parser (Bicep to JSON); what the app reads comes from the app
itself: the Settings model (orchestrator/settings.py) and the bindings the Functions host
indexes (function_app.py). tests/infra/test_templates.py runs every check on infra/ and on
broken copies of it.
"""

from __future__ import annotations

import ast
import functools
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
# The packages whose string literals may be the text of a log record an alert matches.
APP_PACKAGES = ("orchestrator", "adapters", "triggers", "promotion", "retrain", "domain")

# Built-in role definition ids (the same in every tenant).
ROLE_IDS = {
    "Storage Blob Data Owner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "Storage Queue Data Contributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "Azure Service Bus Data Owner": "090c5cfd-751d-490a-894a-3ce6f1109419",
    "Azure Event Hubs Data Owner": "f526a384-b230-433a-b45c-95f59c4a2dec",
    "AzureML Data Scientist": "f6c7c914-8db3-469d-8ca1-694a8f32e121",
    "Key Vault Secrets User": "4633458b-17de-408a-b874-0445c86b69e6",
}
# What each identity-based connection needs on the resource its settings name (Functions'
# identity-based connections; Service Bus Owner: the Flex Consumption scaler reads queue
# properties). A connection the app starts reading without an entry here fails the check.
CONNECTION_ROLES = {
    "AzureWebJobsStorage": ("Storage Blob Data Owner", "Storage Queue Data Contributor"),
    "DataStorage": ("Storage Blob Data Owner", "Storage Queue Data Contributor"),
    "ServiceBusConnection": ("Azure Service Bus Data Owner",),
    "EventHubConnection": ("Azure Event Hubs Data Owner",),
}
# Settings that are not connections but name a resource the app reaches with its identity:
# (setting, role, whether the deploying user needs it too for the CLI).
IDENTITY_SETTINGS = (
    ("AZUREML_WORKSPACE", "AzureML Data Scientist", True),
    ("MESSAGE_SIGNING_KEY", "Key Vault Secrets User", False),
)
# Flex Consumption takes these from functionAppConfig and refuses them as app settings.
FLEX_FORBIDDEN = ("FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION")
AVM_TAG = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+")
NAMESPACE_MODULES = ("avm/res/service-bus/namespace", "avm/res/event-hub/namespace")
NAMESPACE_TYPES = ("Microsoft.ServiceBus/namespaces", "Microsoft.EventHub/namespaces")
# The parameters and outputs of each pinned Azure Verified Module version, read from the
# modules' own sources by tools/avm_snapshot.py (docs/deploy.md says how to refresh it).
AVM_SNAPSHOT = Path(__file__).with_name("avm_modules.json")
# `<symbol>.outputs.<name>`, `<symbol>[i].outputs.<name>`, `<symbol>.outputs.?<name>`.
OUTPUT_READ = re.compile(r"\b(\w+)(?:\[[^\]]*\])?\.outputs\.\??(\w+)")


# --- reading the templates ------------------------------------------------------------------


@functools.cache
def _parser() -> Any:
    from pycep import BicepParser

    return BicepParser()


@functools.cache
def _parse_text(text: str) -> dict[str, Any]:
    return _parser().parse(text=text)


def parse(path: Path) -> dict[str, Any]:
    return _parse_text(path.read_text())


def bicep_files(infra: Path) -> list[Path]:
    return sorted(infra.rglob("*.bicep"))


def render(node: Any) -> str:
    """A pycep expression as text: `a.b.c`, `fn(x, y)`, or the literal."""
    if isinstance(node, str):
        return node
    if (
        isinstance(node, dict)
        and "operator" in node
        and node["operator"]["type"] == ("property_accessor")
    ):
        operands = node["operator"]["operands"]
        return f"{render(operands['operand_1'])}.{render(operands['operand_2'])}"
    if isinstance(node, dict) and "function" in node:
        function = node["function"]
        parameters = function.get("parameters") or {}
        arguments = ", ".join(render(value) for value in parameters.values())
        return f"{function['type']}({arguments})"
    return json.dumps(node, sort_keys=True)


def _body(declaration: dict[str, Any]) -> dict[str, Any]:
    """A module's or resource's config, through a `[for ...]` loop or an `if`."""
    config = declaration["config"]
    return config["config"] if "loop_type" in config or "condition" in config else config


def modules(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    yield from template.get("modules", {}).items()


def module_params(declaration: dict[str, Any]) -> dict[str, Any]:
    return _body(declaration).get("params", {})


def avm_modules(infra: Path, path: str) -> Iterator[tuple[Path, str, dict[str, Any]]]:
    """(file, symbol, params) of every use of one registry module."""
    for file in bicep_files(infra):
        for symbol, declaration in modules(parse(file)):
            if declaration["detail"].get("path") == path:
                yield file, symbol, module_params(declaration)


def local_module(template: dict[str, Any], file: str) -> tuple[str, dict[str, Any]]:
    """The (symbol, params) of the module declared from the local file `file`."""
    found = [
        (symbol, module_params(declaration))
        for symbol, declaration in modules(template)
        if declaration["type"] == "local" and declaration["detail"]["path"] == file
    ]
    if len(found) != 1:
        raise LookupError(f"main.bicep declares {file} {len(found)} times")
    return found[0]


# --- the checks -----------------------------------------------------------------------------


def parse_problems(infra: Path) -> list[str]:
    problems = []
    files = bicep_files(infra)
    if not files:
        problems.append(f"no .bicep file under {infra}")
    for file in files:
        try:
            parse(file)
        except Exception as exc:
            problems.append(f"{file.relative_to(infra)} does not parse: {exc}")
    return problems


def module_reference_problems(infra: Path) -> list[str]:
    """Every module is an Azure Verified Module pinned to a version, or a file of infra/."""
    problems = []
    for file in bicep_files(infra):
        for symbol, declaration in modules(parse(file)):
            detail, where = declaration["detail"], f"{file.relative_to(infra)}: module {symbol}"
            if declaration["type"] == "local":
                if not (file.parent / detail["path"]).is_file():
                    problems.append(f"{where}: no file {detail['path']}")
            elif not (
                declaration["type"] == "bicep_registry_alias"
                and detail.get("alias") == "public"
                and str(detail.get("path", "")).startswith("avm/")
                and AVM_TAG.fullmatch(str(detail.get("tag", "")))
            ):
                problems.append(f"{where}: {detail.get('full')} is not br/public:avm/...:<version>")
    return problems


def module_param_problems(infra: Path) -> list[str]:
    """Each local module is given every parameter it requires and none it does not declare,
    and main.parameters.json feeds main.bicep the same way (what `bicep build` would refuse)."""
    problems = []
    for file in bicep_files(infra):
        for symbol, declaration in modules(parse(file)):
            if declaration["type"] != "local":
                continue
            target = file.parent / declaration["detail"]["path"]
            if target.is_file():
                problems += _argument_problems(
                    f"{file.name}: module {symbol}", target, set(module_params(declaration))
                )
    parameters = json.loads((infra / "main.parameters.json").read_text())["parameters"]
    problems += _argument_problems("main.parameters.json", infra / "main.bicep", set(parameters))
    return problems


def output_reference_problems(infra: Path) -> list[str]:
    """Each `<module>.outputs.<name>` of a local module names an output that module declares."""
    problems = []
    for file in bicep_files(infra):
        local = {
            symbol: file.parent / declaration["detail"]["path"]
            for symbol, declaration in modules(parse(file))
            if declaration["type"] == "local"
        }
        text = file.read_text()
        for symbol, name in sorted(set(re.findall(r"\b(\w+)\.outputs\.\??(\w+)", text))):
            target = local.get(symbol)
            if target and target.is_file() and name not in parse(target).get("outputs", {}):
                problems.append(f"{file.name}: {target.name} has no output {name}")
    return problems


@functools.cache
def avm_snapshot(path: Path = AVM_SNAPSHOT) -> dict[str, Any]:
    """{"<module path>:<version>": {"parameters": {name: shape}, "outputs": [name, ...]}}."""
    return json.loads(path.read_text())["modules"]


def avm_calls(infra: Path) -> Iterator[tuple[Path, str, str, dict[str, Any]]]:
    """(file, symbol, "<module path>:<version>", params) of every registry module call."""
    for file in bicep_files(infra):
        for symbol, declaration in modules(parse(file)):
            if declaration["type"] == "bicep_registry_alias":
                detail = declaration["detail"]
                key = f"{detail.get('path')}:{detail.get('tag')}"
                yield file, symbol, key, module_params(declaration)


def avm_param_problems(infra: Path, snapshot: dict[str, Any] | None = None) -> list[str]:
    """Each Azure Verified Module call passes only parameters that version declares and every
    one it requires (no default, not nullable); inside typed object and array parameters only
    the properties their types declare and every required one; literals of the declared type
    and among the allowed values. Checked against the vendored snapshot of the modules' own
    sources (avm_modules.json): `bicep build` refuses these, except a property its type does
    not declare, which it only warns about (BCP037) and Azure then ignores: a silent bug."""
    snapshot = avm_snapshot() if snapshot is None else snapshot
    problems = []
    calls = 0
    for file, symbol, key, params in avm_calls(infra):
        where = f"{file.name}: module {symbol} ({key})"
        if key not in snapshot:
            problems.append(f"{where}: not in {AVM_SNAPSHOT.name}; run tools/avm_snapshot.py")
            continue
        calls += 1
        scope = _Scope(parse(file))
        declared = snapshot[key]["parameters"]
        problems += _shape_problems(where, params, {"properties": declared}, scope, "parameter")
    if not calls:
        problems.append("no Azure Verified Module call found: nothing was checked")
    return problems


def avm_output_problems(infra: Path, snapshot: dict[str, Any] | None = None) -> list[str]:
    """Each `<module>.outputs.<name>` of an Azure Verified Module names an output that version
    declares."""
    snapshot = avm_snapshot() if snapshot is None else snapshot
    problems = []
    for file in bicep_files(infra):
        pinned = {symbol: key for f, symbol, key, _ in avm_calls(infra) if f == file}
        for symbol, name in sorted(set(OUTPUT_READ.findall(file.read_text()))):
            key = pinned.get(symbol)
            if key in snapshot and name not in snapshot[key]["outputs"]:
                problems.append(f"{file.name}: module {symbol} ({key}) has no output {name}")
    return problems


def _is_expression(node: dict[str, Any]) -> bool:
    return set(node) in ({"function"}, {"operator"})


def _literal_type(value: bool | int | str) -> str:
    return {bool: "bool", int: "int"}.get(type(value), "string")


class _Scope:
    """The names a Bicep file declares: pycep gives `x` and `'x'` alike as the string x, so a
    string is a literal only if no parameter, variable, symbol or loop item has its name."""

    def __init__(self, template: dict[str, Any]) -> None:
        self.variables: dict[str, Any] = {
            name: variable["value"] for name, variable in template.get("variables", {}).items()
        }
        self.names = set(self.variables)
        for section in ("parameters", "resources", "modules", "outputs"):
            self.names |= set(template.get(section, {}))
        for node in _objects(template):
            if isinstance(node.get("loop_type"), dict):
                detail = node["loop_type"].get("detail") or {}
                self.names |= {
                    str(detail[key]) for key in ("item_name", "index_name") if key in detail
                }

    def value(self, node: Any) -> Any:
        """A variable's value for its name; anything else as it is."""
        if isinstance(node, str) and isinstance(self.variables.get(node), dict | list):
            return self.variables[node]
        return node

    def is_literal(self, node: Any) -> bool:
        if isinstance(node, bool | int):
            return True
        return isinstance(node, str) and "${" not in node and node not in self.names


def _shape_problems(
    where: str,
    value: Any,
    shape: dict[str, Any],
    scope: _Scope,
    kind: str = "property",
) -> list[str]:
    """What a value breaks of a parameter's shape: literals against `type` and `allowed`,
    object literals (also through a variable, a `union(...)` or a `[for ...]`) against
    `properties`, array literals against `items`. Anything else (a parameter, a function's
    result) is not known here and passes."""
    value = scope.value(value)
    if "type" in shape and scope.is_literal(value):
        if _literal_type(value) != shape["type"]:
            return [f"{where}: {json.dumps(value)} is not of type {shape['type']}"]
        if "allowed" in shape and value not in shape["allowed"]:
            return [f"{where}: {json.dumps(value)} is not one of {json.dumps(shape['allowed'])}"]
    if isinstance(value, dict) and "loop_type" in value:
        return _shape_problems(f"{where}[for]", value["config"], shape.get("items", {}), scope)
    if isinstance(value, list) and "items" in shape:
        problems = []
        for index, item in enumerate(value):
            problems += _shape_problems(f"{where}[{index}]", item, shape["items"], scope)
        return problems
    if not isinstance(value, dict) or "properties" not in shape:
        return []
    parts = [value]
    if _is_expression(value):
        function = value.get("function", {})
        if function.get("type") != "union":
            return []
        parts = list((function.get("parameters") or {}).values())
    declared = shape["properties"]
    given: set[str] = set()
    complete = True  # every part of a union is known: a missing required one is an error
    problems = []
    for part in parts:
        part = scope.value(part)
        if not isinstance(part, dict) or _is_expression(part):
            complete = False
            continue
        for raw_name, child in part.items():
            name = raw_name.strip("'")
            given.add(name)
            if name not in declared:
                problems.append(f"{where}: declares no {kind} {name}")
            else:
                problems += _shape_problems(f"{where}.{name}", child, declared[name], scope)
    if complete:
        required = {name for name, child in declared.items() if child.get("required")}
        problems += [f"{where}: needs {name}" for name in sorted(required - given)]
    return problems


def _argument_problems(where: str, target: Path, given: set[str]) -> list[str]:
    declared = parse(target).get("parameters", {})
    required = {name for name, parameter in declared.items() if parameter.get("default") is None}
    problems = [
        f"{where}: {target.name} declares no parameter {name}"
        for name in sorted(given - set(declared))
    ]
    problems += [f"{where}: {target.name} needs {name}" for name in sorted(required - given)]
    return problems


def local_auth_problems(infra: Path) -> list[str]:
    """No storage account allows shared keys; no namespace allows local (SAS) auth."""
    problems = []
    for file, symbol, params in avm_modules(infra, "avm/res/storage/storage-account"):
        if params.get("allowSharedKeyAccess") is not False:
            problems.append(f"{file.name}: storage account {symbol} allows shared keys")
    for path in NAMESPACE_MODULES:
        for file, symbol, params in avm_modules(infra, path):
            if params.get("disableLocalAuth") is not True:
                problems.append(f"{file.name}: namespace {symbol} allows local auth")
    for file in bicep_files(infra):
        for symbol, resource in parse(file).get("resources", {}).items():
            if resource["existing"]:
                continue
            properties = _body(resource).get("properties", {})
            if resource["type"] == "Microsoft.Storage/storageAccounts" and (
                properties.get("allowSharedKeyAccess") is not False
            ):
                problems.append(f"{file.name}: storage account {symbol} allows shared keys")
            if (
                resource["type"] in NAMESPACE_TYPES
                and properties.get("disableLocalAuth") is not True
            ):
                problems.append(f"{file.name}: namespace {symbol} allows local auth")
    counted = sum(
        1
        for path in ("avm/res/storage/storage-account", *NAMESPACE_MODULES)
        for _ in avm_modules(infra, path)
    )
    if not counted:
        problems.append("no storage account or namespace found: nothing was checked")
    return problems


@functools.cache
def app_setting_names() -> tuple[str, ...]:
    """Every app setting the Settings model reads (its aliases)."""
    from orchestrator.settings import settings_model

    names = []
    for field in settings_model().model_fields.values():
        names.extend(str(choice) for choice in field.validation_alias.choices)
    return tuple(names)


@functools.cache
def binding_connections() -> tuple[str, ...]:
    """The `connection` of every binding the Functions host indexes in function_app.py."""
    import function_app

    function_app.app.functions_bindings = {}  # indexed once per process otherwise
    found = set()
    for function in function_app.app.get_functions():
        for binding in json.loads(function.get_function_json())["bindings"]:
            if binding.get("connection"):
                found.add(binding["connection"])
    return tuple(sorted(found))


def identity_connections() -> dict[str, set[str]]:
    """Each identity-based connection the app reads in Azure -> the settings it reads for it
    (`<connection>__<property>`); the host's own storage is one of them."""
    connections: dict[str, set[str]] = {name: set() for name in binding_connections()}
    for name in app_setting_names():
        if "__" in name:
            connections.setdefault(name.split("__", 1)[0], set()).add(name)
    return connections


def _app_setting_variables(infra: Path) -> tuple[Path, list[Any]]:
    """The Function App module's file and the values of the variables its
    siteConfig.appSettings loops over: `[for s in items(<var>)]` or
    `[for s in items(union(<var>, <var>, ...))]`."""
    sites = list(avm_modules(infra, "avm/res/web/site"))
    if len(sites) != 1:
        raise LookupError(f"{len(sites)} Function App modules (avm/res/web/site) in {infra}")
    file, _, params = sites[0]
    listing = params.get("siteConfig", {}).get("appSettings")
    variables = parse(file).get("variables", {})
    try:
        source = listing["loop_type"]["detail"]["array_name"]["function"]
        assert source["type"] == "items"
        argument = source["parameters"]["arg_1"]
        if isinstance(argument, dict):
            assert argument["function"]["type"] == "union"
            names = list(argument["function"]["parameters"].values())
        else:
            names = [argument]
        values = [variables[name]["value"] for name in names]
    except (KeyError, TypeError, AssertionError):
        raise LookupError(
            f"{file.name}: siteConfig.appSettings is not "
            "[for s in items(<var>)] or [for s in items(union(<var>, ...))]"
        ) from None
    return file, values


def _settings_of(value: dict[str, Any]) -> dict[str, Any]:
    return {name.strip("'"): setting for name, setting in value.items()}


def function_app_settings(infra: Path) -> tuple[Path, dict[str, Any]]:
    """The app settings the Function App module always sets: the object variables its
    siteConfig.appSettings loops over (file, {name: value expression}); a variable that is
    `<condition> ? {...} : {...}` is left out (`conditional_app_settings`)."""
    file, values = _app_setting_variables(infra)
    settings: dict[str, Any] = {}
    for value in values:
        if not _is_expression(value):
            settings |= _settings_of(value)
    return file, settings


def conditional_app_settings(infra: Path) -> dict[str, tuple[str, Any]]:
    """The app settings set only under a condition: {name: (condition, value expression)},
    from each `<condition> ? {...} : {}` variable siteConfig.appSettings loops over."""
    _, values = _app_setting_variables(infra)
    found: dict[str, tuple[str, Any]] = {}
    for value in values:
        operator = value.get("operator", {}) if isinstance(value, dict) else {}
        if operator.get("type") != "conditional":
            continue
        operands = operator["operands"]
        if operands["false_value"] != {}:
            raise LookupError("a conditional app-settings variable sets something when off")
        condition = render(operands["condition"])
        for name, setting in _settings_of(operands["true_value"]).items():
            found[name] = (condition, setting)
    return found


def connection_setting_problems(infra: Path) -> list[str]:
    """Each identity-based setting the app reads is set, pinned to the user-assigned identity;
    no connection string (a secret) and nothing Flex Consumption refuses."""
    _, settings = function_app_settings(infra)
    problems = []
    for connection, names in sorted(identity_connections().items()):
        wanted = sorted(names) or [f"{connection}__fullyQualifiedNamespace"]
        problems += [f"{name} is not set" for name in wanted if name not in settings]
        if render(settings.get(f"{connection}__credential")) != "managedidentity":
            problems.append(f"{connection}__credential is not managedidentity")
        if f"{connection}__clientId" not in settings:
            problems.append(f"{connection}__clientId is not set (user-assigned identity)")
        if connection in settings:
            problems.append(f"{connection} is set: a connection string, a secret")
    if "AZURE_CLIENT_ID" not in settings:
        problems.append(
            "AZURE_CLIENT_ID is not set: DefaultAzureCredential would not pick the identity"
        )
    problems += [
        f"{name} is set: Flex Consumption refuses it" for name in FLEX_FORBIDDEN if name in settings
    ]
    return problems


def _objects(node: Any) -> Iterator[dict[str, Any]]:
    """Every object literal inside a pycep expression."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _objects(value)
    elif isinstance(node, list):
        for value in node:
            yield from _objects(value)


def _app_params_named(file: Path, value: Any, params: set[str]) -> set[str]:
    """The app module's parameters an app setting's value is built from (through its vars)."""
    variables = parse(file).get("variables", {})
    text = render(value)
    names = set(re.findall(r"\$\{(\w+)\}", text)) | ({text} if text.isidentifier() else set())
    found = set()
    for name in names:
        if name in params:
            found.add(name)
        elif name in variables:
            found |= _app_params_named(file, variables[name]["value"], params)
    return found


def role_problems(infra: Path) -> list[str]:
    """Each identity-based connection (and Azure ML, Key Vault) has its roles, for the app's
    identity and (data plane) the deploying user, on the very resource its settings name."""
    main = parse(infra / "main.bicep")
    app_file, settings = function_app_settings(infra)
    _, app_passed = local_module(main, app_file.name)
    _, rbac_passed = local_module(main, "rbac.bicep")
    rbac = parse(infra / "rbac.bicep")
    problems = []

    identity = render(app_passed.get("identityId", "")).split(".")[0]
    if render(rbac_passed.get("appPrincipalId", "")).split(".")[0] != identity:
        problems.append("rbac.bicep's appPrincipalId is not the Function App's identity")
    if render(rbac_passed.get("userPrincipalId")) != "principalId":
        problems.append("rbac.bicep's userPrincipalId is not the deploying principal")

    roles = {key.strip("'"): value for key, value in rbac["variables"]["roles"]["value"].items()}
    # Who the `[for principal in principals]` assignments reach: the ids of its entries.
    looped = {
        {"appPrincipalId": "app", "userPrincipalId": "user"}.get(render(entry["id"]), "?")
        for entry in _objects(rbac["variables"].get("principals", {}).get("value"))
        if "id" in entry
    }
    existing = {
        symbol: render(_body(resource)["name"])
        for symbol, resource in rbac["resources"].items()
        if resource["existing"]
    }
    granted: dict[tuple[str, str], set[str]] = {}  # (rbac param of the scope, role id) -> who
    for resource in rbac["resources"].values():
        if resource["type"] != "Microsoft.Authorization/roleAssignments":
            continue
        config = resource["config"]
        body = _body(resource)
        scope = existing.get(render(body.get("scope")), "")
        role_key = render(body["properties"]["roleDefinitionId"]).rsplit("roles.", 1)[-1]
        role = render(roles.get(role_key.rstrip(")").split(",")[0], ""))
        if "loop_type" in config and config["loop_type"]["detail"]["array_name"] == "principals":
            who = looped
        else:
            who = (
                {"app"} if render(body["properties"]["principalId"]) == "appPrincipalId" else set()
            )
        granted.setdefault((scope, role), set()).update(who)

    app_params = set(parse(app_file).get("parameters", {}))
    needs: list[tuple[str, list[str], tuple[str, ...], bool]] = [
        (
            connection,
            sorted(names) or [f"{connection}__fullyQualifiedNamespace"],
            CONNECTION_ROLES.get(connection, ()),
            True,
        )
        for connection, names in sorted(identity_connections().items())
    ]
    needs += [(setting, [setting], (role,), user) for setting, role, user in IDENTITY_SETTINGS]
    for what, names, wanted, user_too in needs:
        if not wanted:
            problems.append(
                f"{what}: no roles known for this connection (tests/infra/templates.py)"
            )
            continue
        targets = set()
        for name in names:
            if name in settings:
                targets |= _app_params_named(app_file, settings[name], app_params)
        targets.discard("identityClientId")
        if len(targets) != 1:
            problems.append(f"{what}: its settings name {sorted(targets) or 'no resource'}")
            continue
        passed = render(app_passed.get(targets.pop()))
        scope_params = [param for param, value in rbac_passed.items() if render(value) == passed]
        for role in wanted:
            who = set().union(
                *(granted.get((param, ROLE_IDS[role]), set()) for param in scope_params)
            )
            if "app" not in who:
                problems.append(f"{what}: the app's identity lacks {role} on {passed}")
            if user_too and "user" not in who:
                problems.append(f"{what}: the deploying user lacks {role} on {passed}")
    return problems


def shellcheck_problems(hooks: Path) -> list[str]:
    scripts = sorted(hooks.glob("*.sh"))
    if not scripts:
        return [f"no hook scripts under {hooks}"]
    shellcheck = Path(sys.executable).with_name("shellcheck")
    result = subprocess.run(
        [str(shellcheck), "--shell=sh", "--severity=style", *map(str, scripts)],
        capture_output=True,
        text=True,
        check=False,
    )
    return [result.stdout + result.stderr] if result.returncode else []


def endpoint_problems(infra: Path, policy_dir: Path) -> list[str]:
    """One managed online endpoint per policy endpoint: the `models` parameter names each
    policy's model and endpoint, and each of its later rings' (`rings`), and nothing else. A
    policy on a Kubernetes target (`endpoint_target`) has none: its endpoints are made on the
    attached compute (docs/deploy.md)."""
    parameters = json.loads((infra / "main.parameters.json").read_text())["parameters"]
    declared = {(entry["model"], entry["endpoint"]) for entry in parameters["models"]["value"]}
    policies = set()
    kubernetes = set()
    for file in sorted(policy_dir.glob("*.yml")):
        document = yaml.safe_load(file.read_text())
        target = document.get("endpoint_target") or {}
        on_kubernetes = isinstance(target, dict) and target.get("kind") == "kubernetes"
        rings = [ring["endpoint"] for ring in document.get("rings") or []]
        for endpoint in dict.fromkeys([document["endpoint"], *rings]):
            (kubernetes if on_kubernetes else policies).add((document["model"], endpoint))
    problems = [
        f"main.parameters.json: {model}/{endpoint} is on Kubernetes (endpoint_target): "
        "no managed endpoint of that name"
        for model, endpoint in sorted(declared & kubernetes)
    ]
    declared -= kubernetes
    problems += [
        f"policy {model}: no endpoint {endpoint} in main.parameters.json"
        for model, endpoint in sorted(policies - declared)
    ]
    problems += [
        f"main.parameters.json: {model}/{endpoint} has no policy file"
        for model, endpoint in sorted(declared - policies)
    ]
    return problems


def _literals(tree: ast.AST) -> Iterator[str]:
    """String literals; an f-string as its text with `{}` for each value."""
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            yield "".join(
                part.value if isinstance(part, ast.Constant) else "{}" for part in node.values
            )
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.value


@functools.cache
def app_literals(repo: Path = REPO) -> tuple[str, ...]:
    found = []
    for package in APP_PACKAGES:
        for file in sorted((repo / package).rglob("*.py")):
            found.extend(_literals(ast.parse(file.read_text())))
    return tuple(found)


# Where the values of a counter's attribute come from when the app passes a computed value:
# (metric, attribute) -> (module, the constant holding every value it can take).
ATTRIBUTE_VALUES = {
    ("retrain.promotions", "outcome"): ("orchestrator.decision_telemetry", "ENDED"),
    ("retrain.training.runs", "result"): ("orchestrator.decision_telemetry", "RUN_ENDED"),
}


def _count_calls(repo: Path) -> Iterator[ast.Call]:
    """Every `telemetry.count("<name>", ...)` in the app's code."""
    for package in APP_PACKAGES:
        for file in sorted((repo / package).rglob("*.py")):
            for node in ast.walk(ast.parse(file.read_text())):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "count"
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "telemetry"
                    and node.args
                    and isinstance(node.args[0], ast.Constant)
                ):
                    yield node


@functools.cache
def app_counters(repo: Path = REPO) -> frozenset[str]:
    """The metric names the app counts: `retrain.<name>` of each `telemetry.count("<name>")`."""
    return frozenset(f"retrain.{call.args[0].value}" for call in _count_calls(repo))


@functools.cache
def app_counter_attributes(repo: Path = REPO) -> dict[str, dict[str, frozenset[str] | None]]:
    """Each counter's attributes, as the app passes them (`telemetry.count(name, k=v)`):
    {metric: {attribute: the values it can take, or None when they are not known}}. A value
    is known when every call passes a literal, or from ATTRIBUTE_VALUES."""
    import importlib

    found: dict[str, dict[str, set[str] | None]] = {}
    for call in _count_calls(repo):
        attributes = found.setdefault(f"retrain.{call.args[0].value}", {})
        for keyword in call.keywords:
            if keyword.arg is None:
                continue
            values = attributes.setdefault(keyword.arg, set())
            if isinstance(keyword.value, ast.Constant) and values is not None:
                values.add(str(keyword.value.value))
            else:
                attributes[keyword.arg] = None
    result: dict[str, dict[str, frozenset[str] | None]] = {}
    for metric, attributes in found.items():
        result[metric] = {}
        for attribute, values in attributes.items():
            source = ATTRIBUTE_VALUES.get((metric, attribute))
            if values is None and source is not None:
                module, constant = source
                values = set(getattr(importlib.import_module(module), constant))
            result[metric][attribute] = frozenset(values) if values is not None else None
    return result


def _metric_clause_problems(name: str, clause: str) -> list[str]:
    """One `AppMetrics | where Name == "<metric>" and tostring(Properties["k"]) == "v" ...`
    clause: the metric is a counter the app counts, each attribute one it passes to that
    counter, each value one that attribute can take."""
    metrics = re.findall(r'\bName == "([^"]+)"', clause)
    if len(metrics) != 1:
        return [f"{name}: an AppMetrics clause names {len(metrics)} metrics, not one"]
    [metric] = metrics
    if metric not in app_counters():
        return [f"{name}: the app counts no {metric}"]
    problems = []
    attributes = app_counter_attributes()[metric]
    for attribute, value in re.findall(r'Properties\["(\w+)"\]\)?\s*==\s*"([^"]*)"', clause):
        if attribute not in attributes:
            problems.append(f"{name}: the app gives {metric} no attribute {attribute}")
            continue
        values = attributes[attribute]
        if values is None:
            problems.append(
                f"{name}: the values of {metric}'s {attribute} are not known "
                "(tests/infra/templates.py ATTRIBUTE_VALUES)"
            )
        elif value not in values:
            problems.append(
                f"{name}: {metric}'s {attribute} is never {value!r} (one of {sorted(values)})"
            )
    return problems


def log_alert_problems(infra: Path) -> list[str]:
    """Each alert on the app's own signals looks for something the app really emits: the text
    fragments it matches in AppTraces appear together in one string of the app's code, the
    metrics it reads in AppMetrics are counters the app counts, with the attributes and
    values the app gives them."""
    alerts = parse(infra / "alerts.bicep")["variables"]["logAlerts"]["value"]
    problems = []
    for alert in alerts:
        query, name = alert["query"], alert["name"]
        traced = "AppTraces" in query
        fragments = re.findall(r'(?:has|startswith|contains)\s+"([^"]+)"', query) if traced else []
        metrics = re.findall(r'\bName == "([^"]+)"', query)
        if traced and not fragments:
            problems.append(f"{name}: the query matches no text")
        if fragments and not any(
            all(part in text for part in fragments) for text in app_literals()
        ):
            problems.append(f"{name}: the app writes no trace with {fragments}")
        if "AppMetrics" in query and not metrics:
            problems.append(f"{name}: the query names no metric")
        # Each table's clause on its own: `... AppMetrics | where ...`, up to the next table.
        for clause in re.split(r"\b(?=AppMetrics\b|AppTraces\b|StorageBlobLogs\b)", query):
            if clause.startswith("AppMetrics"):
                problems += _metric_clause_problems(name, clause)
        if "StorageBlobLogs" in query:
            from orchestrator.bootstrap import DEAD_LETTER_CONTAINER

            if f"/{DEAD_LETTER_CONTAINER}/" not in query:
                problems.append(f"{name}: not the app's container {DEAD_LETTER_CONTAINER}")
    return problems


# --- App Service authentication and the worker's telemetry ------------------------------------


@functools.cache
def http_routes() -> tuple[tuple[str, str], ...]:
    """(route, auth level) of every HTTP function the Functions host indexes in function_app.py:
    what App Service authentication stands in front of."""
    import function_app

    function_app.app.functions_bindings = {}  # indexed once per process otherwise
    found = []
    for function in function_app.app.get_functions():
        for binding in json.loads(function.get_function_json())["bindings"]:
            if binding.get("type") == "httpTrigger":
                found.append((str(binding.get("route")), str(binding.get("authLevel")).upper()))
    return tuple(sorted(found))


def _refers(node: Any, name: str, variables: dict[str, Any], depth: int = 0) -> bool:
    """Whether an expression is built from `name` (a parameter), also through variables."""
    text = json.dumps(node) if not isinstance(node, str) else node
    if re.search(rf"\b{re.escape(name)}\b", text):
        return True
    if depth > 5:
        return False
    return any(
        _refers(value, name, variables, depth + 1)
        for variable, value in variables.items()
        if re.search(rf"\b{re.escape(variable)}\b", text)
    )


def _module_outputs(value: Any) -> set[tuple[str, str]]:
    """The (module, output) pairs an expression reads (`<module>.outputs.<name>`, also inside
    a condition or a function's arguments)."""
    accessors = [
        render(node)
        for node in _objects(value)
        if node.get("operator", {}).get("type") == "property_accessor"
    ]
    return set(OUTPUT_READ.findall(" ".join([json.dumps(value), *accessors])))


def app_service_auth_problems(infra: Path) -> list[str]:
    """App Service authentication (authsettingsV2) as the app needs it: configured exactly when
    the API's app registration is given, on the Function App itself; letting through what the
    app's routes take without a sign-in (a function key; /api/health nothing); the Entra ID
    provider with the registration's client id and the tenant's issuer (the tenant the app
    verifies tokens of); the audiences the app accepts (ENTRA_API_AUDIENCE) and the client id;
    no client secret but a managed identity of its own (a federated credential); a login asking
    for the API's scope and the token store on, so /.auth/me holds the access token the
    dashboard sends as the person's bearer token."""
    app_file, settings = function_app_settings(infra)
    template = parse(app_file)
    variables = {name: v["value"] for name, v in template.get("variables", {}).items()}
    resources = template.get("resources", {})
    found = [
        (symbol, resource)
        for symbol, resource in resources.items()
        if resource["type"] == "Microsoft.Web/sites/config"
        and str(_body(resource).get("name")).strip("'") == "authsettingsV2"
    ]
    if len(found) != 1:
        return [f"{app_file.name}: {len(found)} authsettingsV2 resources, not one"]
    symbol, resource = found[0]
    body = _body(resource)
    properties = body.get("properties", {})
    problems = []

    def wrong(what: str) -> None:
        problems.append(f"{app_file.name}: {symbol}: {what}")

    # On exactly when the API's app registration is given.
    condition = resource["config"].get("condition")
    if condition is None or not _refers(condition, "entraClientId", variables):
        wrong("not conditioned on entraClientId (a setting made by hand would be overwritten)")

    # On the Function App itself, once it exists.
    [(_, site_symbol, site_params)] = list(avm_modules(infra, "avm/res/web/site"))
    parent = resources.get(str(body.get("parent")))
    if (
        parent is None
        or parent["type"] != "Microsoft.Web/sites"
        or not parent["existing"]
        or render(_body(parent).get("name")) != render(site_params.get("name"))
    ):
        wrong("its parent is not the Function App")
    if site_symbol not in (body.get("dependsOn") or []):
        wrong(f"does not depend on {site_symbol} (the site may not exist yet)")

    if (properties.get("platform") or {}).get("enabled") is not True:
        wrong("platform.enabled is not true")
    # What the app's routes take without a person: a function key, or nothing at all.
    routes = http_routes()
    validation = properties.get("globalValidation") or {}
    if validation.get("requireAuthentication") is not False or (
        str(validation.get("unauthenticatedClientAction")).strip("'") != "AllowAnonymous"
    ):
        levels = sorted({level for _, level in routes})
        wrong(
            "refuses requests without a sign-in, but the app's routes take "
            f"{' or '.join(levels)} (e.g. {routes[0][0]}): requireAuthentication must be false, "
            "unauthenticatedClientAction AllowAnonymous"
        )

    provider = (properties.get("identityProviders") or {}).get("azureActiveDirectory") or {}
    registration = provider.get("registration") or {}
    if provider.get("enabled") is not True:
        wrong("the Entra ID provider is not enabled")
    if render(registration.get("clientId")) != "entraClientId":
        wrong("registration.clientId is not the entraClientId parameter")
    tenant = render(settings.get("ENTRA_TENANT_ID", ""))
    issuer = render(registration.get("openIdIssuer", ""))
    if not (tenant and "${" + tenant + "}" in issuer and issuer.endswith("/v2.0")):
        wrong(f"openIdIssuer {issuer!r} is not the v2.0 issuer of ENTRA_TENANT_ID ({tenant})")

    # No secret: a managed identity of its own, through the setting the provider names.
    secret_setting = str(registration.get("clientSecretSettingName", "")).strip("'")
    conditional = conditional_app_settings(infra)
    if secret_setting != "OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID":
        wrong(
            f"clientSecretSettingName {secret_setting!r}: a client secret; name "
            "OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID (a managed identity's federated credential)"
        )
    elif secret_setting in settings or secret_setting not in conditional:
        wrong(f"{secret_setting} is not set with App Service authentication only")
    else:
        auth_client_id = render(conditional[secret_setting][1])
        identities = site_params.get("managedIdentities", {}).get("userAssignedResourceIds")
        ids_text = json.dumps(identities)
        extra = [
            name
            for name in template.get("parameters", {})
            if name not in ("identityId",) and re.search(rf'"{name}"', ids_text)
        ]
        main = parse(infra / "main.bicep")
        _, passed = local_module(main, app_file.name)
        client_from = _module_outputs(passed.get(auth_client_id))
        ids_from = {pair for name in extra for pair in _module_outputs(passed.get(name))}
        app_identity = {module for module, _ in _module_outputs(passed.get("identityId"))}
        modules = {module for module, _ in client_from}
        if len(extra) != 1 or not client_from or not ids_from:
            wrong(f"{secret_setting} names no identity of the Function App of its own")
        elif (
            modules != {module for module, _ in ids_from}
            or modules & app_identity
            or {output for _, output in client_from} != {"clientId"}
            or {output for _, output in ids_from} != {"resourceId"}
        ):
            wrong(
                f"{secret_setting} is not the client id of an identity of its own assigned to the "
                "Function App (the app's identity also runs the training cluster)"
            )

    audiences = (provider.get("validation") or {}).get("allowedAudiences")
    accepted = settings.get("ENTRA_API_AUDIENCE")
    if accepted is None or not _refers(audiences, render(accepted), variables):
        wrong("allowedAudiences are not the audiences the app accepts (ENTRA_API_AUDIENCE)")
    elif not _refers(audiences, "entraClientId", variables):
        wrong("allowedAudiences leave out the client id (v2 tokens name it)")

    login = provider.get("login") or {}
    scopes = [
        item
        for item in login.get("loginParameters") or []
        if isinstance(item, str) and item.startswith("scope=")
    ]
    if len(scopes) != 1 or "openid" not in scopes[0].removeprefix("scope=").split():
        wrong("loginParameters ask for no `scope=openid ...`")
    elif not _refers(scopes[0], render(accepted), variables):
        wrong("the login does not ask for the API's scope: /.auth/me would hold no token for it")
    if ((properties.get("login") or {}).get("tokenStore") or {}).get("enabled") is not True:
        wrong("the token store is off: /.auth/me holds no token for the dashboard")

    # Wired from the azd environment like the other parameters.
    main = parse(infra / "main.bicep")
    _, passed = local_module(main, app_file.name)
    if not _refers(passed.get("entraClientId", ""), "entraClientId", {}):
        problems.append("main.bicep does not pass its entraClientId parameter to the app")
    parameters = json.loads((infra / "main.parameters.json").read_text())["parameters"]
    if (parameters.get("entraClientId") or {}).get("value") != "${ENTRA_CLIENT_ID}":
        problems.append("main.parameters.json does not set entraClientId from ENTRA_CLIENT_ID")
    return problems


def worker_telemetry_problems(infra: Path, host_json: Path = REPO / "host.json") -> list[str]:
    """With host.json `telemetryMode: OpenTelemetry`, the Python worker is told to take part
    (PYTHON_ENABLE_OPENTELEMETRY=true: no duplicate host log entries, invocations in the host's
    trace context), but not to install Azure Monitor itself
    (PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: without the app's identity, ahead of the
    app's own exporter, adapters/telemetry_exporters.py, which must then be there)."""
    _, settings = function_app_settings(infra)
    mode = json.loads(host_json.read_text()).get("telemetryMode")
    problems = []
    if "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY" in settings:
        problems.append(
            "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY is set: the worker would install Azure "
            "Monitor without the app's identity, ahead of the app's exporter"
        )
    if mode == "OpenTelemetry":
        if str(settings.get("PYTHON_ENABLE_OPENTELEMETRY")).strip("'").lower() != "true":
            problems.append(
                "host.json telemetryMode is OpenTelemetry but PYTHON_ENABLE_OPENTELEMETRY is not "
                "'true': each app log would reach Application Insights twice"
            )
        source = (REPO / "adapters" / "telemetry_exporters.py").read_text()
        calls = [
            node
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "configure_azure_monitor"
        ]
        if not any(keyword.arg == "credential" for call in calls for keyword in call.keywords):
            problems.append("the app installs no Azure Monitor exporter with its identity")
    elif "PYTHON_ENABLE_OPENTELEMETRY" in settings:
        problems.append(
            f"PYTHON_ENABLE_OPENTELEMETRY is set, but host.json telemetryMode is {mode}"
        )
    return problems
