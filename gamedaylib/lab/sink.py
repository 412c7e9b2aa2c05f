"""The lab's webhook sink: a stand-in for Slack, a status page or an Alertmanager webhook receiver.

``POST /<anything>`` appends ``{"ts", "path", "body"}`` (body decoded as JSON when it is JSON, else
text) to ``<lab_dir>/sink/posts.jsonl``; ``GET /posts`` returns every post as a JSON list (optional
``?path=/prefix`` filter); ``GET /healthz`` answers ``{"status": "ok"}``.

Run: ``python -m gamedaylib.lab.sink --lab-config <lab_dir>/config.json``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aiohttp import web

from gamedaylib.lab.service import LabConfig, main_for, serve_app

log = logging.getLogger("gamedaylib.lab.sink")

POSTS_FILE = Path("sink") / "posts.jsonl"
POSTS_KEY: web.AppKey[Path] = web.AppKey("posts_path", Path)


def posts_path(lab_dir: str | Path) -> Path:
    return Path(lab_dir) / POSTS_FILE


def read_posts(lab_dir: str | Path, path_prefix: str = "") -> list[dict[str, Any]]:
    """Every post the sink received, oldest first (optionally only those under ``path_prefix``)."""
    try:
        lines = posts_path(lab_dir).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    posts = [json.loads(line) for line in lines if line.strip()]
    return [p for p in posts if p["path"].startswith(path_prefix)]


async def _receive(request: web.Request) -> web.Response:
    raw = await request.read()
    text = raw.decode("utf-8", "replace")
    try:
        body: Any = json.loads(text) if text else None
    except json.JSONDecodeError:
        body = text
    entry = {"ts": datetime.now(timezone.utc).isoformat(), "path": request.path, "body": body}
    # a tiny append, done on the event loop so that concurrent posts never interleave
    with open(request.app[POSTS_KEY], "a", encoding="utf-8") as fh:  # noqa: ASYNC230
        fh.write(json.dumps(entry, sort_keys=True) + "\n")
        fh.flush()
    log.info("POST %s (%d bytes)", request.path, len(raw))
    return web.json_response({"ok": True})


async def _posts(request: web.Request) -> web.Response:
    lab_dir = request.app[POSTS_KEY].parent.parent
    return web.json_response(read_posts(lab_dir, request.query.get("path", "")))


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def make_app(lab_dir: str | Path) -> web.Application:
    path = posts_path(lab_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app[POSTS_KEY] = path
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/posts", _posts)
    app.router.add_post("/{tail:.*}", _receive)
    return app


async def serve(config: LabConfig, stop: asyncio.Event) -> None:
    await serve_app(make_app(config.lab_dir), config.port("sink"), stop)


def main(argv: list[str] | None = None) -> int:
    return main_for("sink", serve, argv)


if __name__ == "__main__":
    raise SystemExit(main())
