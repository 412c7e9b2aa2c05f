"""`gameday new PLAYBOOK.md [--id ID] [--into DIR]`: a package's skeleton from a written playbook (the
playbook copied, the declarations stub, a notebook with one cell per phase quoting it), and every bad
input refused with exit 2 in one line before anything is written."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import yaml
from runtools import run_gameday

from gamedaylib.authoring import markdown, skeleton
from gamedaylib.cli import main
from gamedaylib.gamedays import scenario

REDIS = Path(__file__).resolve().parent / "playbooks" / "redis-failover.md"


def test_new_on_an_in_package_playbook_writes_the_skeleton(tmp_path: Path) -> None:
    source = scenario("GAMEDAY-001").playbook_md
    proc = run_gameday("new", str(source), "--into", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    dest = Path(proc.stdout.strip().splitlines()[-1])
    assert dest == tmp_path / "nats_partition"
    assert sorted(p.name for p in dest.iterdir()) == ["gameday.yaml", "nats_partition_gameday.ipynb", "playbook.md"]
    assert (dest / "playbook.md").read_bytes() == source.read_bytes()

    written = markdown.load(source)
    declared = yaml.safe_load((dest / "gameday.yaml").read_text(encoding="utf-8"))
    assert declared["id"] == "GAMEDAY-001" and declared["notebook"] == "nats_partition_gameday.ipynb"
    assert [(p["id"], p["title"], p["t_minutes"]) for p in declared["phases"]] == [
        (p.slug, p.title, p.offset_minutes) for p in written.phases]
    assert declared["metrics"][0] == {"name": "rto_seconds", "label": "RTO (Recovery Time)", "target": "<= 3600 s",
                                      "written": "≤60m", "measured_by": "team"}
    assert {m["measured_by"] for m in declared["metrics"]} == {"team"}  # nothing claims to be measured

    book = nbformat.read(dest / "nats_partition_gameday.ipynb", as_version=4)
    nbformat.validate(book)
    phase_cells = [c for c in book.cells if c.id.startswith("phase-")]
    assert [c.id for c in phase_cells] == ["phase-" + p.slug.replace("_", "-") for p in written.phases]
    for cell, phase in zip(phase_cells, written.phases, strict=True):
        assert cell.cell_type == "markdown"
        assert cell.source == f"{phase.heading}\n\n{phase.text}"  # the playbook's text, as the facilitator reads it
    assert "### T+5 minutes: Event Buffering" in phase_cells[2].source
    assert "1. How quickly did consumer lag start increasing?" in phase_cells[2].source
    ids = [c.id for c in book.cells]
    assert ids[:2] == ["title", "pre-gameday-checklist"] and ids[-2:] == ["success-metrics", "rollback-procedure"]
    assert "| RTO (Recovery Time) | `rto_seconds` | ≤60m | `<= 3600 s` | team |" in book.cells[-2].source
    assert all(c.cell_type == "markdown" for c in book.cells)  # nothing in it runs a step


def test_new_is_deterministic_and_takes_an_id(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = skeleton.write(skeleton.plan(REDIS, gameday_id="GAMEDAY-201"), tmp_path / "a")
    second = skeleton.write(skeleton.plan(REDIS, gameday_id="GAMEDAY-201"), tmp_path / "b")
    assert first.name == second.name == "redis_primary_loss"
    for name in ("gameday.yaml", "redis_primary_loss_gameday.ipynb", "playbook.md"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    declared = yaml.safe_load((first / "gameday.yaml").read_text(encoding="utf-8"))
    assert declared["id"] == "GAMEDAY-201"
    assert declared["phases"][2] == {"id": "failover", "title": "Failover", "t_minutes": 1, "t_end_minutes": 5}
    assert [m["target"] for m in declared["metrics"]] == ["< 30 s", "<= 300 s", "== 0 sessions", ">= 99 %"]
    book = nbformat.read(first / "redis_primary_loss_gameday.ipynb", as_version=4)
    assert book.metadata["gameday"] == {"id": "GAMEDAY-201", "generated_from": "playbook.md"}


NO_PHASES = "# Gameday Playbook: Nothing Yet\n\n**ID**: GAMEDAY-900\n\n## Objectives\n\n1. Decide\n"
NO_ID = "# Gameday Playbook: Anonymous\n\n## Timeline\n\n### T+0: Go\n\ntext\n"


@pytest.mark.parametrize(("content", "args", "says"), [
    (NO_PHASES, [], "'# Gameday Playbook: Nothing Yet': no phase"),
    (("# Gameday Playbook: Bad Table\n\n**ID**: G-1\n\n### T+0: Go\n\n## Success Metrics\n\n| Metric | Target |\n"
      "|---|---|\n| RTO | soon |\n"), [], "'## Success Metrics': metric 'RTO': target 'soon' has no number"),
    (NO_ID, [], "--id: "),
    (NO_ID, ["--id", "3-not-an-id"], "'3-not-an-id' is not a gameday id"),
    (NO_ID, ["--id", "GAMEDAY-900", "--into", "{tmp}/missing"], "missing is not a folder"),
    (None, [], "'(the file)': cannot be read"),
])
def test_bad_input_is_refused_with_exit_2_and_nothing_written(tmp_path: Path, content: str | None,
                                                              args: list[str], says: str,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    playbook = tmp_path / "playbook.md"
    if content is not None:
        playbook.write_text(content, encoding="utf-8")
    into = tmp_path / "into"
    into.mkdir()
    rest = [a.replace("{tmp}", str(tmp_path)) for a in args]
    status = main(["new", str(playbook), *(rest if "--into" in rest else [*rest, "--into", str(into)])])
    out, err = capsys.readouterr()
    assert status == 2, out + err
    assert out == "" and len(err.strip().splitlines()) == 1 and says in err, err
    assert list(into.iterdir()) == [] and not (tmp_path / "missing").exists()


def test_an_existing_package_folder_is_left_alone(tmp_path: Path) -> None:
    """As a user runs it: exit 2, one line, no traceback, the folder untouched."""
    (tmp_path / "redis_primary_loss").mkdir()
    (tmp_path / "redis_primary_loss" / "mine.txt").write_text("keep", encoding="utf-8")
    proc = run_gameday("new", str(REDIS), "--into", str(tmp_path))
    assert proc.returncode == 2 and "exists" in proc.stderr and "Traceback" not in proc.stderr
    assert [p.name for p in (tmp_path / "redis_primary_loss").iterdir()] == ["mine.txt"]
