"""The azd templates (infra/) checked offline: every check passes on infra/ and fails on a copy
broken in one place, the way a template that would not deploy, or would leave a connection
without its role, is broken."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from tests.infra import templates
from tests.infra.templates import INFRA, REPO


@pytest.fixture
def broken(tmp_path: Path):
    """A copy of infra/ with one piece of text replaced (which must be there)."""

    copies = iter(range(100))

    def copy(file: str, old: str, new: str) -> Path:
        infra = tmp_path / f"infra-{next(copies)}"
        shutil.copytree(INFRA, infra)
        text = (infra / file).read_text()
        assert old in text, f"{file} no longer holds {old!r}: update the test"
        (infra / file).write_text(text.replace(old, new, 1))
        return infra

    return copy


def test_every_bicep_file_parses() -> None:
    assert len(templates.bicep_files(INFRA)) >= 8
    assert templates.parse_problems(INFRA) == []


def test_a_file_that_does_not_parse_is_caught(broken) -> None:
    infra = broken("messaging.bicep", "output serviceBusNamespaceName string =", "output =")
    [problem] = templates.parse_problems(infra)
    assert "messaging.bicep does not parse" in problem


def test_every_module_is_a_pinned_verified_module_or_a_local_file() -> None:
    assert templates.module_reference_problems(INFRA) == []


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("namespace:0.16.1'", "namespace:latest'"),
        ("'br/public:avm/res/service-bus/namespace:0.16.1'", "'br:contoso.azurecr.io/sb:v1'"),
        ("module secrets 'secrets.bicep'", "module secrets 'vault.bicep'"),
    ],
    ids=["unpinned", "not-avm", "missing-local-file"],
)
def test_an_unpinned_or_foreign_module_is_caught(broken, old: str, new: str) -> None:
    file = "main.bicep" if "secrets" in old else "messaging.bicep"
    assert templates.module_reference_problems(broken(file, old, new)) != []


def test_every_module_gets_the_parameters_it_declares() -> None:
    assert templates.module_param_problems(INFRA) == []


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        (
            "main.bicep",
            "    maxDeliveries: maxDeliveries\n  }\n}\n\nmodule secrets",
            "  }\n}\n\nmodule secrets",
            "main.bicep: module messaging: messaging.bicep needs maxDeliveries",
        ),
        (
            "main.bicep",
            "    alertEmail: alertEmail\n",
            "    alertEmail: alertEmail\n    alertPhone: alertEmail\n",
            "main.bicep: module alerts: alerts.bicep declares no parameter alertPhone",
        ),
        (
            "main.parameters.json",
            '    "entraApiAudience": {\n      "value": "${ENTRA_API_AUDIENCE}"\n    },\n',
            "",
            "main.parameters.json: main.bicep needs entraApiAudience",
        ),
    ],
    ids=["missing", "unknown", "parameters-file"],
)
def test_a_module_given_the_wrong_parameters_is_caught(broken, file, old, new, expected) -> None:
    assert expected in templates.module_param_problems(broken(file, old, new))


def test_every_output_a_module_reads_is_declared(broken) -> None:
    assert templates.output_reference_problems(INFRA) == []
    infra = broken("storage.bicep", "output dataAccountName string", "output dataAccount string")
    assert templates.output_reference_problems(infra) == [
        "main.bicep: storage.bicep has no output dataAccountName"
    ]


def test_every_verified_module_call_fits_its_pinned_version() -> None:
    assert templates.avm_param_problems(INFRA) == []
    assert templates.avm_output_problems(INFRA) == []


SERVICE_BUS = "messaging.bicep: module serviceBus (avm/res/service-bus/namespace:0.16.1)"
EVENT_HUBS = "messaging.bicep: module eventHubs (avm/res/event-hub/namespace:0.15.0)"
ML_WORKSPACE = "ml.bicep: module workspace (avm/res/machine-learning-services/workspace:0.13.2)"


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        (
            "messaging.bicep",
            "    skuObject: {",
            "    skuObjekt: {",
            f"{SERVICE_BUS}: declares no parameter skuObjekt",
        ),
        ("ml.bicep", "    sku: 'Basic'\n", "", f"{ML_WORKSPACE}: needs sku"),
        (
            "messaging.bicep",
            "  maxDeliveryCount: maxDeliveries\n",
            "  maxDeliveryCnt: maxDeliveries\n",
            f"{SERVICE_BUS}.queues[0]: declares no property maxDeliveryCnt",
        ),
        (
            "messaging.bicep",
            "{ name: 'notifications' }",
            "{ consumerGroup: 'notifications' }",
            f"{EVENT_HUBS}.eventhubs[1].consumergroups[0]: needs name",
        ),
        (
            "ml.bicep",
            "systemDatastoresAuthMode: 'Identity'",
            "systemDatastoresAuthMode: 'ManagedIdentity'",
            f'{ML_WORKSPACE}.systemDatastoresAuthMode: "ManagedIdentity" is not one of',
        ),
        (
            "messaging.bicep",
            "    skuCapacity: 1\n",
            "    skuCapacity: '1'\n",
            f'{EVENT_HUBS}.skuCapacity: "1" is not of type int',
        ),
        (
            "ml.bicep",
            "storage/storage-account:0.31.0",
            "storage/storage-account:0.30.0",
            "(avm/res/storage/storage-account:0.30.0): not in avm_modules.json",
        ),
    ],
    ids=[
        "unknown-param",
        "missing-required",
        "unknown-property",
        "missing-required-property",
        "not-allowed",
        "wrong-type",
        "version-not-in-snapshot",
    ],
)
def test_a_verified_module_given_the_wrong_parameters_is_caught(
    broken, file, old, new, expected
) -> None:
    problems = templates.avm_param_problems(broken(file, old, new))
    assert [problem for problem in problems if expected in problem], problems


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("systemTopic.outputs.resourceId", "systemTopic.outputs.topicId", "topicId"),
        (
            "systemTopic.outputs.?systemAssignedMIPrincipalId",
            "systemTopic.outputs.?principalId",
            "principalId",
        ),
    ],
    ids=["unknown-output", "unknown-optional-output"],
)
def test_a_verified_module_output_it_lacks_is_caught(broken, old, new, expected) -> None:
    assert templates.avm_output_problems(broken("storage.bicep", old, new)) == [
        f"storage.bicep: module systemTopic (avm/res/event-grid/system-topic:0.6.4) "
        f"has no output {expected}"
    ]


def test_no_shared_keys_and_no_local_auth() -> None:
    assert templates.local_auth_problems(INFRA) == []


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        (
            "storage.bicep",
            "allowSharedKeyAccess: false",
            "allowSharedKeyAccess: true",
            "stateAccount allows shared keys",
        ),
        (
            "ml.bicep",
            "    allowSharedKeyAccess: false\n",
            "",
            "workspaceStorage allows shared keys",
        ),
        (
            "messaging.bicep",
            "    zoneRedundant: false\n    disableLocalAuth: true\n",
            "    zoneRedundant: false\n",
            "serviceBus allows local auth",
        ),
    ],
    ids=["storage-shared-key", "shared-key-by-default", "namespace-local-auth"],
)
def test_shared_keys_or_local_auth_are_caught(broken, file, old, new, expected) -> None:
    problems = templates.local_auth_problems(broken(file, old, new))
    assert [problem for problem in problems if expected in problem]


def test_the_connections_come_from_the_app_itself() -> None:
    connections = templates.identity_connections()
    # The bindings' connections (function_app.py) and the Settings model's `<name>__...`.
    assert set(templates.binding_connections()) == {"EventHubConnection", "ServiceBusConnection"}
    assert {"AzureWebJobsStorage", "DataStorage"} <= set(connections)
    assert "DataStorage__blobServiceUri" in connections["DataStorage"]


def test_the_function_app_sets_every_identity_based_connection() -> None:
    assert templates.connection_setting_problems(INFRA) == []


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "  ServiceBusConnection__fullyQualifiedNamespace: serviceBusHost\n",
            "",
            "ServiceBusConnection__fullyQualifiedNamespace is not set",
        ),
        (
            "  DataStorage__blobServiceUri: dataBlobUri\n",
            "",
            "DataStorage__blobServiceUri is not set",
        ),
        (
            "  EventHubConnection__clientId: identityClientId\n",
            "",
            "EventHubConnection__clientId is not set",
        ),
        ("  AZURE_CLIENT_ID: identityClientId\n", "", "AZURE_CLIENT_ID is not set"),
        (
            "  RETRAIN_LOG_LEVEL: 'INFO'\n",
            "  RETRAIN_LOG_LEVEL: 'INFO'\n  ServiceBusConnection: 'Endpoint=sb://x/;SharedAccess"
            "Key=y'\n",  # split: the repository's secret scan must not flag a test's fake
            "a connection string",
        ),
        (
            "  RETRAIN_LOG_LEVEL: 'INFO'\n",
            "  RETRAIN_LOG_LEVEL: 'INFO'\n  FUNCTIONS_WORKER_RUNTIME: 'python'\n",
            "Flex Consumption refuses it",
        ),
    ],
    ids=["no-namespace", "no-data-uri", "no-client-id", "no-azure-client-id", "secret", "flex"],
)
def test_a_missing_or_secret_connection_setting_is_caught(broken, old, new, expected) -> None:
    problems = templates.connection_setting_problems(broken("app.bicep", old, new))
    assert [problem for problem in problems if expected in problem], problems


def test_every_connection_has_its_roles_for_the_app_and_the_user() -> None:
    assert templates.role_problems(INFRA) == []


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "resource serviceBusOwner 'Microsoft.Authorization/roleAssignments@2022-04-01'",
            "resource serviceBusOwner 'Microsoft.Authorization/denyAssignments@2022-04-01'",
            "the app's identity lacks Azure Service Bus Data Owner",
        ),
        (
            "roles.storageQueueDataContributor)\n    scope: dataAccount",
            "roles.storageQueueDataContributor)\n    scope: stateAccount",
            "DataStorage: the app's identity lacks Storage Queue Data Contributor",
        ),
        (
            "    { id: userPrincipalId, type: userPrincipalType }\n",
            "",
            "the deploying user lacks Azure Event Hubs Data Owner",
        ),
        (
            "roles.keyVaultSecretsUser)\n  scope: keyVault",
            "roles.keyVaultSecretsUser)\n  scope: appInsights",
            "MESSAGE_SIGNING_KEY: the app's identity lacks Key Vault Secrets User",
        ),
    ],
    ids=["role-removed", "role-on-another-resource", "user-left-out", "vault-role-elsewhere"],
)
def test_a_connection_without_its_role_is_caught(broken, old, new, expected) -> None:
    problems = templates.role_problems(broken("rbac.bicep", old, new))
    assert [problem for problem in problems if expected in problem], problems


def test_a_connection_pointed_at_an_unassigned_resource_is_caught(broken) -> None:
    # The app's Service Bus setting names the Event Hubs namespace: its role is not there.
    infra = broken(
        "app.bicep",
        "var serviceBusHost = '${serviceBusNamespaceName}.servicebus.windows.net'",
        "var serviceBusHost = '${eventHubNamespaceName}.servicebus.windows.net'",
    )
    assert any("lacks Azure Service Bus Data Owner" in p for p in templates.role_problems(infra))


def test_the_hooks_pass_shellcheck(tmp_path: Path) -> None:
    assert templates.shellcheck_problems(INFRA / "hooks") == []
    hooks = tmp_path / "hooks"
    shutil.copytree(INFRA / "hooks", hooks)
    script = hooks / "postdeploy.sh"
    script.write_text(script.read_text() + "rm -f $body_file\n")
    [report] = templates.shellcheck_problems(hooks)
    assert "SC2086" in report  # double quote to prevent globbing and word splitting


def test_one_endpoint_per_policy_file(tmp_path: Path, broken) -> None:
    assert templates.endpoint_problems(INFRA, REPO / "policies") == []
    policies = tmp_path / "policies"
    shutil.copytree(REPO / "policies", policies)
    (policies / "churn.yml").write_text("model: churn\nendpoint: churn-ep\n")
    assert templates.endpoint_problems(INFRA, policies) == [
        "policy churn: no endpoint churn-ep in main.parameters.json"
    ]
    infra = broken("main.parameters.json", '"endpoint": "breast-cancer-ep"', '"endpoint": "bc-ep"')
    assert len(templates.endpoint_problems(infra, REPO / "policies")) == 2
    # a model on a Kubernetes target has no managed endpoint in the templates
    (policies / "churn.yml").write_text(
        "model: churn\nendpoint: churn-ep\nendpoint_target: {kind: kubernetes, compute: aks}\n"
    )
    assert templates.endpoint_problems(INFRA, policies) == []
    on_aks = (policies / "breast-cancer.yml").read_text() + "endpoint_target: {kind: kubernetes}\n"
    (policies / "breast-cancer.yml").write_text(on_aks)
    assert templates.endpoint_problems(INFRA, policies) == [
        "main.parameters.json: breast-cancer/breast-cancer-ep is on Kubernetes (endpoint_target): "
        "no managed endpoint of that name"
    ]
    # a later ring is an endpoint of its own: azd up must create it too
    (policies / "breast-cancer.yml").write_text(
        (REPO / "policies" / "breast-cancer.yml").read_text()
        + "rings: [{endpoint: breast-cancer-ep}, {endpoint: bc-north}]\n"
    )
    (policies / "churn.yml").unlink()
    assert templates.endpoint_problems(INFRA, policies) == [
        "policy breast-cancer: no endpoint bc-north in main.parameters.json"
    ]


def test_the_log_alerts_match_what_the_app_writes(broken) -> None:
    assert templates.log_alert_problems(INFRA) == []
    infra = broken("alerts.bicep", 'Message has "gave up after"', 'Message has "given up after"')
    assert "effect-given-up: the app writes no trace" in templates.log_alert_problems(infra)[0]
    infra = broken(
        "alerts.bicep",
        'Name == "retrain.rollback.traffic_not_restored"',
        'Name == "retrain.rollback.not_restored"',
    )
    assert (
        "rollback-traffic-not-restored: the app counts no retrain.rollback.not_restored"
        in templates.log_alert_problems(infra)
    )
    infra = broken("alerts.bicep", 'Uri has "/dead-letters/"', 'Uri has "/deadletters/"')
    assert "app-dead-letters: not the app's container dead-letters" in templates.log_alert_problems(
        infra
    )


def test_azd_finds_the_function_app_by_its_service_name() -> None:
    services = yaml.safe_load((REPO / "azure.yaml").read_text())["services"]
    assert {name: service["host"] for name, service in services.items()} == {
        "orchestrator": "function"
    }
    app = (INFRA / "app.bicep").read_text()
    assert "{ 'azd-service-name': 'orchestrator' }" in app


def test_the_signing_key_the_hook_creates_is_the_one_the_app_reads() -> None:
    _, settings = templates.function_app_settings(INFRA)
    hook = (INFRA / "hooks" / "postprovision.sh").read_text()
    [secret] = re.findall(r'^secret_name="([^"]+)"$', hook, flags=re.MULTILINE)
    assert settings["MESSAGE_SIGNING_KEY"].endswith(f";SecretName={secret})")
    assert settings["MESSAGE_SIGNING_KEY"].startswith("@Microsoft.KeyVault(VaultName=")


def latency_source_problems(infra: Path) -> list[str]:
    """The shipped policy's latency gate needs, in Azure: CANARY_LATENCY_WORKSPACE_ID set on
    the app, each endpoint's traffic log sent to Log Analytics, and the app allowed to read it
    (else the policy is refused at start, naming the gate)."""
    problems = []
    _, settings = templates.function_app_settings(infra)
    if "CANARY_LATENCY_WORKSPACE_ID" not in settings:
        problems.append("the app does not set CANARY_LATENCY_WORKSPACE_ID")
    ml = (infra / "ml.bicep").read_text()
    if "'AmlOnlineEndpointTrafficLog'" not in ml or "scope: endpoints[i]" not in ml:
        problems.append("no endpoint sends AmlOnlineEndpointTrafficLog to Log Analytics")
    rbac = (infra / "rbac.bicep").read_text()
    if "roles.logAnalyticsReader" not in rbac or "scope: logAnalytics" not in rbac:
        problems.append("the app cannot read the traffic log (Log Analytics Reader)")
    return problems


def test_the_latency_gate_has_its_source_in_azure(broken) -> None:
    assert latency_source_problems(INFRA) == []
    infra = broken("app.bicep", "  CANARY_LATENCY_WORKSPACE_ID: canaryLatencyWorkspaceId\n", "")
    assert latency_source_problems(infra) == ["the app does not set CANARY_LATENCY_WORKSPACE_ID"]
    infra = broken("ml.bicep", "'AmlOnlineEndpointTrafficLog'", "'AmlOnlineEndpointEventLog'")
    assert latency_source_problems(infra) == [
        "no endpoint sends AmlOnlineEndpointTrafficLog to Log Analytics"
    ]
    infra = broken("rbac.bicep", "scope: logAnalytics\n", "scope: appInsights\n")
    assert latency_source_problems(infra) == [
        "the app cannot read the traffic log (Log Analytics Reader)"
    ]


def alert_metrics(infra: Path) -> set[str]:
    alerts = templates.parse(infra / "alerts.bicep")["variables"]["logAlerts"]["value"]
    return {name for alert in alerts for name in re.findall(r'Name == "([^"]+)"', alert["query"])}


def test_dead_letters_and_failed_training_runs_raise_alerts_on_what_the_app_counts() -> None:
    wanted = {"retrain.dead_letters", "retrain.training.runs"}
    assert wanted <= templates.app_counters()  # names the app's code counts, read from it
    assert wanted <= alert_metrics(INFRA)
    # The attributes the rules filter on, and their values, come from the app's code too.
    attributes = templates.app_counter_attributes()
    assert attributes["retrain.training.runs"]["result"] >= {"failed", "completed"}
    assert set(attributes["retrain.dead_letters"]) == {"source", "reason"}


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            'tostring(Properties["result"]) == "failed"',
            'tostring(Properties["result"]) == "error"',
            "training-failed: retrain.training.runs's result is never 'error'",
        ),
        (
            'tostring(Properties["result"]) == "failed"',
            'tostring(Properties["status"]) == "failed"',
            "training-failed: the app gives retrain.training.runs no attribute status",
        ),
        (
            'Name == "retrain.dead_letters"',
            'Name == "retrain.deadletters"',
            "app-dead-letters: the app counts no retrain.deadletters",
        ),
        (
            'tostring(Properties["outcome"]) == "rolled_back"',
            'tostring(Properties["outcome"]) == "rollback"',
            "promotion-rollback: retrain.promotions's outcome is never 'rollback'",
        ),
    ],
    ids=["unknown-value", "unknown-attribute", "unknown-metric", "outcome-value"],
)
def test_a_metric_alert_on_something_the_app_never_emits_is_caught(broken, old, new, expected):
    problems = templates.log_alert_problems(broken("alerts.bicep", old, new))
    assert [problem for problem in problems if problem.startswith(expected)], problems


def test_app_service_authentication_is_what_the_app_and_the_dashboard_need() -> None:
    # The app's HTTP routes, read from the app: a function key, and one with none at all.
    levels = dict(templates.http_routes())
    assert levels["health"] == "ANONYMOUS" and levels["dashboard/state"] == "FUNCTION"
    assert templates.app_service_auth_problems(INFRA) == []
    # Only the sign-in's identity goes with App Service authentication, on no other condition.
    [(setting, (condition, _))] = templates.conditional_app_settings(INFRA).items()
    assert (setting, condition) == ("OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID", "appServiceAuth")


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        (
            "app.bicep",
            "requireAuthentication: false",
            "requireAuthentication: true",
            "refuses requests without a sign-in, but the app's routes take ANONYMOUS or FUNCTION",
        ),
        (
            "app.bicep",
            "unauthenticatedClientAction: 'AllowAnonymous'",
            "unauthenticatedClientAction: 'Return401'",
            "refuses requests without a sign-in",
        ),
        (
            "app.bicep",
            "      tokenStore: {\n        enabled: true",
            "      tokenStore: {\n        enabled: false",
            "the token store is off",
        ),
        (
            "app.bicep",
            "          clientId: entraClientId\n",
            "          clientId: identityClientId\n",
            "registration.clientId is not the entraClientId parameter",
        ),
        (
            "app.bicep",
            "clientSecretSettingName: 'OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID'",
            "clientSecretSettingName: 'MICROSOFT_PROVIDER_AUTHENTICATION_SECRET'",
            "clientSecretSettingName 'MICROSOFT_PROVIDER_AUTHENTICATION_SECRET': a client secret",
        ),
        (
            "app.bicep",
            "appServiceAuth ? [identityId, authIdentityId] : [identityId]",
            "[identityId]",
            "names no identity of the Function App of its own",
        ),
        (
            "main.bicep",
            "authIdentityClientId: signIn ? authIdentity.outputs.clientId : ''",
            "authIdentityClientId: appIdentity.outputs.clientId",
            "is not the client id of an identity of its own",
        ),
        (
            "app.bicep",
            "'scope=openid profile offline_access ${signInScope}'",
            "'scope=openid profile'",
            "the login does not ask for the API's scope",
        ),
        (
            "app.bicep",
            "allowedAudiences: union(apiAudiences, [entraClientId])",
            "allowedAudiences: [entraClientId]",
            "allowedAudiences are not the audiences the app accepts",
        ),
        (
            "app.bicep",
            "allowedAudiences: union(apiAudiences, [entraClientId])",
            "allowedAudiences: apiAudiences",
            "allowedAudiences leave out the client id",
        ),
        (
            "app.bicep",
            "loginEndpoint}${entraTenantId}/v2.0'",
            "loginEndpoint}common/v2.0'",
            "openIdIssuer '${environment().authentication.loginEndpoint}common/v2.0' is not",
        ),
        (
            "app.bicep",
            "config@2024-04-01' = if (appServiceAuth) {",
            "config@2024-04-01' = {",
            "not conditioned on entraClientId",
        ),
        (
            "app.bicep",
            "  dependsOn: [\n    functionApp\n  ]\n",
            "",
            "does not depend on functionApp",
        ),
        (
            "main.parameters.json",
            '"value": "${ENTRA_CLIENT_ID}"',
            '"value": ""',
            "main.parameters.json does not set entraClientId from ENTRA_CLIENT_ID",
        ),
    ],
    ids=[
        "require-authentication",
        "return-401",
        "no-token-store",
        "wrong-client-id",
        "client-secret",
        "identity-not-assigned",
        "the-apps-own-identity",
        "no-api-scope",
        "audiences-not-the-apps",
        "no-client-id-audience",
        "other-issuer",
        "unconditional",
        "no-dependency",
        "not-wired",
    ],
)
def test_app_service_authentication_that_would_not_serve_the_dashboard_is_caught(
    broken, file, old, new, expected
) -> None:
    problems = templates.app_service_auth_problems(broken(file, old, new))
    assert [problem for problem in problems if expected in problem], problems


def test_the_python_worker_takes_part_in_the_hosts_opentelemetry(tmp_path: Path, broken) -> None:
    assert templates.worker_telemetry_problems(INFRA) == []
    infra = broken("app.bicep", "  PYTHON_ENABLE_OPENTELEMETRY: 'true'\n", "")
    assert templates.worker_telemetry_problems(infra) == [
        "host.json telemetryMode is OpenTelemetry but PYTHON_ENABLE_OPENTELEMETRY is not 'true': "
        "each app log would reach Application Insights twice"
    ]
    infra = broken(
        "app.bicep",
        "  PYTHON_ENABLE_OPENTELEMETRY: 'true'\n",
        "  PYTHON_ENABLE_OPENTELEMETRY: 'true'\n"
        "  PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: 'true'\n",
    )
    [problem] = templates.worker_telemetry_problems(infra)
    assert problem.startswith("PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY is set")
    # The setting follows host.json: without OpenTelemetry there, it has no business.
    host = json.loads((REPO / "host.json").read_text())
    del host["telemetryMode"]
    (tmp_path / "host.json").write_text(json.dumps(host))
    assert templates.worker_telemetry_problems(INFRA, tmp_path / "host.json") == [
        "PYTHON_ENABLE_OPENTELEMETRY is set, but host.json telemetryMode is None"
    ]


FAKE_AZ = """#!/bin/sh
# Stands in for the Azure CLI: logs each call, answers from files the test wrote.
printf '%s\\n' "$*" >>"$AZ_LOG"
case "$*" in
  "keyvault secret list"*) echo message-signing-key ;;
  "ad app show"*) cat "$AZ_STATE/redirect-uris" ;;
  "ad app federated-credential list"*) cat "$AZ_STATE/credentials" ;;
  "ad app federated-credential create"*)
    file=$(printf '%s\\n' "$*" | sed -n 's/.*--parameters @\\([^ ]*\\).*/\\1/p')
    cp "$file" "$AZ_STATE/created.json" ;;
