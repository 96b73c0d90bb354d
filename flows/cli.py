"""The `gpuflows` console command: parse, call a flow (or the in-process agent), print.

Results go to stdout, progress to stderr; a `GpuflowsError` exits 1 with one line, a usage error exits 2.
Imports are lazy so `gpuflows --help` stays instant.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from tasks.errors import GpuflowsError, InputError


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def read_prompt(argument: str) -> str:
    """PROMPT as given, `@path` for a file, or `-` for standard input; strict UTF-8."""
    if argument == "-":
        data, source = sys.stdin.buffer.read(), "standard input"
    elif argument.startswith("@"):
        path = Path(argument[1:])
        source = f"prompt file {path}"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise InputError(f"{source} does not exist") from None
        except IsADirectoryError:
            raise InputError(f"{source} is a directory, not a file") from None
        except PermissionError:
            raise InputError(f"{source} is not readable (permission denied)") from None
    else:
        return argument
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(
            f"{source} is not UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start} (line {line}); "
            "convert it, e.g. iconv -f latin1 -t utf-8"
        ) from None


def api_error(exc: BaseException) -> str | None:
    """One line for a Prefect API that refuses or cannot be reached, instead of a traceback."""
    import httpx

    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status not in (401, 403) and not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return None
    from flows.bootstrap import api_url  # loads Prefect's settings: only once the error is the API's

    if status == 401:
        return (
            f"the Prefect API at {api_url()} wants credentials: set PREFECT_API_AUTH_STRING "
            "(user:password, as the server's PREFECT_SERVER_API_AUTH_STRING)"
        )
    if status == 403:
        return f"the Prefect API at {api_url()} refused the credentials in PREFECT_API_AUTH_STRING"
    return f"cannot reach the Prefect API at {api_url()}: is the server up (make up)?"


class Cli(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:  # noqa: BLE001 - only API refusals become one line; the rest re-raise
            cause: BaseException | None = exc
            while cause is not None:
                if message := api_error(cause):
                    _fail(message)
                cause = cause.__cause__ or cause.__context__
            raise


@click.group(cls=Cli)
@click.version_option(package_name="gpuflows")
def cli() -> None:
    """gpuflows: decomposition, training, billing and forecasting flows on Prefect."""


@cli.command()
@click.argument("prompt")
@click.option("--host", help="Ollama base URL (default: the 'default' OllamaServer block, or localhost)")
@click.option("--model", help="Model as in `ollama list`")
@click.option(
    "--max-tokens", "max_context_tokens", type=click.IntRange(1024), help="Context (num_ctx) per call"
)
@click.option("--parallel", "max_parallel_tasks", type=click.IntRange(1, 64), help="Sub-tasks at once")
@click.option(
    "--aggregation-strategy",
    type=click.Choice(["auto", "concatenate", "sequential", "hierarchical"]),
    help="How answers are combined",
)
@click.option(
    "--attempts", "max_attempts", type=click.IntRange(1, 10), help="Tries per call (transient faults)"
)
@click.option("--think/--no-think", default=None, help="Reasoning on/off for thinking models")
@click.option(
    "--timeout",
    "run_timeout_seconds",
    type=click.FloatRange(1, 86_400),
    help="Deadline of the whole run in seconds (default 1800): past it, exit 1 with one line",
)
@click.option(
    "--max-continuations",
    type=click.IntRange(0, 10),
    help="Follow-up calls for an answer cut at the length limit (default 3)",
)
@click.option("--instructions", help="Instructions every section must see (default: the prompt's preamble)")
@click.option("--allow-partial", is_flag=True, help="Return an answer that marks failed sections")
@click.option("--json", "as_json", is_flag=True, help="Print the whole result as JSON")
@click.option(
    "--prefect/--local",
    "via_prefect",
    default=None,
    help="Run as a Prefect flow run (default when PREFECT_API_URL is set) or in-process",
)
def decompose(
    prompt: str, as_json: bool, via_prefect: bool | None, instructions: str | None, **overrides: Any
) -> None:
    """Answer PROMPT (text, @file, or - for stdin) with the decomposition agent."""
    from tasks.decomposition.plan import AgentConfig

    settings = {
        "ollama_host": overrides.pop("host"),
        "ollama_model": overrides.pop("model"),
        **{k: v for k, v in overrides.items() if v is not None},
    }
    if not settings["allow_partial"]:
        settings.pop("allow_partial")
    try:
        text = read_prompt(prompt)
        config = AgentConfig(**{k: v for k, v in settings.items() if v is not None})
        if via_prefect is None:
            from prefect.settings import PREFECT_API_URL

            via_prefect = bool(PREFECT_API_URL.value())
        if via_prefect:
            from flows.decompose import decompose as decompose_flow

            click.echo("running as a Prefect flow run…", err=True)
            result = decompose_flow(text, config, server="default", instructions=instructions)
        else:
            from tasks.decomposition.agent import OllamaDecompositionAgent

            agent = OllamaDecompositionAgent(config)
            result = agent.process(text, instructions, progress=lambda line: click.echo(line, err=True))
    except GpuflowsError as exc:
        _fail(str(exc))
    except ValueError as exc:  # pydantic validation of the options
        _fail(str(exc).replace("\n", "; "))
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(result), indent=2))
    else:
        click.echo(result.final_response)
    click.echo(
        f"{result.mode}, {len(result.subtasks)} part(s), {len(result.synthesis)} synthesis call(s), "
        f"{result.total_tokens_used} tokens, {result.total_duration_seconds:.1f} s",
        err=True,
    )


@cli.command()
@click.option("--port", default=4200, show_default=True, help="Prefect server port on 127.0.0.1")
@click.option("--setup-only", is_flag=True, help="Set up and deploy, then exit (stops a server it started)")
def up(port: int, setup_only: bool) -> None:
    """Start the platform on the embedded default: Prefect server, pools, blocks, deployments, worker."""
    from flows.bootstrap import run_platform

    try:
        run_platform(port=port, start_worker=not setup_only)
    except GpuflowsError as exc:
        _fail(str(exc))


@cli.group()
def usage() -> None:
    """The GPU usage ledger."""


ledger_option = click.option(
    "--database",
    envvar="GPUFLOWS_LEDGER_URL",
    help="SQLAlchemy URL of the ledger (env GPUFLOWS_LEDGER_URL; default the checkout's .gpuflows/ledger.db)",
)
create_option = click.option(
    "--create", is_flag=True, help="Start a new, empty ledger if the SQLite file does not exist"
)


def open_ledger(database: str | None, create: bool = False) -> Any:
    """The ledger's engine. A SQLite ledger that does not exist is created only on request: run from another
    folder, a command must not quietly start an empty ledger and report nothing."""
    from flows.bootstrap import STATE_DIR
    from tasks.database import connect

    url = database or f"sqlite:///{STATE_DIR / 'ledger.db'}"
    if url.startswith("sqlite:///") and not create:
        path = Path(url.removeprefix("sqlite:///"))
        if not path.is_file():
            raise InputError(
                f"no ledger database at {path}: pass --database or set GPUFLOWS_LEDGER_URL "
                "(`make up` creates the checkout's .gpuflows/ledger.db; --create starts an empty one)"
            )
    return connect(url)


@usage.command("ingest")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--source",
    help="The system that produced the events, for rows without a `source` column: with the event id, "
    "the identity that deduplicates (a file with neither is refused)",
)
@ledger_option
@create_option
def usage_ingest(files: tuple[Path, ...], source: str | None, database: str | None, create: bool) -> None:
    """Ingest usage events from JSONL or CSV FILES: duplicates skipped, bad rows quarantined with a reason."""
    from tasks.billing.ledger import ingest_file

    try:
        engine = open_ledger(database, create)
        for path in files:
            summary = ingest_file(engine, path, source)
            reasons = ", ".join(f"{k}: {n}" for k, n in sorted(summary.reasons.items()))
            click.echo(
                f"{path}: {summary.rows} rows, {summary.inserted} new, {summary.duplicates} duplicates, "
                f"{summary.conflicts} conflicts, {summary.quarantined} quarantined"
                + (f" ({reasons})" if reasons else "")
            )
    except GpuflowsError as exc:
        _fail(str(exc))


@usage.command("convert-lora-trace")
@click.argument("trace", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.argument("out", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--gpu-type", default="a10", show_default=True, help="GPU type the requests ran on")
def usage_convert_lora_trace(trace: Path, out: Path, gpu_type: str) -> None:
    """Convert the Alibaba GenAI LoRA request TRACE (CSV) into usage events (JSONL) for `usage ingest`."""
    from tasks.billing.trace_import import lora_trace_events

    try:
        with out.open("w", encoding="utf-8") as handle:
            count = sum(
                handle.write(json.dumps(event) + "\n") > 0 for event in lora_trace_events(trace, gpu_type)
            )
    except GpuflowsError as exc:
        _fail(str(exc))
    click.echo(f"{count} events written to {out}")


@usage.command("capacity")
@click.argument("nodes", type=click.Path(path_type=Path, dir_okay=False))
@ledger_option
@create_option
def usage_capacity(nodes: Path, database: str | None, create: bool) -> None:
    """Load supplier capacity from a NODES CSV (supplier,node,gpu_type,gpu_count,valid_from,valid_to),
    upserted by supplier, node and valid_from; the rollup reports idle capacity from it."""
    from tasks.billing.capacity import load_capacity, read_capacity

    try:
        written = load_capacity(open_ledger(database, create), read_capacity(nodes))
    except GpuflowsError as exc:
        _fail(str(exc))
    click.echo(f"{nodes}: {written} node row(s) loaded")


@cli.command()
@click.option("--kind", help="flow-run-start, flow-run-end, ingest, rollup or close")
@click.option("--flow", "flow_name", help="Flow name, e.g. billing-rollup")
@click.option("--run", "flow_run_id", help="Flow run id")
@click.option("--since", type=click.DateTime(), help="From this time (UTC)")
@click.option("--until", type=click.DateTime(), help="Before this time (UTC)")
@click.option("--limit", type=click.IntRange(1, 100_000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line")
@ledger_option
def audit(
    kind: str | None,
    flow_name: str | None,
    flow_run_id: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    as_json: bool,
    database: str | None,
) -> None:
    """The audit trail, newest first: flow runs (start, end, trigger, redacted parameters) and billing
    changes (ingest, rollup, close with its adjustments)."""
    from tasks.audit import AuditQuery, query

    utc = lambda value: None if value is None else value.replace(tzinfo=UTC)  # noqa: E731
    try:
        rows = query(
            open_ledger(database), AuditQuery(kind, flow_name, flow_run_id, utc(since), utc(until), limit)
        )
    except GpuflowsError as exc:
        _fail(str(exc))
    for row in rows:
        if as_json:
            click.echo(json.dumps(row, default=str, sort_keys=True))
            continue
        who = " ".join(str(row[k]) for k in ("flow", "deployment", "trigger", "state") if row[k])
        click.echo(f"{row['at']}  {row['kind']:<15} {who}  {json.dumps(row['detail'], default=str)}")


@cli.command()
def deploy() -> None:
    """Register every deployment in prefect.yaml with the configured Prefect server (PREFECT_API_URL)."""
    import os

    from flows.bootstrap import deploy as deploy_all

    try:
        lines = deploy_all(dict(os.environ))
    except GpuflowsError as exc:
        _fail(str(exc))
    for line in lines:
        click.echo(f"  ✓ {line}")
    click.echo("deployments and automations registered")


@cli.group()
def demo() -> None:
    """The demo's loopback mail: a mailbox, and contacts for every customer and supplier."""


