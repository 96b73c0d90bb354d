"""Init-container checks of the GPU pod, failing with a readable reason before any training starts.

`python -m tasks.training.gpu_check gpu`: the NVIDIA driver answers, a GPU is visible, and this image's
    torch was built for its architecture (the RTX 5090 is sm_120: torch >= 2.7 on CUDA 12.8; the once-planned
    torch 2.6 / CUDA 12.4 cannot run on it).
`python -m tasks.training.gpu_check deps LOCK`: the installed Python packages are exactly the image's lock.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

MIN_BITSANDBYTES = (0, 45, 3)  # first release with Blackwell (sm_120) kernels


@dataclass(frozen=True, slots=True)
class GpuFacts:
    driver: str | None  # None: NVML could not initialise (no driver, or no runtimeClass/device plugin)
    gpus: tuple[tuple[str, str], ...] = ()  # (name, "sm_XY")
    torch_version: str = ""
    torch_cuda: str | None = None
    torch_arches: tuple[str, ...] = ()  # torch.cuda.get_arch_list(), e.g. ("sm_90", "sm_120", "compute_120")
    cuda_available: bool = False
    bitsandbytes_version: str = ""
    nvml_error: str = ""
    notes: list[str] = field(default_factory=list)


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def gpu_problems(facts: GpuFacts) -> list[str]:
    """Why this pod cannot train on its GPU; empty when it can."""
    if facts.driver is None:
        return [
            f"no NVIDIA driver: NVML cannot initialise ({facts.nvml_error}); check runtimeClassName "
            "'nvidia' and the NVIDIA device plugin on the node"
        ]
    if not facts.gpus:
        return [f"driver {facts.driver} sees no GPU; request nvidia.com/gpu in the pod"]
    problems: list[str] = []
    if not facts.cuda_available:
        problems.append(
            f"torch {facts.torch_version} cannot use CUDA (torch CUDA {facts.torch_cuda}, "
            f"driver {facts.driver}); the image needs a CUDA build of torch"
        )
    for name, arch in facts.gpus:
        compute = "compute_" + arch.removeprefix("sm_")
        if arch not in facts.torch_arches and compute not in facts.torch_arches:
            supported = ", ".join(a for a in facts.torch_arches if a.startswith("sm_")) or "none"
            problems.append(
                f"{name} is {arch}, but torch {facts.torch_version} (CUDA {facts.torch_cuda}) is built for "
                f"{supported}; build the image with torch >= 2.7 for CUDA 12.8"
            )
    if _version_tuple(facts.bitsandbytes_version) < MIN_BITSANDBYTES:
        problems.append(
            f"bitsandbytes {facts.bitsandbytes_version or 'missing'} has no 4-bit kernels for this GPU; "
            "need >= 0.45.3"
        )
    return problems


def read_gpu_facts() -> GpuFacts:
    """What the driver and torch say on this machine (no GPU here gives driver=None)."""
    import pynvml
    import torch

    try:
        bnb = version("bitsandbytes")
    except PackageNotFoundError:
        bnb = ""
    base = {
        "torch_version": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "torch_arches": tuple(torch.cuda.get_arch_list()) if torch.version.cuda else (),
        "cuda_available": torch.cuda.is_available(),
        "bitsandbytes_version": bnb,
    }
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return GpuFacts(driver=None, nvml_error=str(exc), **base)
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            gpus.append((str(pynvml.nvmlDeviceGetName(handle)), f"sm_{major}{minor}"))
        return GpuFacts(driver=str(pynvml.nvmlSystemGetDriverVersion()), gpus=tuple(gpus), **base)
    finally:
        pynvml.nvmlShutdown()


def dependency_problems(lock: Path) -> list[str]:
    """Every locked package whose installed version differs (or that is missing)."""
    problems: list[str] = []
    for number, line in enumerate(lock.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        if not match:
            problems.append(f"{lock}:{number}: not a `name==version` pin: {line!r}")
            continue
        name, wanted = match.groups()
        try:
            installed = version(name)
        except PackageNotFoundError:
            problems.append(f"{name}: not installed, locked {wanted}")
            continue
        if installed.split("+")[0] != wanted.split("+")[0]:
            problems.append(f"{name}: installed {installed}, locked {wanted}")
    return problems


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if args[:1] == ["gpu"] and len(args) == 1:
        facts = read_gpu_facts()
        problems = gpu_problems(facts)
        gpus = ", ".join(f"{name} ({arch})" for name, arch in facts.gpus)
        ok = f"driver {facts.driver}, {gpus}, torch {facts.torch_version}"
    elif args[:1] == ["deps"] and len(args) == 2:
        problems = dependency_problems(Path(args[1]))
        ok = f"all packages match {args[1]}"
    else:
        print("usage: python -m tasks.training.gpu_check gpu | deps LOCKFILE", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not problems:
        print(f"ok: {ok}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
