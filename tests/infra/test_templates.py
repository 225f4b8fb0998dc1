"""The azd templates (infra/) checked offline: every check passes on infra/ and fails on a copy
broken in one place, the way a template that would not deploy, or would leave a connection
without its role, is broken."""

from __future__ import annotations

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