@demo.command("mailbox")
@click.option("--port", default=2525, show_default=True, help="SMTP port on 127.0.0.1")
@click.option("--folder", type=click.Path(path_type=Path), help="Default: the checkout's .gpuflows/mailbox")
def demo_mailbox(port: int, folder: Path | None) -> None:
    """Receive mail on 127.0.0.1 until Ctrl-C; each message is filed under its recipient."""
    import time

    from flows.bootstrap import STATE_DIR
    from flows.demo_mail import mailbox

    folder = folder or STATE_DIR / "mailbox"
    with mailbox(folder, port=port):
        click.echo(f"SMTP on 127.0.0.1:{port}; messages in {folder}/<recipient>/ (Ctrl-C to stop)")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


@demo.command("contacts")
@click.option("--port", default=2525, show_default=True, help="The demo mailbox's SMTP port")
@click.option("--block", default="default", show_default=True, help="Contacts block to write")
@ledger_option
def demo_contacts_command(port: int, block: str, database: str | None) -> None:
    """Give every customer and supplier of the ledger its own address on the demo mailbox (Contacts block)."""
    from flows.demo_mail import demo_contacts

    try:
        contacts = demo_contacts(open_ledger(database), port=port)
    except GpuflowsError as exc:
        _fail(str(exc))
    contacts.save(block, overwrite=True)
    kinds = Counter(c.kind for c in contacts.contacts)
    click.echo(
        f"Contacts block {block!r}: {kinds['customer']} customers, {kinds['supplier']} suppliers, "
        f"each at its own address on 127.0.0.1:{port}"
    )


if __name__ == "__main__":
    cli()
