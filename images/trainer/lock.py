"""The trainer image's pins, derived from uv.lock (the one lock): `gpuflows[train]` without the dev group.

    python images/trainer/lock.py           # rewrite images/trainer/requirements.lock (make lock does)
    python images/trainer/lock.py --check   # exit 1 if it differs from uv.lock (make test does, via a test)

torch is pinned without its local version: the image takes the +cu128 build of it from PyTorch's CUDA 12.8
index, and the pod's deps-check compares versions without the local part.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "images" / "trainer" / "requirements.lock"
UV = ROOT / ".venv-uv" / "bin" / "uv"
HEADER = """\
# Python packages of the trainer image: gpuflows[train] as pinned in uv.lock, written by
# `python images/trainer/lock.py` (make lock). torch comes from the CUDA 12.8 index (+cu128); the init
# container `python -m tasks.training.gpu_check deps` compares the installed packages against this file.
"""


def render() -> str:
    exported = subprocess.run(
        [str(UV), "export", "--frozen", "--no-dev", "--extra", "train", "--no-emit-project", "--no-hashes",
         "--no-header", "--no-annotate"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    pins = [re.sub(r"\s*;.*$", "", line).strip() for line in exported.splitlines() if "==" in line]
    pins = [re.sub(r"^(torch==[^+]+)\+\w+$", r"\1", pin) for pin in pins]
    return HEADER + "\n".join(sorted(pins, key=str.lower)) + "\n"


def main(argv: list[str]) -> int:
    wanted = render()
    if "--check" in argv:
        if LOCK.read_text(encoding="utf-8") != wanted:
            print(f"{LOCK.relative_to(ROOT)} differs from uv.lock: run `make lock`", file=sys.stderr)
            return 1
        return 0
    LOCK.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
