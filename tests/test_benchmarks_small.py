"""Small versions of the benchmarks (so they do not rot): run `benchmarks/run.py --small` as `make bench`
would, and check what the figures say (plans use indexes, accounting is right). No timing assertions."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

pytestmark = pytest.mark.timeout(400)

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
RUNBOOK_QUERIES = ("count_since", "per_minute", "duplicates", "critical_types", "window_stats", "lookup_keys_100")


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=str(ROOT), env=env, check=False)
    assert proc.returncode == 0, f"{args} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def pg_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="gameday-test-bench-pg-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def small_run(pg_dir: Path) -> dict[str, Any]:
    out = pg_dir.parent / f"{pg_dir.name}.json"
    try:
        proc = _run(str(BENCH / "run.py"), "--small", "--skip-others", "--pg-dir", str(pg_dir), "--json", str(out))
        data = json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)
    data["stdout"] = proc.stdout
    return data


def _result(run: dict[str, Any], name: str) -> dict[str, Any]:
    entry = run["benchmarks"][name]
    assert entry["returncode"] == 0, entry
    return entry["result"]


def test_make_bench_prints_one_table_with_the_machine(small_run: dict[str, Any]) -> None:
    assert small_run["failed"] == []
    text = small_run["stdout"]
    assert "=== every figure" in text and "machine:" in text and "cores" in text
    for name in ("events_queries", "accounting", "jsz_lag", "sampling_memory"):
        assert f"[{name}]" in text


def test_every_runbook_query_uses_an_index(small_run: dict[str, Any]) -> None:
    res = _result(small_run, "events_queries")
    plans = res["extra"]["plans"]
    for name in RUNBOOK_QUERIES:
        assert plans[name]["seq_scans_on_events"] == 0, (name, plans[name]["reads_events_by"])
        assert "events_" in plans[name]["reads_events_by"], (name, plans[name]["reads_events_by"])
    assert res["extra"]["missing_indexes"] == []
    # 20,000 rows, window = last 2,000: one duplicate and one loss per 1,000 sequence numbers
    assert res["extra"]["window_rows"] == 2000
    assert res["extra"]["duplicates_in_window"] == 2
    assert res["extra"]["lookup_keys_100_lost"] == 1


def test_accounting_is_right_and_set_based(small_run: dict[str, Any]) -> None:
    res = _result(small_run, "accounting")
    acc = res["extra"]["account"]
    assert acc["correct"], acc
    assert (acc["keys"], acc["lost"], acc["duplicated"]) == (5000, 5, 5)
    assert acc["seq_scans_on_events"] == 0 and "events_idempotency_key_idx" in acc["reads_events_by"]
    assert res["extra"]["lookup_keys"]["lost"] == 5 and res["extra"]["lookup_keys"]["duplicated"] == 5
    assert res["extra"]["naive_sample"] == 200 and res["extra"]["ratio"] > 0


def test_jsz_lag_reads_the_right_consumer(small_run: dict[str, Any]) -> None:
    res = _result(small_run, "jsz_lag")
    assert res["extra"]["streams"] == 10 and res["extra"]["consumers"] == 30
    assert res["extra"]["lag_correct"] and res["extra"]["num_pending"] == 50
    variants = res["extra"]["variants"]
    # the probe's query reads no more than everything
    assert variants["probe"]["bytes"] <= variants["everything"]["bytes"]


def test_sampling_memory_and_sizes(small_run: dict[str, Any]) -> None:
    res = _result(small_run, "sampling_memory")
    extra = res["extra"]
    assert extra["samples_taken"] >= 300 and extra["rows_returned"] == extra["samples_taken"]
    assert extra["sample_errors"] == 0
    assert 0 < extra["notebook_bytes"] < 5e6 and 0 < extra["report_html_bytes"] < 5e6
    assert extra["samples_csv_bytes"] > 0


def test_a_missing_index_shows_as_a_seq_scan(small_run: dict[str, Any], pg_dir: Path) -> None:
    """The plan check is not vacuous: without events_created_at_idx the window queries scan the table."""
    spec = importlib.util.spec_from_file_location("gameday_bench_common_t", BENCH / "common.py")
    assert spec and spec.loader
    common = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = common
    spec.loader.exec_module(common)
    with common.postgres(pg_dir) as pg, psycopg.connect(pg.dsn("events_20000"), autocommit=True) as conn:
        conn.execute("DROP INDEX events_created_at_idx")
    out = pg_dir.parent / f"{pg_dir.name}-noidx.json"
    try:
        _run(str(BENCH / "events_queries.py"), "--rows", "20000", "--repeat", "1", "--no-seqscan",
             "--pg-dir", str(pg_dir), "--json", str(out))
        res = json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)
    plans = res["extra"]["plans"]
    assert plans["count_since"]["seq_scans_on_events"] > 0
    assert plans["duplicates"]["seq_scans_on_events"] > 0
    assert any("events_created_at_idx" in ddl for ddl in res["extra"]["missing_indexes"])
