"""The lab's ground truth: every answer a simulated user got (``<lab_dir>/truth/answers.jsonl``).

One JSON object per line: ``{"ts": iso, "idempotency_key": str, "type": str, "status": int | null,
"error": str | null, "gateway": str | null}`` (status null = no answer, e.g. a connection error or
timeout; gateway = the replica that answered, ``gateway-N``, null without an answer). The users
process writes and flushes one line per answer; a reader may meet a torn last line while it writes,
and skips it. Any other unreadable line is an error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gamedaylib.exceptions import LabError

ANSWERS_FILE = Path("truth") / "answers.jsonl"


def answers_path(lab_dir: str | Path) -> Path:
    return Path(lab_dir) / ANSWERS_FILE


def read_answers(lab_dir: str | Path) -> list[dict[str, Any]]:
    """Every answer recorded so far, oldest first ([] before the first one)."""
    path = answers_path(lab_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise LabError(f"cannot read {path}: {exc}") from exc
    lines = text.split("\n")
    answers: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            answers.append(json.loads(line))
        except ValueError as exc:
            if number == len(lines):  # torn last line: being written right now
                break
            raise LabError(f"{path}:{number}: unreadable answer line: {exc}") from exc
    return answers
