"""k8s/: the rtx5090 base job template renders through prefect-kubernetes, and everything validates."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from uuid import uuid4

import kubernetes_validate
import pytest
import yaml
from prefect.client.schemas.objects import FlowRun
from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

K8S = Path(__file__).resolve().parents[2] / "k8s"
KUBERNETES = "1.33.0"  # k3s v1.33
TEMPLATE = json.loads((K8S / "work-pools" / "rtx5090.json").read_text())


def render(values: dict[str, Any]) -> dict[str, Any]:
    """What the worker does: template + values, then its preparation for one flow run."""
    config = asyncio.run(KubernetesWorkerJobConfiguration.from_template_and_values(TEMPLATE, values))
    config.prepare_for_flow_run(FlowRun(flow_id=uuid4(), name="qlora-run"))
    return config.job_manifest


@pytest.fixture(scope="module")
def job() -> dict[str, Any]:
    return render(
        {
            "image": "ghcr.io/gpuflows/trainer:0.1.0",
            "command": "prefect flow-run execute",
            "gpu_count": 1,
            "node_selector": {"nvidia.com/gpu.product": "NVIDIA-GeForce-RTX-5090"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "runtime_class_name": "nvidia",
        }
    )


def test_rendered_job_validates_against_the_kubernetes_schema(job: dict[str, Any]) -> None:
    kubernetes_validate.validate(job, KUBERNETES, strict=True)


def test_gpu_placement_and_resources(job: dict[str, Any]) -> None:
    pod = job["spec"]["template"]["spec"]
    main = pod["containers"][0]
    assert main["name"] == "prefect-job", "prefect-kubernetes runs the flow in the first container"
    assert main["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-GeForce-RTX-5090"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert pod["terminationGracePeriodSeconds"] >= 120  # longer than a checkpoint save
    assert job["spec"]["ttlSecondsAfterFinished"] == 86400


def test_volumes_have_the_designed_modes(job: dict[str, Any]) -> None:
    pod = job["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m.get("readOnly", False) for m in pod["containers"][0]["volumeMounts"]}
    assert mounts == {
        "/mnt/models": True,
        "/mnt/data": True,
        "/mnt/checkpoints": False,
        "/mnt/training-logs": False,
        "/dev/shm": False,
        "/tmp": False,
    }
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"]["readOnly"] is True
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"


def test_init_checks_and_the_native_sidecar(job: dict[str, Any]) -> None:
    inits = job["spec"]["template"]["spec"]["initContainers"]
    assert [c["name"] for c in inits] == ["gpu-check", "deps-check", "metrics-exporter"]
    assert inits[0]["command"] == ["python", "-m", "tasks.training.gpu_check", "gpu"]
    assert inits[1]["command"][-1].endswith("images/trainer/requirements.lock")
    assert inits[2]["restartPolicy"] == "Always", "a native sidecar, so the Job still completes"
    for container in [*inits, job["spec"]["template"]["spec"]["containers"][0]]:
        assert container["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]


@pytest.mark.parametrize(
    "path", sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml"), ids=lambda p: p.name
)
def test_every_manifest_validates(path: Path) -> None:
    for document in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(document, KUBERNETES, strict=True)


def test_the_rendered_k3s_overlay_validates_as_a_whole() -> None:
    """What `kubectl apply -k k8s/overlays/k3s` would send: the overlay rendered by kubectl's kustomize,
    every object checked against the Kubernetes schema (patches included, not only the files one by one).
    Checkov scans the same rendering in `make test` (its kustomize framework)."""
    import shutil
    import subprocess

    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    rendered = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / "k3s")], capture_output=True, text=True, check=True
    ).stdout
    documents = [d for d in yaml.safe_load_all(rendered) if d]
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES, strict=True)
    kinds = {d["kind"] for d in documents}
    assert {"Namespace", "Deployment", "Service", "NetworkPolicy", "PersistentVolumeClaim"} <= kinds
    assert all(d["metadata"].get("namespace") in (None, "gpuflows") for d in documents)
