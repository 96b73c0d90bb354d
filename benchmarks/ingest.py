"""`gpuflows usage ingest` on 1 M events, through the product path (the CLI in its own process), SQLite and
PostgreSQL, with dedup and quarantine on.

The file is shaped like the Alibaba GenAI trace (benchmarks/billing.synthesize): JSONL, 1 % of the rows
re-sent within the file and 0.1 % unbillable (a GPU count that is not a number). Three runs per database:
- the file into an empty ledger;
- the same file again (everything is a duplicate: what a re-sent file costs);
- a new file of the same size into the now 1 M-event ledger.
Beside them, the floor: the same rows bulk-loaded with no parsing, validation or dedup (executemany on SQLite,
COPY on PostgreSQL; benchmarks/billing.bulk_load), so the cost of the checks is visible.

Target (issue 13): >= 50,000 events/s on both databases.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.billing import SUPPLIERS, bulk_load, database, synthesize

ROOT = Path(__file__).resolve().parents[1]
GPUFLOWS = Path(sys.executable).with_name("gpuflows")


def write_file(path: Path, total: int, seed: int, prefix: str) -> dict[str, int]:
    """total rows: 1 % re-sends of an earlier row, 0.1 % unbillable; returns what the file holds."""
    rng = np.random.default_rng(seed)
    counts = {"rows": 0, "resent": 0, "bad": 0}
    recent: list[str] = []
    with path.open("w") as handle:
        for chunk in synthesize(total * 5 // 4, seed):  # its burst rounding can fall short of total
            start = chunk["first"] + chunk["start"].astype("timedelta64[s]")
            starts = np.datetime_as_string(start, unit="s")
            roll = rng.random(len(starts))
            for i in range(len(starts)):
                if counts["rows"] == total:
                    return counts
                if roll[i] < 0.01 and recent:
                    handle.write(recent[int(rng.integers(0, len(recent)))])
                    counts["resent"] += 1
                    counts["rows"] += 1
                    continue
                supplier, gpu = SUPPLIERS[chunk["supplier"][i]]
                record = {
                    "source": "bench",
                    "event_id": f"{prefix}{chunk['event_id'][i]}",
                    "customer": f"G{chunk['customer'][i]:06d}",
                    "project": f"M{chunk['project'][i]:04d}",
                    "job": "txt_2_img:succeed",
                    "supplier": supplier,
                    "gpu_type": gpu,
                    "gpu_count": "0.5" if chunk["half"][i] else 1,
                    "start": starts[i] + "Z",
                    "duration_seconds": int(chunk["duration"][i]),
                }
                if roll[i] > 0.999:
                    record["gpu_count"] = "a few"
                    counts["bad"] += 1
                line = json.dumps(record) + "\n"
                handle.write(line)
                counts["rows"] += 1
                if len(recent) < 1000:
                    recent.append(line)
                else:
                    recent[int(rng.integers(0, 1000))] = line
    return counts


def ingest(url: str, path: Path) -> tuple[float, str]:
    began = time.perf_counter()
    done = subprocess.run(
        [str(GPUFLOWS), "usage", "ingest", str(path), "--database", url, "--create"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PREFECT_LOGGING_LEVEL": "WARNING"},
    )
    return time.perf_counter() - began, done.stdout.strip().split(": ", 1)[-1]


def measure(kind: str, total: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="gpuflows-ingest-bench-") as tmp:
        first, second = Path(tmp) / "usage-1.jsonl", Path(tmp) / "usage-2.jsonl"
        held = write_file(first, total, 11, "a")
        write_file(second, total, 12, "b")
        results: dict[str, object] = {"database": kind, "file": held}
        with database(kind, Path(tmp)) as url:
            if url is None:
                return {"database": kind, "skipped": "no PostgreSQL on 127.0.0.1:5432"}
            for name, path in (("empty", first), ("resent", first), ("second", second)):
                seconds, said = ingest(url, path)
                results[name] = {"s": round(seconds, 1), "per_s": round(held["rows"] / seconds), "said": said}
        with database(kind, Path(tmp) / "floor") as url:
            (Path(tmp) / "floor").mkdir(exist_ok=True)
            from tasks.database import connect, forget

            engine = connect(url)
            results["floor"] = {"s": round(load := bulk_load(engine, total), 1), "per_s": round(total / load)}
            forget(url)
        return results


def report(total: int = 1_000_000) -> str:
    lines = [
        f"### Usage ingest (`gpuflows usage ingest`, {total:,} events, dedup and quarantine on)",
        "",
        "| database | into an empty ledger | the same file again | a new file into 1 M events "
        "| floor: bulk load, no checks | what the CLI said (first run) |",
        "|---|---|---|---|---|---|",
    ]
    for kind in ("sqlite", "postgresql"):
        r = measure(kind, total)
        print(json.dumps(r), file=sys.stderr, flush=True)
        if "skipped" in r:
            lines.append(f"| {kind} | skipped: {r['skipped']} |||||")
            continue
        cells = [f"{r[k]['s']} s, **{r[k]['per_s']:,}/s**" for k in ("empty", "resent", "second")]
        lines.append(
            f"| {kind} | {' | '.join(cells)} | {r['floor']['s']} s, {r['floor']['per_s']:,}/s "
            f"| {r['empty']['said']} |"
        )
    lines += ["", "Target: >= 50,000 events/s on both databases."]
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000))
