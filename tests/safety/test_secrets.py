"""Secrets never reach the archive: a unique DSN password (``events_dsn_env``, Kubernetes target),
webhook URLs (``notify_webhook_env``, ``status_page_webhook_env``) and a token used by a shell step
are planted through the environment of a real run; the whole archive and the run's own output are
grepped for them."""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

import pytest
from runtools import cluster_endpoints
from safetytools import ROOT, SHORT, LabHandle, gameday, params_args, read_journal

sys.path.insert(0, str(ROOT / "tests" / "kubernetes"))
from fake_apiserver import FakeApiServer, pods_for_lab

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

NAMESPACE = "teei-gameday"


def _grep(root: Path, needles: dict[str, str]) -> list[str]:
    leaks = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        for what, needle in needles.items():
            if needle.encode() in data:
                leaks.append(f"{what} in {path.name}")
    return leaks


@pytest.mark.parametrize("target", ["kubernetes", "lab"])
def test_planted_secrets_never_appear_in_the_archive(lab: LabHandle, tmp_path: Path, target: str) -> None:
    lab.settle()
    tag = secrets.token_hex(8)
    password, hook, status_hook, token = (f"pw{tag}", f"hook{tag}", f"page{tag}", f"tok{tag}")
    sink = lab.state["sink_url"].rstrip("/")
    dsn = lab.state["events_dsn"].replace("postgresql://gameday@", f"postgresql://gameday:{password}@")
    env = {
        **os.environ, "PYTHONWARNINGS": "ignore",
        "SAFETY_EVENTS_DSN": dsn,
        "SAFETY_CHAT_HOOK": f"{sink}/hooks/{hook}",
        "SAFETY_STATUS_HOOK": f"{sink}/status/{status_hook}",
        "SAFETY_API_TOKEN": token,
    }
    common = {
        **SHORT,
        "notify_webhook_env": "SAFETY_CHAT_HOOK",
        "status_page_webhook_env": "SAFETY_STATUS_HOOK",
    }
    commands = ('commands={preflight: ["echo using token $SAFETY_API_TOKEN", '
                '"echo events at $SAFETY_EVENTS_DSN >&2", "echo hook $SAFETY_CHAT_HOOK"]}')
    out = tmp_path / "out"
    if target == "kubernetes":
        s = lab.state
        server = FakeApiServer(pods=pods_for_lab(lab.lab_dir, NAMESPACE), proxy_control_url=s["proxy_control_url"],
                               inject_delay=0.3, recover_delay=0.3)
        with server:
            kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig", namespace=NAMESPACE)
            proc = gameday("run", "--target", "kubernetes", *params_args({
                **common, "namespace": NAMESPACE, "kubeconfig": str(kubeconfig), "kube_context": "fake-cluster",
                **cluster_endpoints(s), "events_dsn_env": "SAFETY_EVENTS_DSN",
                "chaos_manifest": "",
            }), "-p", "nats_selector={app.kubernetes.io/name: nats}", "-p", commands, "--output-dir", str(out),
                env=env)
    else:
        proc = gameday("run", "-p", f"lab_dir={lab.lab_dir}", *params_args(common), "-p", commands,
                       "--output-dir", str(out), env=env)
    archive = Path(proc.stdout.strip().splitlines()[-1])
    entries = read_journal(archive)
    assert any(e["kind"] == "command" and e.get("returncode") == 0 for e in entries), "the shell steps ran"
    if target == "kubernetes":
        assert any(e["kind"] == "fault.active" for e in entries), proc.stderr[-3000:]
        assert any(e["kind"] == "check" and e["name"] == "events table reachable" and e["ok"] for e in entries), \
            "the DSN with the password was used"
    needles = {"DSN password": password, "webhook": hook, "status-page webhook": status_hook, "token": token}
    for name in ("runbook.ipynb", "report.html", "journal.jsonl", "params.yaml", "incident-report.md",
                 "scorecard.json", "samples.csv"):
        assert (archive / name).exists(), name
    leaks = _grep(archive, needles)
    leaks += [f"{what} on the run's {stream}" for stream, text in (("stdout", proc.stdout), ("stderr", proc.stderr))
              for what, needle in needles.items() if needle in text]
    assert leaks == []
