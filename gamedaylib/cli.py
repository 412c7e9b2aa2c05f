"""The `gameday` command line. Only this module turns errors into exit statuses.

Exit statuses of `gameday run`: 0 = ran to the end and every measured target was met; 1 = the system
under test missed a target (a stop condition it fired included); 2 = the run could not judge the
system (invalid parameters, refused, pre-flight failed, measurement blind, interrupted, tool error).
A run refused before it started (invalid parameters, the production guard, a lab another gameday
holds, knobs that differ from the running lab's) writes no archive.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from gamedaylib import __version__, gamedays
from gamedaylib.exceptions import GamedayError, InvalidParameters

__all__ = ["build_parser", "main"]

EPILOG_EXITS = ("exit status: 0 every measured target met; 1 the system under test missed a target (a stop "
                "condition it fired included); 2 the run could not judge it (invalid parameters, refused, "
                "pre-flight failed, measurement blind, interrupted, tool error)")


class _ParamsHelp(argparse.Action):
    """``--help`` that lists every parameter of the gameday named by an earlier ``--gameday`` (the
    default one otherwise), built only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        try:
            text = parameters_help(getattr(namespace, "gameday", None) or gamedays.DEFAULT_GAMEDAY)
        except InvalidParameters as exc:
            parser.error(str(exc))
        parser.epilog = text + "\n\n" + EPILOG_EXITS
        parser.print_help()
        parser.exit()


def parameters_help(gameday_id: str) -> str:
    """Every parameter of one gameday (name, default or each profile's, help), by section."""
    from gamedaylib.parameters import help_lines

    scenario = gamedays.scenario(gameday_id)
    others = [i for i in gamedays.gameday_ids() if i != scenario.id]
    lines = [(f"parameters of {scenario.id} ({scenario.title}): -p NAME=VALUE, or a YAML mapping in --params "
              "FILE; -p wins, mappings are merged key by key. Profile-dependent defaults show rehearsal / full."),
             ""]
    lines += help_lines(scenario.params)
    if others:
        lines += ["", "Other gamedays' parameters: " + ", ".join(f"gameday run --gameday {i} --help" for i in others)]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gameday",
        description="Chaos gamedays as interactive, measurable, repeatable runbooks. `gameday list` shows "
        "the gamedays this installation has.",
    )
    parser.add_argument("--version", action="version", version=f"gameday {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from gamedaylib.authoring.cli import add_new_parser
    from gamedaylib.lab.cli import add_lab_parser

    add_run_parser(sub)
    add_live_parser(sub)
    add_list_parser(sub)
    add_archive_parser(sub)
    add_history_parser(sub)
    add_compare_parser(sub)
    add_lab_parser(sub)
    add_new_parser(sub)
    return parser


def _add_params_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gameday", default=None, metavar="ID", help=f"which gameday (default {gamedays.DEFAULT_GAMEDAY}; "
                   "gameday list)")
    p.add_argument("--target", default=None, help="lab | kubernetes (default lab)")
    p.add_argument("--profile", default=None, help="rehearsal | full (default rehearsal)")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                   help="set a parameter (value read as YAML); repeatable")
    p.add_argument("--params", metavar="FILE.yaml", help="parameters from a YAML file (-p wins)")
    p.add_argument("--output-dir", default="outputs", metavar="DIR", help="archive root (default outputs)")


