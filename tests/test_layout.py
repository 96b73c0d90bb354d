"""The floor plan holds: tasks/ is four domain packages over a small shared layer, dependencies point one way
(forecast → billing → shared; training → billing and the Ollama client; decomposition → shared), the
import graph has no cycle, tasks/ never imports Prefect, and no module outgrows 600 lines."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASKS = ROOT / "tasks"
SHARED = {"errors", "alerts", "contacts", "audit", "schema", "database", "ledger_migrations"}
ALLOWED = {
    "shared": {"shared"},
    "billing": {"billing", "shared"},
    "forecast": {"forecast", "billing", "shared"},
    "training": {"training", "billing", "decomposition", "shared"},  # publishing uses the Ollama client
    "decomposition": {"decomposition", "shared"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    first = module.split(".")[1] if module.count(".") else "shared"
    return "shared" if first in SHARED else first


def imports_of(path: Path) -> set[str]:
    """Every module of this project a file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in TASKS.rglob("*.py") if "versions" not in p.parts}
    return {
        name: {m for m in imports_of(path) if m.startswith("tasks.") and m in modules}
        for name, path in modules.items()
    }


def test_tasks_is_four_domains_over_a_shared_layer() -> None:
    packages = {p.name for p in TASKS.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert packages == {"decomposition", "training", "billing", "forecast", "ledger_migrations"}
    loose = {p.stem for p in TASKS.glob("*.py")} - {"__init__"}
    assert loose <= SHARED, f"only the shared layer lives beside the domains: {loose - SHARED}"


def test_domains_depend_in_one_direction() -> None:
    wrong = [
        f"{source} imports {target}"
        for source, targets in graph().items()
        for target in targets
        if layer(target) not in ALLOWED[layer(source)]
    ]
    assert wrong == []


def test_the_import_graph_has_no_cycle() -> None:
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                return [*path, node, target]
            if target not in state and (cycle := visit(target, [*path, node])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state:
            assert (cycle := visit(start, [])) is None, " → ".join(cycle)


def test_tasks_never_imports_prefect() -> None:
    offenders = [
        str(p.relative_to(ROOT))
        for p in TASKS.rglob("*.py")
        if any(m == "prefect" or m.startswith("prefect.") for m in imports_of(p))
    ]
    assert offenders == []


def test_no_module_over_600_lines() -> None:
    sizes = {
        str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines())
        for folder in ("tasks", "flows", "blocks")
        for p in (ROOT / folder).rglob("*.py")
    }
    assert {name: n for name, n in sizes.items() if n > 600} == {}


def test_every_ledger_table_is_in_the_one_schema() -> None:
    from tasks.schema import metadata

    defined_elsewhere = [
        str(p.relative_to(ROOT))
        for p in TASKS.rglob("*.py")
        if p.name != "schema.py"
        and "versions" not in p.parts
        and "sa.Table(" in p.read_text(encoding="utf-8")
    ]
    assert defined_elsewhere == []
    assert len(metadata.tables) == 15


def test_the_installed_package_carries_every_module_and_the_migrations(tmp_path: Path) -> None:
    """The flows image installs gpuflows without the checkout (not editable): every module of flows/,
    tasks/ and blocks/, and the ledger's Alembic scripts, must be in the wheel."""
    import subprocess
    import zipfile

    uv = ROOT / ".venv-uv" / "bin" / "uv"
    subprocess.run(
        [str(uv), "build", "--wheel", "-q", "-o", str(tmp_path), str(ROOT)], check=True, timeout=300
    )
    [wheel] = tmp_path.glob("gpuflows-*.whl")
    packaged = set(zipfile.ZipFile(wheel).namelist())
    sources = {
        str(p.relative_to(ROOT))
        for folder in ("flows", "tasks", "blocks")
        for p in (ROOT / folder).rglob("*.py")
    }
    assert sources - packaged == set()