esac
"""


def run_postprovision(tmp_path: Path, credentials: str = "", **env: str) -> list[str]:
    """infra/hooks/postprovision.sh against a stand-in `az`: the calls it made."""
    import os
    import subprocess

    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir(exist_ok=True)
    state.mkdir(exist_ok=True)
    (bin_dir / "az").write_text(FAKE_AZ)
    (bin_dir / "az").chmod(0o755)
    (state / "redirect-uris").write_text("https://localhost:8080/callback\n")
    (state / "credentials").write_text(credentials)
    log = tmp_path / "az.log"
    log.write_text("")
    environment = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "AZ_LOG": str(log),
        "AZ_STATE": str(state),
        "AZURE_KEY_VAULT_NAME": "kv-test",
        "AZURE_FUNCTION_APP_HOSTNAME": "func-abc.azurewebsites.net",
        "AZURE_TENANT_ID": "11111111-2222-3333-4444-555555555555",
    } | env
    subprocess.run(
        ["sh", str(INFRA / "hooks" / "postprovision.sh")],
        env=environment,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return log.read_text().splitlines()


def test_the_hook_lets_the_app_registration_accept_the_sign_in(tmp_path: Path) -> None:
    # Without App Service authentication, the registration is not touched.
    calls = run_postprovision(tmp_path, ENTRA_CLIENT_ID="", AUTH_IDENTITY_PRINCIPAL_ID="")
    assert [call for call in calls if call.startswith("ad ")] == []
    # With it: the callback joins the redirect URIs already there, ID tokens are issued, and a
    # federated credential trusts the sign-in identity (no client secret).
    client = "aaaaaaaa-0000-0000-0000-000000000001"
    principal = "bbbbbbbb-0000-0000-0000-00000000000b"
    calls = run_postprovision(
        tmp_path, ENTRA_CLIENT_ID=client, AUTH_IDENTITY_PRINCIPAL_ID=principal
    )
    callback = "https://func-abc.azurewebsites.net/.auth/login/aad/callback"
    assert (
        f"ad app update --id {client} --web-redirect-uris https://localhost:8080/callback "
        f"{callback} --output none"
    ) in calls
    assert f"ad app update --id {client} --enable-id-token-issuance true --output none" in calls
    created = json.loads((tmp_path / "state" / "created.json").read_text())
    assert created["subject"] == principal
    assert created["issuer"] == (
        "https://login.microsoftonline.com/11111111-2222-3333-4444-555555555555/v2.0"
    )
    assert created["audiences"] == ["api://AzureADTokenExchange"]
    # Run again where the credential exists: nothing is added twice.
    (tmp_path / "state" / "created.json").unlink()
    calls = run_postprovision(
        tmp_path,
        credentials="app-service-auth-bbbbbbbb\n",
        ENTRA_CLIENT_ID=client,
        AUTH_IDENTITY_PRINCIPAL_ID=principal,
    )
    assert not [call for call in calls if "federated-credential create" in call]
    assert not (tmp_path / "state" / "created.json").exists()


# ---------------------------------------------------------------- the deploy workflow

DEPLOY_WORKFLOW = REPO / ".github" / "workflows" / "azure-dev.yml"
# What azd puts in the environment itself on the runner: the signed-in principal's object id.
AZD_SETS = frozenset({"AZURE_PRINCIPAL_ID"})
PARAMETER_READ = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:=[^}]*)?\}")


def parameters_read(infra: Path) -> set[str]:
    """The azd environment values main.parameters.json reads (`${NAME}`, `${NAME=default}`)."""
    return set(PARAMETER_READ.findall((infra / "main.parameters.json").read_text()))


def workflow_parameter_problems(infra: Path, workflow: Path) -> list[str]:
    """Each value main.parameters.json reads that the deploy workflow does not hand to `azd
    provision` (workflow, job or step `env`) from the repository variable or secret of that
    name, or as a fixed value. The runner's azd environment starts empty: a value left out is
    deployed empty (without ENTRA_CLIENT_ID, App Service authentication's sign-in is gone)."""
    document = yaml.safe_load(workflow.read_text())
    envs = [
        {**(document.get("env") or {}), **(job.get("env") or {}), **(step.get("env") or {})}
        for job in document["jobs"].values()
        for step in job.get("steps", [])
        if "azd provision" in step.get("run", "")
    ]
    if not envs:
        return [f"{workflow.name}: no step runs azd provision"]
    problems = []
    for env in envs:
        for name in sorted(parameters_read(infra) - AZD_SETS):
            value = env.get(name)
            if value is None:
                problems.append(
                    f"{workflow.name} does not pass {name} to azd provision "
                    "(main.parameters.json reads it)"
                )
            elif "${{" in str(value):
                if not re.fullmatch(rf"\$\{{\{{\s*(vars|secrets)\.{name}\s*\}}\}}", str(value)):
                    problems.append(
                        f"{workflow.name} passes {name} from {value}, "
                        f"not from vars.{name} or secrets.{name}"
                    )
            elif not str(value).strip():
                problems.append(f"{workflow.name} passes {name} empty")
    return problems


def test_the_deploy_workflow_passes_every_value_the_parameters_read() -> None:
    assert {"ENTRA_CLIENT_ID", "ENTRA_API_SCOPE", "ENTRA_API_AUDIENCE"} <= parameters_read(INFRA)
    assert workflow_parameter_problems(INFRA, DEPLOY_WORKFLOW) == []


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "      ENTRA_CLIENT_ID: ${{ vars.ENTRA_CLIENT_ID }}\n",
            "",
            "azure-dev.yml does not pass ENTRA_CLIENT_ID to azd provision",
        ),
        (
            "      ENTRA_API_SCOPE: ${{ vars.ENTRA_API_SCOPE }}\n",
            "",
            "azure-dev.yml does not pass ENTRA_API_SCOPE to azd provision",
        ),
        (
            "ENTRA_CLIENT_ID: ${{ vars.ENTRA_CLIENT_ID }}",
            "ENTRA_CLIENT_ID: ${{ vars.AZURE_CLIENT_ID }}",
            "azure-dev.yml passes ENTRA_CLIENT_ID from ${{ vars.AZURE_CLIENT_ID }}, not from",
        ),
        (
            "ENTRA_API_SCOPE: ${{ vars.ENTRA_API_SCOPE }}",
            "ENTRA_API_SCOPE: ''",
            "azure-dev.yml passes ENTRA_API_SCOPE empty",
        ),
        (
            "        run: azd provision --no-prompt\n",
            "        run: azd up --no-prompt\n",
            "azure-dev.yml: no step runs azd provision",
        ),
    ],
    ids=["no-client-id", "no-scope", "another-variable", "empty", "no-provision"],
)
def test_a_workflow_that_would_deploy_a_parameter_empty_is_caught(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    text = DEPLOY_WORKFLOW.read_text()
    assert old in text, f"azure-dev.yml no longer holds {old!r}: update the test"
    workflow = tmp_path / "azure-dev.yml"
    workflow.write_text(text.replace(old, new, 1))
    problems = workflow_parameter_problems(INFRA, workflow)
    assert [problem for problem in problems if expected in problem], problems


def test_a_parameter_the_workflow_does_not_know_is_caught(broken) -> None:
    infra = broken("main.parameters.json", '"${ALERT_EMAIL}"', '"${ALERT_ADDRESS}"')
    assert workflow_parameter_problems(infra, DEPLOY_WORKFLOW) == [
        "azure-dev.yml does not pass ALERT_ADDRESS to azd provision (main.parameters.json reads it)"
    ]
