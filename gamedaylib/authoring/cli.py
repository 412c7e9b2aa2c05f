"""``gameday new PLAYBOOK.md [--id ID] [--into DIR]``: a gameday package's skeleton from a written playbook."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_new_parser"]


def add_new_parser(sub: Any) -> None:
    new = sub.add_parser(
        "new",
        help="make a gameday package's skeleton from a written playbook (markdown)",
        description="Read PLAYBOOK.md (the seed's form: '### T+N minutes: Title' phases, Actions, Observations "
        "to Record, Success Criteria, a Success Metrics table, ...) and write DIR/<name>/ with the playbook, "
        "a declarations stub (gameday.yaml: phases, metrics with their parsed targets, each recorded by the "
        "team) and a notebook with one cell per phase quoting the playbook. A playbook that cannot be read "
        "is refused (exit 2, naming the heading) and nothing is written.",
    )
    new.add_argument("playbook", metavar="PLAYBOOK.md", help="the written playbook")
    new.add_argument("--id", default=None, metavar="ID", help="the gameday's id (default: the playbook's **ID**)")
    new.add_argument("--into", default=".", metavar="DIR",
                     help="the folder the package's folder is made in (default: the current one)")
    new.set_defaults(handler=cmd_new)


def cmd_new(args: argparse.Namespace) -> int:
    from gamedaylib.authoring import skeleton

    planned = skeleton.plan(args.playbook, gameday_id=args.id)  # every check before anything is written
    dest = skeleton.write(planned, args.into)
    print(f"gameday: wrote {planned.gameday_id} into {dest}: {', '.join(planned.names)}", file=sys.stderr)
    print(dest, flush=True)
    return 0
