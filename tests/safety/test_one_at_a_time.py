"""One gameday at a time per target: a second `gameday run` on a lab while one is running is refused
(exit 2) with a message naming the first, and touches nothing (the first run's partition stays)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from safetytools import SHORT, LabHandle, gameday, params_args, read_journal, scorecard

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_second_run_on_a_busy_lab_is_refused_naming_the_first(lab: LabHandle, start_run: Any, tmp_path) -> None:
    lab.settle()
    first = start_run(lab, **SHORT)
    lab.wait_active()
    first_id = re.search(r" run (\S+) \(", first.stderr).group(1)
    cuts = lab.partition()["cuts"]

    second = gameday("run", "-p", f"lab_dir={lab.lab_dir}", *params_args(SHORT), "--output-dir",
                     str(tmp_path / "second"), timeout=120)
    assert second.returncode == 2, second.stderr[-2000:]
    assert "another gameday is in progress" in second.stderr and first_id in second.stderr
    assert lab.partition()["active"] is True, "the refused run did not heal the first run's partition"
    assert lab.partition()["cuts"] == cuts
    archive = tmp_path / "second" / "GAMEDAY-001" / second.stdout.strip().splitlines()[-1].rsplit("/", 1)[-1]
    entries = read_journal(archive)
    assert not any(e["kind"].startswith("partition.") for e in entries), "nothing was applied or healed"
    assert first_id in entries[-1]["reason"] and scorecard(archive)["verdict"] == "aborted"

    assert first.wait() in (0, 1), first.stderr[-3000:]
    assert scorecard(first.archive())["verdict"] in ("pass", "fail")
    assert not (lab.lab_dir / "gameday.lock").exists(), "the first run released the lock"