def add_run_parser(sub: Any) -> None:
    run = sub.add_parser(
        "run", add_help=False,
        help="run a gameday headless (Papermill) and archive it",
        description="Execute the gameday's notebook with Papermill against the lab or a cluster and write "
        "the archive (outputs/<gameday_id>/<run_id>/). The last line on stdout is the archive folder. "
        "--help lists every parameter.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("-h", "--help", action=_ParamsHelp, help="show this help with every parameter, and exit")
    _add_params_options(run)
    run.set_defaults(handler=cmd_run)


def add_live_parser(sub: Any) -> None:
    live = sub.add_parser(
        "live",
        help="prepare a live session: a parameterized copy of the notebook in its run folder, opened in JupyterLab",
        description="Validate the parameters, create the run's archive folder with a parameterized copy of "
        "the gameday's notebook (runbook.ipynb; the tracked notebook is never run in place), bring the lab "
        "up when the target is the lab (it stays up: `gameday lab down` after), and open JupyterLab on the "
        "copy. After the session: save the notebook, then `gameday archive <folder>`.",
    )
    _add_params_options(live)
    live.add_argument("--launcher", default="jupyter lab", metavar="COMMAND",
                      help="the command that opens the notebook (default 'jupyter lab'; the path is appended)")
    live.add_argument("--no-launch", action="store_true", help="prepare only; print the notebook's path")
    live.set_defaults(handler=cmd_live)


def add_list_parser(sub: Any) -> None:
    lst = sub.add_parser("list", help="the gamedays this installation has")
    lst.add_argument("--json", action="store_true", help="a JSON list of {id, title, notebook, playbook}")
    lst.set_defaults(handler=cmd_list)


def add_archive_parser(sub: Any) -> None:
    arc = sub.add_parser(
        "archive",
        help="complete a live run's archive with the saved notebook and report.html",
        description="After a live session in JupyterLab, save the notebook and run this: it masks secrets in "
        "the saved notebook, keeps it in the archive as runbook.ipynb and renders report.html from it. "
        "`gameday run` does this by itself.",
    )
    arc.add_argument("archive_dir", metavar="ARCHIVE_DIR", help="the folder the runbook's last cell printed")
    arc.add_argument("--notebook", default=None, metavar="SAVED.ipynb",
                     help="the notebook as saved after the live run (default: ARCHIVE_DIR/runbook.ipynb, "
                     "the copy `gameday live` prepared)")
    arc.set_defaults(handler=cmd_archive)


def add_history_parser(sub: Any) -> None:
    hist = sub.add_parser("history", help="one row per archived run that started, newest last",
                          description="One row per archived run that started, newest last; outputs/history.png "
                          "charts RTO, RPO and loss with their targets.")
    hist.add_argument("--output-dir", default="outputs", metavar="DIR")
    fmt = hist.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="a JSON list of runs")
    fmt.add_argument("--csv", action="store_true", help="CSV, one row per run")
    hist.add_argument("--gameday", metavar="ID", help="only this gameday")
    hist.add_argument("--target", help="only this target (lab | kubernetes)")
    hist.add_argument("--verdict", help="only this verdict (pass | fail | aborted)")
    hist.add_argument("--since", metavar="ISO-DATE", help="only runs started at or after (e.g. 2026-12-01)")
    hist.add_argument("--all", action="store_true", help="also folders of runs that never started")
    hist.set_defaults(handler=cmd_history)


def add_compare_parser(sub: Any) -> None:
    cmp_ = sub.add_parser("compare", help="two archived runs' metrics side by side with the change")
    cmp_.add_argument("run_a", metavar="RUN_A", help="an archive folder or a run id")
    cmp_.add_argument("run_b", metavar="RUN_B", help="an archive folder or a run id")
    cmp_.add_argument("--output-dir", default="outputs", metavar="DIR", help="where run ids are looked up")
    cmp_.add_argument("--json", action="store_true")
    cmp_.set_defaults(handler=cmd_compare)


# -- parameters from the command line ----------------------------------------------------------------


def _raw_params(args: argparse.Namespace) -> dict[str, Any]:
    from gamedaylib.parameters import load_params_file, merge, parse_assignment

    raw: dict[str, Any] = load_params_file(args.params) if args.params else {}
    given: dict[str, Any] = {}
    for item in args.param:
        name, value = parse_assignment(item)
        given = merge(given, {name: value})
    raw = merge(raw, given)
    for flag, name in (("target", "target"), ("profile", "profile"), ("gameday", "gameday_id")):
        if getattr(args, flag, None) is not None:
            raw[name] = getattr(args, flag)
    raw.setdefault("gameday_id", gamedays.DEFAULT_GAMEDAY)
    return raw


