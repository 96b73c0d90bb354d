"""The `gpuflows` command: answers on stdout, progress on stderr, one-line errors with exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from flows.cli import cli
from tests.builders import marked_document
from tests.conftest import MODEL
from tests.standins.ollama import StandinOllama


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_decompose_a_file_prints_the_answer_and_progress(
    runner: CliRunner, ollama: StandinOllama, tmp_path: Path
) -> None:
    prompt = tmp_path / "prompt.md"
    prompt.write_text(marked_document(20), encoding="utf-8")
    result = runner.invoke(
        cli,
        [
            "decompose",
            f"@{prompt}",
            "--local",
            "--host",
            ollama.url,
            "--model",
            MODEL,
            "--parallel",
            "2",
            "--aggregation-strategy",
            "hierarchical",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "MARK-20" in result.stdout and "part(s)" not in result.stdout
    assert "prompt of" in result.stderr and "section 1 done" in result.stderr
    assert "hierarchical" in result.stderr or "decompose" in result.stderr


def test_decompose_json_carries_the_records(runner: CliRunner, ollama: StandinOllama) -> None:
    result = runner.invoke(
        cli,
        [
            "decompose",
            "Tell me about GPUs. MARK-3",
            "--local",
            "--host",
            ollama.url,
            "--model",
            MODEL,
            "--json",
            "--no-think",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["mode"] == "single" and "MARK-3" in data["final_response"]
    assert data["subtasks"][0]["attempts"] == 1
    assert ollama.chat_requests()[0].body["think"] is False


def test_decompose_reads_standard_input(runner: CliRunner, ollama: StandinOllama) -> None:
    result = runner.invoke(
        cli, ["decompose", "-", "--local", "--host", ollama.url, "--model", MODEL], input="From stdin. MARK-9"
    )
    assert result.exit_code == 0 and "MARK-9" in result.stdout


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: None, "prompt file {p} does not exist"),
        (
            lambda p: p.write_bytes(b"caf\xe9\nok"),
            "prompt file {p} is not UTF-8: byte 0xe9 at offset 3 (line 1)",
        ),
        (lambda p: p.write_text("  \n"), "the prompt is empty"),
        (lambda p: p.mkdir(), "prompt file {p} is a directory"),
    ],
)
def test_bad_prompt_files_exit_1_with_one_line(
    runner: CliRunner, tmp_path: Path, setup, message: str
) -> None:
    path = tmp_path / "prompt.txt"
    setup(path)
    result = runner.invoke(cli, ["decompose", f"@{path}", "--local", "--host", "http://127.0.0.1:9"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: " + message.format(p=path))
    assert len(result.stderr.strip().splitlines()) == 1


def test_unreachable_ollama_names_the_host(runner: CliRunner, unused_port: int) -> None:
    result = runner.invoke(
        cli, ["decompose", "hi", "--local", "--host", f"http://127.0.0.1:{unused_port}", "--attempts", "1"]
    )
    assert result.exit_code == 1
    assert f"ollama at http://127.0.0.1:{unused_port} is unreachable" in result.stderr


def test_a_bad_option_is_a_usage_error(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["decompose", "hi", "--parallel", "0"])
    assert result.exit_code == 2
    result = runner.invoke(cli, ["decompose", "hi", "--aggregation-strategy", "random"])
    assert result.exit_code == 2


def test_usage_ingest_reports_new_duplicates_and_quarantined(runner: CliRunner, tmp_path: Path) -> None:
    good = {
        "source": "test-feed",
        "event_id": "e1",
        "customer": "acme",
        "project": "llm",
        "supplier": "homelab",
        "gpu_type": "rtx4090",
        "gpu_count": 1,
        "start": "2026-05-01T10:00:00Z",
        "end": "2026-05-01T11:00:00Z",
    }
    path = tmp_path / "usage.jsonl"
    path.write_text(
        json.dumps(good)
        + "\n"
        + json.dumps(good)
        + "\n"
        + json.dumps(good | {"source": "test-feed", "event_id": "e2", "gpu_type": "tpu"})
        + "\n"
    )
    database = f"sqlite:///{tmp_path}/ledger.db"
    result = runner.invoke(cli, ["usage", "ingest", str(path), "--database", database, "--create"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        f"{path}: 3 rows, 1 new, 1 duplicates, 0 conflicts, 1 quarantined (unknown GPU type: 1)"
    )
    missing = runner.invoke(cli, ["usage", "ingest", str(tmp_path / "nope.csv"), "--database", database])
    assert missing.exit_code == 1 and "cannot be read" in missing.stderr


def test_convert_the_real_lora_trace_then_ingest_it(runner: CliRunner, tmp_path: Path) -> None:
    trace = Path(__file__).parents[1] / "data" / "usage" / "lora_request_trace_slice.csv"
    out = tmp_path / "events.jsonl"
    converted = runner.invoke(cli, ["usage", "convert-lora-trace", str(trace), str(out), "--gpu-type", "a10"])
    assert converted.exit_code == 0 and converted.stdout.strip() == f"321 events written to {out}"
    database = ["--database", f"sqlite:///{tmp_path}/l.db", "--create"]
    ingested = runner.invoke(cli, ["usage", "ingest", str(out), *database])
    assert (
        ingested.stdout.strip()
        == f"{out}: 321 rows, 318 new, 0 duplicates, 0 conflicts, 3 quarantined (missing project: 3)"
    )


def test_usage_capacity_loads_nodes_and_names_a_bad_line(runner: CliRunner, tmp_path: Path) -> None:
    nodes = Path(__file__).parents[1] / "data" / "usage" / "demo_capacity.csv"
    database = ["--database", f"sqlite:///{tmp_path}/l.db"]
    loaded = runner.invoke(cli, ["usage", "capacity", str(nodes), *database, "--create"])
    assert loaded.exit_code == 0 and loaded.stdout.strip() == f"{nodes}: 2 node row(s) loaded"
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "supplier,node,gpu_type,gpu_count,valid_from\nhomelab,n1,rtx5090,-1,2026-01-01T00:00:00Z\n"
    )
    failed = runner.invoke(cli, ["usage", "capacity", str(bad), *database])
    assert failed.exit_code == 1 and f"{bad}, line 2: gpu_count must be positive" in failed.output


def test_audit_lists_billing_changes_with_filters(runner: CliRunner, tmp_path: Path) -> None:
    database = ["--database", f"sqlite:///{tmp_path}/l.db"]
    usage = tmp_path / "u.jsonl"
    usage.write_text(
        '{"source": "test-feed", "event_id": "e1", "customer": "acme", "project": "p", "supplier": "s",'
        ' "gpu_type": "a100", "gpu_count": 1, "start": "2026-05-01T10:00:00Z",'
        ' "end": "2026-05-01T11:00:00Z"}\n'
    )
    assert runner.invoke(cli, ["usage", "ingest", str(usage), *database, "--create"]).exit_code == 0
    listed = runner.invoke(cli, ["audit", "--kind", "ingest", "--json", *database])
    [line] = listed.stdout.splitlines()
    record = json.loads(line)
    assert (record["kind"], record["detail"]["inserted"], record["detail"]["source"]) == (
        "ingest",
        1,
        "(per row)",
    )
    assert runner.invoke(cli, ["audit", "--kind", "rollup", *database]).stdout == ""
    future = runner.invoke(cli, ["audit", "--since", "2999-01-01", *database])
    assert future.exit_code == 0 and future.stdout == ""


def test_no_command_quietly_starts_an_empty_ledger(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "elsewhere" / "ledger.db"
    for args in (["audit"], ["usage", "capacity", "nodes.csv"], ["usage", "ingest", "u.jsonl"]):
        result = runner.invoke(cli, [*args, "--database", f"sqlite:///{missing}"])
        assert result.exit_code == 1, result.output
        assert result.stderr.strip().splitlines() == [
            f"error: no ledger database at {missing}: pass --database or set GPUFLOWS_LEDGER_URL "
            "(`make up` creates the checkout's .gpuflows/ledger.db; --create starts an empty one)"
        ]
    assert not missing.exists()
    monkeypatch.chdir(tmp_path)  # outside the checkout the default is still the checkout's ledger
    monkeypatch.setattr("flows.bootstrap.STATE_DIR", tmp_path / "state")
    result = runner.invoke(cli, ["audit"])
    assert result.exit_code == 1 and str(tmp_path / "state" / "ledger.db") in result.stderr
    assert not (tmp_path / ".gpuflows").exists()


def test_a_server_that_wants_credentials_is_one_line(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Refuse(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(401)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"exception_message": "Unauthorized"}')

        do_POST = do_PATCH = do_GET  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api = f"http://127.0.0.1:{server.server_port}/api"
    try:
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: api}):
            result = runner.invoke(cli, ["deploy"])
    finally:
        server.shutdown()
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: the Prefect API at {api} wants credentials: set PREFECT_API_AUTH_STRING "
        "(user:password, as the server's PREFECT_SERVER_API_AUTH_STRING)"
    )
