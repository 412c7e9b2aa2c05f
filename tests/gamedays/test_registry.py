"""Gamedays are plug-ins: the built-in two are found through the entry point group ``gameday.gamedays``
as a team's own package is. A third-party distribution (its ``.dist-info`` with ``entry_points.txt``,
as pip writes it, on the path of a `gameday` process) shows in ``gameday list``; its broken entries are
one line each on stderr and hide nothing."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest
from runtools import GAMEDAY

from gamedaylib import gamedays
from gamedaylib.exceptions import InvalidParameters

REDIS_PLAYBOOK = Path(__file__).resolve().parents[1] / "authoring" / "playbooks" / "redis-failover.md"

# a gameday of one's own: its Scenario built from its written playbook (listing needs no more)
PLUGIN = '''
from pathlib import Path

from gamedaylib.authoring import markdown
from gamedaylib.parameters import RunParams
from gamedaylib.scenario import Scenario

HERE = Path(__file__).resolve().parent
PLAYBOOK = markdown.load(HERE / "playbook.md").to_playbook()


def _not_in_this_test(*args, **kwargs):
    raise NotImplementedError("this gameday is only listed")


SCENARIO = Scenario(
    playbook=PLAYBOOK, params=RunParams, phases={p: _not_in_this_test for p in PLAYBOOK.phase_ids},
    package_dir=HERE, notebook_name="redis_failover_gameday.ipynb", make_state=dict,
    make_reader=_not_in_this_test, make_fault=_not_in_this_test, tiles=lambda run, reading: [],
    fault_word="primary kill",
)
'''

ENTRY_POINTS = """\
[gameday.gamedays]
GAMEDAY-101 = acme_gamedays.redis_failover:SCENARIO
GAMEDAY-102 = acme_gamedays.broken:SCENARIO
GAMEDAY-103 = acme_gamedays.redis_failover:PLAYBOOK
GAMEDAY-104 = acme_gamedays.redis_failover:SCENARIO
GAMEDAY-001 = acme_gamedays.redis_failover:SCENARIO
"""


def _site(tmp_path: Path) -> Path:
    """A folder as pip leaves site-packages after installing ``acme-gamedays``."""
    site = tmp_path / "site"
    package = site / "acme_gamedays"
    (package / "redis_failover" / "monitoring").mkdir(parents=True)
    (package / "broken").mkdir()
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "redis_failover" / "__init__.py").write_text(PLUGIN, encoding="utf-8")
    (package / "redis_failover" / "playbook.md").write_text(REDIS_PLAYBOOK.read_text(encoding="utf-8"),
                                                           encoding="utf-8")
    (package / "broken" / "__init__.py").write_text("import acme_missing_dependency\n", encoding="utf-8")
    dist = site / "acme_gamedays-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-gamedays\nVersion: 1.0\n", encoding="utf-8")
    (dist / "entry_points.txt").write_text(ENTRY_POINTS, encoding="utf-8")
    return site


def _with(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONWARNINGS": "ignore"}
    return subprocess.run([GAMEDAY, *args], capture_output=True, text=True, timeout=120, cwd=str(site.parent),
                          env=env, check=False)


def test_the_built_in_gamedays_are_found_through_their_entry_points() -> None:
    assert gamedays.gameday_ids() == ("GAMEDAY-001", "GAMEDAY-002")
    assert [s.id for s in gamedays.scenarios()] == ["GAMEDAY-001", "GAMEDAY-002"]
    assert gamedays.problems() == []
    assert gamedays.scenario("GAMEDAY-002").package_dir.name == "postgres_failover"
    assert {d.parent.name for d in gamedays.monitoring_dirs()} == {"nats_partition", "postgres_failover"}
    with pytest.raises(InvalidParameters, match="unknown gameday 'GAMEDAY-999'; this installation has "
                                                "GAMEDAY-001, GAMEDAY-002"):
        gamedays.scenario("GAMEDAY-999")


def test_a_third_party_gameday_shows_in_gameday_list_and_its_broken_ones_are_one_line_each(tmp_path: Path) -> None:
    site = _site(tmp_path)
    listed = _with(site, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    found = {g["id"]: g for g in json.loads(listed.stdout)}
    assert list(found) == ["GAMEDAY-001", "GAMEDAY-002", "GAMEDAY-101"]
    assert found["GAMEDAY-101"]["title"] == "Redis Sentinel fails the session cache over to a replica"
    assert found["GAMEDAY-101"]["playbook"] == str(site / "acme_gamedays" / "redis_failover" / "playbook.md")
    assert found["GAMEDAY-001"]["title"] == "NATS message broker network partition"  # the built-in kept

    problems = listed.stderr.strip().splitlines()
    assert "Traceback" not in listed.stderr
    assert len(problems) == 4, listed.stderr
    text = "\n".join(problems)
    assert "GAMEDAY-001: registered twice" in text and "the second is ignored" in text
    assert ("gameday GAMEDAY-102 cannot be loaded from acme_gamedays.broken:SCENARIO (from acme-gamedays): "
            "ModuleNotFoundError: No module named 'acme_missing_dependency'") in text
    assert "gameday GAMEDAY-103 from acme_gamedays.redis_failover:PLAYBOOK (from acme-gamedays) is a Playbook, " \
           "not a gamedaylib.scenario.Scenario" in text
    assert "gameday GAMEDAY-104 from acme_gamedays.redis_failover:SCENARIO (from acme-gamedays) declares the id " \
           "'GAMEDAY-101'" in text

    plain = _with(site, "list")
    assert plain.returncode == 0 and "GAMEDAY-101  Redis Sentinel" in plain.stdout


def test_a_broken_plug_in_is_refused_by_name_when_asked_for(tmp_path: Path) -> None:
    site = _site(tmp_path)
    script = textwrap.dedent("""
        from gamedaylib import gamedays
        from gamedaylib.exceptions import InvalidParameters
        print(sorted(d.parent.name for d in gamedays.monitoring_dirs()))
        try:
            gamedays.scenario("GAMEDAY-102")
        except InvalidParameters as exc:
            print(exc)
    """)
    python = str(Path(GAMEDAY).parent / "python")
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([python, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=str(tmp_path), env=env, check=False)
    assert done.returncode == 0, done.stderr
    dirs, refusal = done.stdout.strip().splitlines()
    assert dirs == "['nats_partition', 'postgres_failover', 'redis_failover']"  # found without importing it
    assert refusal.startswith("invalid parameters: gameday_id: gameday GAMEDAY-102 cannot be loaded")


def test_without_its_entry_points_gameday_says_to_install_it_again(tmp_path: Path) -> None:
    """The package's code on the path without its installed metadata (a venv installed before the entry
    points were declared): no gameday, and every message says what to do."""
    (tmp_path / "gamedaylib").symlink_to(Path(gamedays.__file__).resolve().parents[1], target_is_directory=True)
    script = textwrap.dedent("""
        from gamedaylib import gamedays
        from gamedaylib.exceptions import InvalidParameters
        print(gamedays.gameday_ids(), gamedays.scenarios())
        print(gamedays.problems()[0])
        try:
            gamedays.scenario("GAMEDAY-001")
        except InvalidParameters as exc:
            print(exc)
    """)
    python = str(Path(GAMEDAY).parent / "python")
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([python, "-S", "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=str(tmp_path), env=env, check=False)
    assert done.returncode == 0, done.stderr
    empty, problem, refusal = done.stdout.strip().splitlines()
    assert empty == "() []"
    assert "no gameday is registered under the entry point group 'gameday.gamedays': install gameday again" in problem
    assert refusal.startswith("invalid parameters: gameday_id: unknown gameday 'GAMEDAY-001': no gameday is "
                              "registered") and "make install" in refusal