def _validated(args: argparse.Namespace) -> tuple[Any, Any]:
    """The scenario and its validated parameters, with the run id and archive folder fixed, and every
    refusal that needs no side effect checked. Writes nothing."""
    from gamedaylib.parameters import new_run_id, validate
    from gamedaylib.run import check_can_start, resolve_paths

    raw = _raw_params(args)
    scenario = gamedays.scenario(str(raw["gameday_id"]))
    if not raw.get("run_id"):
        raw["run_id"] = new_run_id()
    if isinstance(raw.get("lab_dir"), str):
        raw["lab_dir"] = str(Path(raw["lab_dir"]).resolve())
    output_dir = Path(args.output_dir).resolve()
    raw["archive_dir"] = str(output_dir / scenario.id / os.path.basename(str(raw["run_id"])))
    params = validate(scenario.params, resolve_paths(raw))
    check_can_start(params)
    _check_running_lab(params, scenario)
    return scenario, params


def _check_running_lab(params: Any, scenario: Any) -> None:
    """Knobs that differ from those of a lab already up are refused before anything is written."""
    if params.target != "lab" or params.dry_run:
        return
    from gamedaylib.lab.client import Lab
    from gamedaylib.lab.knobs import check_knobs, knobs_of

    lab = Lab(params.lab_dir)
    if lab.is_up():
        check_knobs(knobs_of(params, scenario.knobs), lab.status().get("knobs") or {})


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# -- run -------------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    """Validate, start the lab if needed, execute, heal from outside, archive; print the folder."""
    from gamedaylib import notebook, orphans
    from gamedaylib.journal import JOURNAL_FILE, Journal
    from gamedaylib.parameters import as_dict
    from gamedaylib.run import record_runner

    scenario, params = _validated(args)  # InvalidParameters and refusals: exit 2, nothing written
    output_dir = Path(args.output_dir).resolve()
    archive_dir = Path(params.archive_dir)
    archive_dir.mkdir(parents=True, exist_ok=True)
    journal = Journal(archive_dir / JOURNAL_FILE)
    record_runner(journal)
    for orphan in orphans.mark_orphaned_runs(output_dir, exclude=archive_dir):
        print(f"gameday: marked run {orphan.run_id} aborted: {orphan.reason}", file=sys.stderr)
    previous = {s: signal.signal(s, _interrupt) for s in (signal.SIGTERM, signal.SIGINT)}
    lab = None
    completed, reason = False, "did not start"
    try:
        try:
            lab = _ensure_lab(params, scenario, journal)
        except GamedayError as exc:
            journal.record("error", error=type(exc).__name__, message=str(exc))
            print(f"gameday: {exc}", file=sys.stderr)
            return _close_run(scenario, params, False, f"{type(exc).__name__}: {exc}", journal, lab, exit_status=2)
        print(f"gameday: running {params.gameday_id} run {params.run_id} ({params.target}, {params.profile}) "
              f"into {archive_dir}", file=sys.stderr, flush=True)
        execution = notebook.execute(as_dict(params), archive_dir, scenario.notebook)
        completed, reason = execution.completed, execution.reason
        return _close_run(scenario, params, completed, reason, journal, lab)
    except KeyboardInterrupt:
        return _close_run(scenario, params, False, "interrupted (SIGINT/SIGTERM)", journal, lab, exit_status=2)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _ensure_lab(params: Any, scenario: Any, journal: Any) -> Any:
    """The lab a run uses: a running one (knobs checked before) or one started here (stopped at the end)."""
    if params.target != "lab" or params.dry_run:
        return None
    from gamedaylib.lab.client import Lab
    from gamedaylib.lab.knobs import knobs_of

    lab = Lab(params.lab_dir)
    if lab.is_up():
        journal.record("note", note=f"using the running lab in {params.lab_dir}")
        return None
    knobs = knobs_of(params, scenario.knobs)
    print(f"gameday: starting a lab in {params.lab_dir}", file=sys.stderr, flush=True)
    lab.up(knobs)
    journal.record("note", note=f"started a lab in {params.lab_dir} with {knobs}")
    return lab


