"""One lock for every install: uv.lock agrees with pyproject.toml (make test also runs `uv lock --check`),
the images install from it, and the pins that broke a fresh install stay pinned."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def locked() -> dict[str, str]:
    lock = tomllib.loads((ROOT / "uv.lock").read_text(encoding="utf-8"))
    return {package["name"]: package["version"] for package in lock["package"]}


def test_sqlalchemy_stays_below_2_1_where_prefects_scheduler_works() -> None:
    # 2.1 fails Prefect 3.8.8's scheduler on every tick; test_platform.py proves the schedules fire.
    version = tuple(int(part) for part in locked()["sqlalchemy"].split(".")[:2])
    assert version == (2, 0)


def test_every_direct_pin_of_pyproject_is_what_the_lock_holds() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pins = [*project["dependencies"], *project["optional-dependencies"]["train"]]
    versions = locked()
    for pin in pins:
        if "==" not in pin:
            continue
        name, version = pin.split("==")
        name = name.split("[")[0].strip().lower().replace("_", "-")
        assert versions[name].split("+")[0] == version.strip(), name


def test_the_trainer_images_pins_are_derived_from_uv_lock() -> None:
    check = subprocess.run(
        [sys.executable, str(ROOT / "images" / "trainer" / "lock.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr


def test_the_flows_image_installs_from_uv_lock() -> None:
    dockerfile = (ROOT / "images" / "flows" / "Dockerfile").read_text(encoding="utf-8")
    assert "COPY pyproject.toml uv.lock" in dockerfile
    assert dockerfile.count("uv sync --locked") == 2
    assert "requirements.lock" not in dockerfile
