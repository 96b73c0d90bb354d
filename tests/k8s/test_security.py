"""k8s/: least privilege, default-deny networking, the restricted Pod Security Standard, resources and
pinned images, for every workload of the base (the rendered training Job is in test_manifests.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

K8S = Path(__file__).resolve().parents[2] / "k8s"
BASE = K8S / "base"


def documents() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    found = []
    for name in kustomization["resources"]:
        found += [d for d in yaml.safe_load_all((BASE / name).read_text()) if d]
    return found


def workloads() -> list[dict[str, Any]]:
    return [d for d in documents() if d["kind"] in {"Deployment", "StatefulSet"}]


def test_the_overlay_and_base_list_only_files_that_exist() -> None:
    for kustomization in K8S.rglob("kustomization.yaml"):
        for resource in yaml.safe_load(kustomization.read_text())["resources"]:
            assert (kustomization.parent / resource).exists(), f"{kustomization}: {resource}"


def test_the_namespace_enforces_the_restricted_standard() -> None:
    [namespace] = [d for d in documents() if d["kind"] == "Namespace"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("workload", workloads(), ids=lambda w: w["metadata"]["name"])
def test_every_workload_is_restricted_limited_and_pinned(workload: dict[str, Any]) -> None:
    pod = workload["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"] + pod.get("initContainers", []):
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert {"cpu", "memory"} <= set(container["resources"]["limits"])
        image = container["image"]
        assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), image
    volumes = {v["name"] for v in pod.get("volumes", [])} | {
        t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])
    }
    for container in pod["containers"]:  # a read-only root: every written path is a volume
        assert {m["name"] for m in container.get("volumeMounts", [])} <= volumes


def test_only_the_worker_can_reach_the_kubernetes_api_and_only_for_jobs() -> None:
    accounts = {d["metadata"]["name"]: d for d in documents() if d["kind"] == "ServiceAccount"}
    assert [name for name, sa in accounts.items() if sa.get("automountServiceAccountToken", True)] == [
        "gpuflows-worker"
    ]
    [role] = [d for d in documents() if d["kind"] == "Role"]
    rules = {(tuple(r["apiGroups"]), tuple(r["resources"])): set(r["verbs"]) for r in role["rules"]}
    assert rules == {
        (("batch",), ("jobs",)): {"create", "delete", "get", "list", "watch"},
        (("",), ("pods", "pods/log", "events")): {"get", "list", "watch"},
    }
    assert not [d for d in documents() if d["kind"] in {"ClusterRole", "ClusterRoleBinding"}]
    for workload in workloads():
        pod = workload["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] in accounts
        if pod["serviceAccountName"] != "gpuflows-worker":
            assert pod["automountServiceAccountToken"] is False


def test_networking_is_default_deny_with_named_paths_only() -> None:
    policies = {d["metadata"]["name"]: d["spec"] for d in documents() if d["kind"] == "NetworkPolicy"}
    deny = policies["default-deny-all"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny

    def sources(name: str) -> set[str]:
        return {
            next(iter(peer["podSelector"]["matchLabels"].values()))
            for rule in policies[name]["ingress"]
            for peer in rule["from"]
        }

    assert sources("prefect-server") == {"prefect-worker", "flow-run"}
    assert sources("ollama") == {"flow-run"}
    assert sources("postgres") == {"prefect-server", "flow-run"}
    dns = policies["allow-dns"]["egress"][0]
    assert {p["port"] for p in dns["ports"]} == {53}


def test_training_pods_carry_the_flow_run_label_and_no_api_token() -> None:
    import json

    template = json.loads((K8S / "work-pools" / "rtx5090.json").read_text())
    pod = template["job_configuration"]["job_manifest"]["spec"]["template"]
    assert pod["metadata"]["labels"]["gpuflows.io/role"] == "flow-run"
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert template["variables"]["properties"]["service_account_name"]["default"] == "gpuflows-training"


def test_the_secret_scanner_catches_a_planted_credential(tmp_path: Path) -> None:
    """The same hook `make test` runs over the repository: a new secret fails it."""
    planted = tmp_path / "settings.py"
    key = "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYzEXAMPLEKEY"  # split: the repository itself stays clean
    planted.write_text(f'AWS_SECRET_ACCESS_KEY = "{key}"\n')
    hook = Path(sys.executable).with_name("detect-secrets-hook")
    result = subprocess.run([str(hook), str(planted)], capture_output=True, text=True)
    assert result.returncode == 1 and "Secret Keyword" in result.stdout