def _heal_from_outside(scenario: Any, params: Any, journal: Any) -> None:
    """End the fault again from outside the kernel, whatever the notebook did (only a fault this run
    asked for: a run refused because another holds the target must not end the other's fault)."""
    if params.dry_run or not any(e.get("kind") == "fault.requested" for e in journal.entries()):
        return
    from gamedaylib.parameters import as_dict

    if params.target == "lab":
        from gamedaylib.lab.client import Lab
        from gamedaylib.targets.lab import LabTarget

        if not Lab(params.lab_dir).is_up():
            return
        target: Any = LabTarget(params.lab_dir, start=False)
    else:
        from gamedaylib.targets.kubernetes import KubernetesTarget

        target = KubernetesTarget.from_params(as_dict(params))
    try:
        healed = scenario.make_fault(target, params).heal()
        if healed is not None:
            journal.record("fault.healed", at=healed.isoformat(), by="gameday run (outside the kernel)")
    finally:
        target.close()


def _close_run(scenario: Any, params: Any, completed: bool, reason: str, journal: Any, lab: Any,
               exit_status: int | None = None) -> int:
    from gamedaylib import archive
    from gamedaylib.parameters import as_dict
    from gamedaylib.report import render_archive_html

    archive_dir = Path(params.archive_dir)
    for s in (signal.SIGTERM, signal.SIGINT):  # a second signal must not stop the heal or the archive
        signal.signal(s, signal.SIG_IGN)
    try:
        try:
            _heal_from_outside(scenario, params, journal)
        except GamedayError as exc:
            journal.record("error", error=type(exc).__name__, message=f"heal from outside failed: {exc}")
            print(f"gameday: heal from outside failed: {exc}", file=sys.stderr)
        card = archive.finalize(archive_dir, as_dict(params), completed, reason, scenario.playbook,
                                targets=params.targets())
        render_archive_html(archive_dir, scenario.notebook)
    finally:
        if lab is not None:
            lab.down()
    verdict = card["verdict"]
    if not completed:
        print(f"gameday: aborted: {reason}", file=sys.stderr)
    elif card.get("stopped_by"):
        print(f"gameday: stopped early: {card['stopped_by'].get('words')}", file=sys.stderr)
    print(f"gameday: verdict {verdict}", file=sys.stderr)
    for m in card["metrics"]:
        print(f"  {m['name']:<24} {m['status']:<13} {m['value']}", file=sys.stderr)
    dry_run_walked = params.dry_run and completed and verdict != "aborted"
    if dry_run_walked:
        print("gameday: dry run: every phase walked, nothing applied and nothing measured (hence the verdict); "
              "exit 0", file=sys.stderr)
    print(archive_dir, flush=True)
    if exit_status is not None:
        return exit_status
    if dry_run_walked:
        return 0
    return {"pass": 0, "fail": 1}.get(verdict, 2)


# -- live, list, archive -------------------------------------------------------------------------------


