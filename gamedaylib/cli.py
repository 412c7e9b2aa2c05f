"""The `gameday` command line. Only this module turns errors into exit statuses.

Exit statuses of `gameday run`: 0 = ran to the end and every measured target was met;
1 = ran to the end and at least one target was missed; 2 = could not run or was aborted.
"""

from __future__ import annotations

import argparse
import sys

from gamedaylib.exceptions import GamedayError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gameday",
        description="Run chaos gamedays as measurable runbooks (GAMEDAY-001: NATS partition).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from gamedaylib.lab.cli import add_lab_parser

    add_lab_parser(sub)
    return parser


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
