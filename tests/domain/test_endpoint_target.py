"""The policy's `endpoint_target`: managed by default, or a Kubernetes compute; a bad one is
refused naming the file and the field."""

from __future__ import annotations

import pytest

from domain.policy import KubernetesTarget, ManagedTarget, PolicyError, parse_policy

K8S = "endpoint_target.kubernetes."
BASE = "model: churn\nendpoint: churn-ep\ndata: {container: data, prefix: churn/}\n"


def test_a_policy_without_a_target_is_managed_as_before() -> None:
    assert parse_policy(BASE).endpoint_target == ManagedTarget()


def test_a_kubernetes_target_names_its_compute_and_instance_type() -> None:
    text = BASE + "endpoint_target: {kind: kubernetes, compute: aks-prod, instance_type: gpu-small}"
    target = parse_policy(text).endpoint_target
    assert target == KubernetesTarget(
        kind="kubernetes", compute="aks-prod", instance_type="gpu-small", instance_count=1
    )
    defaults = parse_policy(BASE + "endpoint_target: {kind: kubernetes, compute: aks}")
    assert defaults.endpoint_target.instance_type == "defaultinstancetype"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("target", "field", "reason"),
    [
        ("{kind: kubernetes}", K8S + "compute", "Field required"),
        ("{kind: kubernetes, compute: 'aks prod'}", K8S + "compute", "pattern"),
        ("{kind: kubernetes, compute: far-too-long-for-azure}", K8S + "compute", "pattern"),
        ("{kind: kubernetes, compute: aks, instance_type: A_B}", K8S + "instance_type", "pattern"),
        ("{kind: kubernetes, compute: aks, instance_count: 0}", K8S + "instance_count", "to 1"),
        ("{kind: managed, compute: aks}", "endpoint_target.managed.compute", "Extra inputs"),
        ("{kind: aks, compute: aks}", "endpoint_target", "does not match"),
        ("{compute: aks}", "endpoint_target", "discriminator 'kind'"),
    ],
)  # fmt: skip
def test_a_bad_target_names_the_file_and_the_field(target: str, field: str, reason: str) -> None:
    with pytest.raises(PolicyError) as refused:
        parse_policy(BASE + f"endpoint_target: {target}\n", "policies/churn.yml")
    assert (refused.value.path, refused.value.field) == ("policies/churn.yml", field)
    assert reason in refused.value.reason
