"""Init-container checks: readable reasons for a missing driver, a torch without sm_120, a drifted lock."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

from tasks.training.gpu_check import GpuFacts, dependency_problems, gpu_problems

RTX5090 = (("NVIDIA GeForce RTX 5090", "sm_120"),)


def test_no_driver_names_the_runtime_class() -> None:
    [problem] = gpu_problems(GpuFacts(driver=None, nvml_error="NVML Shared Library Not Found"))
    assert "no NVIDIA driver" in problem and "runtimeClassName 'nvidia'" in problem


def test_torch_26_cuda_124_cannot_run_an_rtx_5090() -> None:
    facts = GpuFacts(
        driver="575.51",
        gpus=RTX5090,
        torch_version="2.6.0+cu124",
        torch_cuda="12.4",
        torch_arches=("sm_50", "sm_80", "sm_86", "sm_90"),
        cuda_available=True,
        bitsandbytes_version="0.45.0",
    )
    problems = gpu_problems(facts)
    assert problems[0] == (
        "NVIDIA GeForce RTX 5090 is sm_120, but torch 2.6.0+cu124 (CUDA 12.4) is built for "
        "sm_50, sm_80, sm_86, sm_90; build the image with torch >= 2.7 for CUDA 12.8"
    )
    assert "need >= 0.45.3" in problems[1]


def test_a_blackwell_build_passes() -> None:
    facts = GpuFacts(
        driver="575.51",
        gpus=RTX5090,
        torch_version="2.13.0+cu128",
        torch_cuda="12.8",
        torch_arches=("sm_80", "sm_90", "sm_100", "sm_120"),
        cuda_available=True,
        bitsandbytes_version="0.50.2",
    )
    assert gpu_problems(facts) == []


def test_dependency_drift_is_listed(tmp_path: Path) -> None:
    lock = tmp_path / "requirements.lock"
    lock.write_text(
        f"# comment\nhttpx=={version('httpx')}\nclick==0.0.1\nnot-a-package-xyz==1.0\nbroken line\n"
    )
    assert dependency_problems(lock) == [
        f"click: installed {version('click')}, locked 0.0.1",
        "not-a-package-xyz: not installed, locked 1.0",
        f"{lock}:5: not a `name==version` pin: 'broken line'",
    ]