def cmd_live(args: argparse.Namespace) -> int:
    """The run's folder with a parameterized copy of the notebook; the lab up; JupyterLab opened on it."""
    from gamedaylib.archive import RUNBOOK_FILE
    from gamedaylib.notebook import prepare_live_copy
    from gamedaylib.parameters import as_dict

    scenario, params = _validated(args)
    archive_dir = Path(params.archive_dir)
    values = as_dict(params)
    values["live"] = None  # the kernel tells: live in JupyterLab
    if params.target == "lab" and not params.dry_run:
        from gamedaylib.lab.client import Lab
        from gamedaylib.lab.knobs import knobs_of

        lab = Lab(params.lab_dir)
        if not lab.is_up():
            print(f"gameday: starting a lab in {params.lab_dir} (it stays up: `gameday lab down --lab-dir "
                  f"{params.lab_dir}` after the session)", file=sys.stderr, flush=True)
            lab.up(knobs_of(params, scenario.knobs))
    archive_dir.mkdir(parents=True, exist_ok=True)
    copy = prepare_live_copy(scenario.notebook, archive_dir / RUNBOOK_FILE, values)
    print(f"gameday: {scenario.id} live copy (run {params.run_id}): {copy}", file=sys.stderr)
    print(f"gameday: after the session, save the notebook and run: gameday archive {archive_dir}", file=sys.stderr)
    if not args.no_launch:
        command = [*shlex.split(args.launcher), str(copy)]
        print(f"gameday: opening {' '.join(command)}", file=sys.stderr, flush=True)
        status = subprocess.call(command, cwd=str(archive_dir))
        if status != 0:
            print(f"gameday: {command[0]} exited with status {status}", file=sys.stderr)
            return 2
    print(copy, flush=True)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    found = [s.describe() for s in gamedays.scenarios()]
    for problem in gamedays.problems():  # a broken plug-in: one line each, the others still listed
        print(f"gameday: {problem}", file=sys.stderr)
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    for g in found:
        print(f"{g['id']}  {g['title']}\n  notebook: {g['notebook']}\n  playbook: {g['playbook']}")
    return 0


def cmd_archive(args: argparse.Namespace) -> int:
    from gamedaylib.archive import RUNBOOK_FILE
    from gamedaylib.report import complete_live_archive

    archive_dir = Path(args.archive_dir)
    saved = Path(args.notebook) if args.notebook else archive_dir / RUNBOOK_FILE
    html = complete_live_archive(archive_dir, saved)
    print(f"gameday: wrote {archive_dir / RUNBOOK_FILE} and {html}", file=sys.stderr)
    print(archive_dir, flush=True)
    return 0


# -- history, compare ---------------------------------------------------------------------------------


def cmd_history(args: argparse.Namespace) -> int:
    from gamedaylib import history, orphans

    output_dir = Path(args.output_dir)
    for orphan in orphans.mark_orphaned_runs(output_dir):
        print(f"gameday: marked run {orphan.run_id} aborted: {orphan.reason}", file=sys.stderr)
    since = None
    if args.since:
        try:
            since = datetime.fromisoformat(args.since)
        except ValueError as exc:
            raise InvalidParameters({"--since": f"not an ISO date or time: {args.since!r}"}) from exc
        since = since if since.tzinfo else since.replace(tzinfo=timezone.utc)
    frame = history.runs(output_dir, gameday=args.gameday, target=args.target, verdict=args.verdict, since=since,
                         include_unstarted=args.all)
    if args.json:
        print(frame.to_json(orient="records", indent=2))
        return 0
    if args.csv:
        sys.stdout.write(frame.to_csv(index=False))
        return 0
    if frame.empty:
        print(f"no archived runs under {output_dir}")
        return 0
    print(history.table(frame, [m for m, _ in history.CHART_METRICS] + ["user_facing_errors"]))
    chart = history.chart(frame, output_dir / "history.png")
    if chart is not None:
        print(f"chart: {chart}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from gamedaylib import history

    output_dir = Path(args.output_dir)
    a, b = history.find_run(output_dir, args.run_a), history.find_run(output_dir, args.run_b)
    frame = history.compare(a, b)
    if args.json:
        print(frame.to_json(orient="records", indent=2))
        return 0
    print(f"A: {a}\nB: {b}\n")
    print(frame.to_string(index=False, na_rep="—"))
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
