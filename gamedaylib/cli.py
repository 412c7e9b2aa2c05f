"""The `gameday` command line. Only this module turns errors into exit statuses.

Exit statuses of `gameday run`: 0 = ran to the end and every measured target was met;
1 = ran to the end and at least one target was missed; 2 = could not run or was aborted.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any

from gamedaylib.exceptions import GamedayError, InvalidParameters


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gameday",
        description="Run chaos gamedays as measurable runbooks (GAMEDAY-001: NATS partition).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from gamedaylib.lab.cli import add_lab_parser

    add_lab_parser(sub)
    add_run_parser(sub)
    add_history_parser(sub)
    add_archive_parser(sub)
    return parser


def add_run_parser(sub: Any) -> None:
    run = sub.add_parser(
        "run",
        help="run the gameday notebook headless (Papermill) and archive it",
        description="Execute notebooks/nats_partition_gameday.ipynb with Papermill against the lab or a "
        "cluster, and write the archive. The last line on stdout is the archive folder. "
        "Exit 0 = every measured target met, 1 = a target missed, 2 = invalid, aborted or interrupted.",
    )
    run.add_argument("--target", choices=None, default=None, help="lab | kubernetes (default lab)")
    run.add_argument("--profile", default=None, help="rehearsal | full (default rehearsal)")
    run.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                     help="set a parameter (value read as YAML); repeatable")
    run.add_argument("--params", metavar="FILE.yaml", help="parameters from a YAML file (-p wins)")
    run.add_argument("--output-dir", default="outputs", metavar="DIR", help="archive root (default outputs)")
    run.set_defaults(handler=cmd_run)


def add_history_parser(sub: Any) -> None:
    hist = sub.add_parser("history", help="one row per archived run, newest last")
    hist.add_argument("--output-dir", default="outputs", metavar="DIR")
    hist.set_defaults(handler=cmd_history)


def add_archive_parser(sub: Any) -> None:
    arc = sub.add_parser(
        "archive",
        help="complete a live run's archive with the saved notebook and report.html",
        description="After a live session in JupyterLab, save the notebook and run this: it copies the "
        "saved notebook (outputs and the team's answers, secrets masked) into the archive as "
        "runbook.ipynb and renders report.html from it. `gameday run` does this by itself.",
    )
    arc.add_argument("archive_dir", metavar="ARCHIVE_DIR", help="the folder the runbook's last cell printed")
    arc.add_argument("--notebook", default=None, metavar="SAVED.ipynb",
                     help="the notebook as saved after the live run (default: this project's "
                     "notebooks/nats_partition_gameday.ipynb)")
    arc.set_defaults(handler=cmd_archive)


def cmd_archive(args: argparse.Namespace) -> int:
    from gamedaylib import archive

    archive_dir = Path(args.archive_dir)
    saved = Path(args.notebook) if args.notebook else archive.notebook_path()
    html = archive.complete_live_archive(archive_dir, saved)
    print(f"gameday: wrote {archive_dir / archive.RUNBOOK_FILE} and {html}", file=sys.stderr)
    print(archive_dir, flush=True)
    return 0


def _raw_params(args: argparse.Namespace) -> dict[str, Any]:
    from gamedaylib.parameters import load_params_file, parse_assignment

    raw: dict[str, Any] = load_params_file(args.params) if args.params else {}
    for item in args.param:
        name, value = parse_assignment(item)
        raw[name] = value
    if args.target is not None:
        raw["target"] = args.target
    if args.profile is not None:
        raw["profile"] = args.profile
    return raw


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def cmd_run(args: argparse.Namespace) -> int:
    """Validate, start the lab if needed, execute, heal from outside, archive; print the folder."""
    from gamedaylib import archive
    from gamedaylib.journal import Journal
    from gamedaylib.parameters import new_run_id, validate
    from gamedaylib.playbook import GAMEDAY_ID

    output_dir = Path(args.output_dir).resolve()
    raw: dict[str, Any] = {}
    try:
        raw = _raw_params(args)
        raw.setdefault("run_id", "")
        if not raw["run_id"]:
            raw["run_id"] = new_run_id()
        gameday_id = raw.get("gameday_id") if isinstance(raw.get("gameday_id"), str) else GAMEDAY_ID
        archive_dir = output_dir / str(gameday_id or GAMEDAY_ID) / str(raw["run_id"])
        raw["archive_dir"] = str(archive_dir)
        if isinstance(raw.get("lab_dir"), str):
            raw["lab_dir"] = str(Path(raw["lab_dir"]).resolve())
        params = validate(raw)
        params["lab_dir"] = str(Path(params["lab_dir"]).resolve())
    except InvalidParameters as exc:
        return _invalid(exc, raw, output_dir)
    archive_dir = Path(params["archive_dir"])
    archive_dir.mkdir(parents=True, exist_ok=True)
    journal = Journal(archive_dir / archive.JOURNAL_FILE)
    from gamedaylib import safety

    safety.record_runner(journal)
    for orphan in safety.mark_orphaned_runs(output_dir, exclude=archive_dir):
        print(f"gameday: marked run {orphan.run_id} aborted: {orphan.reason}", file=sys.stderr)

    previous = {s: signal.signal(s, _interrupt) for s in (signal.SIGTERM, signal.SIGINT)}
    lab = None
    execution = archive.Execution(completed=False, reason="did not start")
    try:
        try:
            safety.check_before_run(params)  # production guard, one gameday at a time: no side effect yet
            lab = _ensure_lab(params, journal)
        except InvalidParameters as exc:
            journal.record("params.invalid", problems=exc.problems)
            print(f"gameday: {exc}", file=sys.stderr)
            execution = archive.Execution(False, str(exc))
            return _close_run(archive_dir, params, execution, journal, lab, exit_status=2)
        except GamedayError as exc:
            journal.record("error", error=type(exc).__name__, message=str(exc))
            print(f"gameday: {exc}", file=sys.stderr)
            execution = archive.Execution(False, f"{type(exc).__name__}: {exc}")
            return _close_run(archive_dir, params, execution, journal, lab, exit_status=2)
        print(f"gameday: running {params['gameday_id']} run {params['run_id']} "
              f"({params['target']}, {params['profile']}) into {archive_dir}", file=sys.stderr, flush=True)
        execution = archive.execute(params, archive_dir)
        return _close_run(archive_dir, params, execution, journal, lab)
    except KeyboardInterrupt:
        execution = archive.Execution(False, "interrupted (SIGINT/SIGTERM)")
        return _close_run(archive_dir, params, execution, journal, lab, exit_status=2)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _ensure_lab(params: dict[str, Any], journal: Any) -> Any:
    """The lab a run uses: a running one (knobs must match) or one started here (stopped at the end)."""
    if params["target"] != "lab" or params["dry_run"]:
        return None
    from gamedaylib.lab.client import Lab
    from gamedaylib.targets.lab import check_knobs, lab_knobs

    lab = Lab(params["lab_dir"])
    knobs = lab_knobs(params)
    if lab.is_up():
        check_knobs(knobs, lab.status().get("knobs") or {})
        journal.record("note", note=f"using the running lab in {params['lab_dir']}")
        return None
    print(f"gameday: starting a lab in {params['lab_dir']}", file=sys.stderr, flush=True)
    lab.up(knobs)
    journal.record("note", note=f"started a lab in {params['lab_dir']} with {knobs}")
    return lab


def _heal_from_outside(params: dict[str, Any], journal: Any) -> None:
    """Heal again from outside the kernel, whatever the notebook did."""
    from gamedaylib.safety import requested_partition

    if params["dry_run"] or not requested_partition(journal.entries()):
        return  # never heal a fault this run did not ask for (it may be another run's)
    if params["target"] == "lab":
        from gamedaylib.lab.client import Lab
        from gamedaylib.targets.lab import LabTarget

        if not Lab(params["lab_dir"]).is_up():
            return
        target: Any = LabTarget(params["lab_dir"], start=False)
    else:
        from gamedaylib.targets.kubernetes import KubernetesTarget

        target = KubernetesTarget.from_params(params)
    try:
        healed = target.heal()
        if healed is not None:
            journal.record("partition.healed", at=healed.isoformat(), by="gameday run (outside the kernel)")
    finally:
        target.close()


def _close_run(
    archive_dir: Path, params: dict[str, Any], execution: Any, journal: Any, lab: Any, exit_status: int | None = None
) -> int:
    from gamedaylib import archive

    for s in (signal.SIGTERM, signal.SIGINT):  # a second signal must not stop the heal or the archive
        signal.signal(s, signal.SIG_IGN)
    try:
        try:
            _heal_from_outside(params, journal)
        except GamedayError as exc:
            journal.record("error", error=type(exc).__name__, message=f"heal from outside failed: {exc}")
            print(f"gameday: heal from outside failed: {exc}", file=sys.stderr)
        card = archive.finalize(archive_dir, params, execution)
        archive.render_archive_html(archive_dir)
    finally:
        if lab is not None:
            lab.down()
    verdict = card["verdict"]
    if not execution.completed:
        print(f"gameday: aborted: {execution.reason}", file=sys.stderr)
    print(f"gameday: verdict {verdict}", file=sys.stderr)
    for m in card["metrics"]:
        print(f"  {m['name']:<24} {m['status']:<13} {m['value']}", file=sys.stderr)
    dry_run_walked = params.get("dry_run") and execution.completed and verdict != "aborted"
    if dry_run_walked:
        print("gameday: dry run: every phase walked, nothing applied and nothing measured "
              "(hence the verdict); exit 0", file=sys.stderr)
    print(archive_dir, flush=True)
    if exit_status is not None:
        return exit_status
    if dry_run_walked:
        return 0
    return {"pass": 0, "fail": 1}.get(verdict, 2)


def _invalid(exc: InvalidParameters, raw: dict[str, Any], output_dir: Path) -> int:
    """Exit 2 naming the parameter; an archive marked aborted whose journal shows nothing applied."""
    from gamedaylib import archive
    from gamedaylib.journal import Journal
    from gamedaylib.parameters import PROFILES, TARGETS, new_run_id, redact
    from gamedaylib.playbook import GAMEDAY_ID

    run_id = raw.get("run_id") if isinstance(raw.get("run_id"), str) and raw.get("run_id") else new_run_id()
    archive_dir = output_dir / GAMEDAY_ID / os.path.basename(str(run_id))
    archive_dir.mkdir(parents=True, exist_ok=True)
    journal = Journal(archive_dir / archive.JOURNAL_FILE)
    journal.record("params.invalid", problems=exc.problems)
    minimal = {
        "run_id": run_id,
        "gameday_id": GAMEDAY_ID,
        "target": raw.get("target") if raw.get("target") in TARGETS else "lab",
        "profile": raw.get("profile") if raw.get("profile") in tuple(PROFILES) else "rehearsal",  # may be unhashable
    }
    card = archive.finalize(archive_dir, minimal, archive.Execution(False, str(exc)))
    import yaml

    (archive_dir / archive.PARAMS_FILE).write_text(
        yaml.safe_dump({"invalid": exc.problems, "given": redact(raw)}, sort_keys=True), encoding="utf-8"
    )
    archive.render_archive_html(archive_dir)
    print(f"gameday: {exc}", file=sys.stderr)
    print(f"gameday: verdict {card['verdict']} (nothing was applied)", file=sys.stderr)
    print(archive_dir, flush=True)
    return 2


def cmd_history(args: argparse.Namespace) -> int:
    from gamedaylib import archive
    from gamedaylib.safety import mark_orphaned_runs

    output_dir = Path(args.output_dir)
    for orphan in mark_orphaned_runs(output_dir):
        print(f"gameday: marked run {orphan.run_id} aborted: {orphan.reason}", file=sys.stderr)
    runs = archive.list_runs(output_dir)
    if not runs:
        print(f"no archived runs under {output_dir}")
        return 0
    print(archive.history_table(runs))
    chart = archive.history_chart(runs, output_dir / "history.png")
    if chart is not None:
        print(f"chart: {chart}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except GamedayError as exc:
        print(f"gameday: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gameday: interrupted", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
