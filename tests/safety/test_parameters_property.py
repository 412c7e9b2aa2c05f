"""Bad parameters, property-based: wrong types, negative and huge numbers, unknown names, malformed
URLs and malformed YAML thrown at the parameter layer are all rejected with ``InvalidParameters``
naming the parameter (never another exception); through the command line they exit 2 with the name on
stderr and nothing happens: no archive, no lab, no fault, no notebook run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gamedaylib import cli, notebook
from gamedaylib.exceptions import InvalidParameters
from gamedaylib.gamedays.nats_partition.params import LAB_MAX_PARTITION_SECONDS, NatsPartitionParams
from gamedaylib.lab.client import Lab
from gamedaylib.parameters import (
    check_bool,
    check_env_name,
    check_fraction,
    check_int,
    check_number,
    check_run_id,
    check_str,
    check_url,
    load_params_file,
    parse_assignment,
    specs,
    validate,
)

P = NatsPartitionParams
SPECS = {name: spec for name, (_, spec) in specs(P).items()}
BOUNDED = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

NUMBERS = sorted(n for n, s in SPECS.items() if s.check in (check_number, check_int, check_fraction))
BOOLS = sorted(n for n, s in SPECS.items() if s.check is check_bool)
STRINGS = sorted(n for n, s in SPECS.items() if s.check in (check_str, check_url, check_env_name, check_run_id))
URLS = sorted(n for n, s in SPECS.items() if s.check is check_url)
LIMITS = {n: s.limit for n, s in SPECS.items() if s.limit is not None}

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**400), max_value=10**400),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20))
anything = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                         st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                        max_leaves=8)


def rejected(raw: dict[str, Any], name: str) -> InvalidParameters:
    with pytest.raises(InvalidParameters) as info:
        validate(P, raw)
    assert name in info.value.problems, info.value.problems
    assert name in str(info.value)
    return info.value


def test_the_kinds_of_parameters_are_all_covered() -> None:
    assert len(NUMBERS) >= 18 and len(BOOLS) >= 4 and len(STRINGS) >= 15 and len(URLS) == 5
    assert set(LIMITS) <= set(NUMBERS)


@BOUNDED
@given(raw=st.dictionaries(st.one_of(st.sampled_from(sorted(SPECS)), st.text(max_size=12)), anything, max_size=6))
def test_any_input_is_accepted_or_rejected_by_name_never_a_traceback(raw: dict[str, Any]) -> None:
    try:
        params = validate(P, raw)
    except InvalidParameters as exc:
        assert exc.problems and all(isinstance(k, str) for k in exc.problems)
        for name in exc.problems:
            assert name in str(exc)
    else:
        assert isinstance(params, NatsPartitionParams)


@BOUNDED
@given(name=st.sampled_from(NUMBERS), value=st.one_of(st.text(max_size=10), st.booleans(), st.lists(st.integers()),
                                                      st.dictionaries(st.text(), st.integers())))
def test_numbers_of_the_wrong_type(name: str, value: Any) -> None:
    rejected({name: value}, name)


@BOUNDED
@given(name=st.sampled_from(NUMBERS), value=st.one_of(
    st.floats(max_value=-1e-9), st.integers(max_value=-1), st.just(float("nan")), st.just(float("inf")),
    st.floats(min_value=1e13), st.integers(min_value=10**13, max_value=10**400)))
def test_negative_and_huge_numbers(name: str, value: Any) -> None:
    rejected({name: value}, name)


@BOUNDED
@given(name=st.sampled_from(BOOLS), value=st.one_of(st.text(max_size=8), st.integers(), st.none(), st.floats()))
def test_booleans_of_the_wrong_type(name: str, value: Any) -> None:
    rejected({name: value}, name)


@BOUNDED
@given(name=st.sampled_from(STRINGS), value=st.one_of(st.integers(), st.floats(), st.booleans(), st.none(),
                                                      st.lists(st.text(max_size=3), min_size=1)))
def test_strings_of_the_wrong_type(name: str, value: Any) -> None:
    rejected({name: value}, name)


@BOUNDED
@given(name=st.text(min_size=1, max_size=30).filter(lambda n: n not in SPECS))
def test_unknown_names(name: str) -> None:
    rejected({name: 1}, name)


host = st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z]{2,5})?", fullmatch=True)
malformed_urls = st.one_of(
    host,  # no scheme
    st.builds(lambda s, h: f"{s}://{h}", st.sampled_from(["ftp", "file", "javascript", "nats", "postgresql"]), host),
    st.sampled_from(["http://", "https://", "http:///path", "http://:8080", "//host/x", "http:host",
                     "http://h:0/"]),
    st.builds(lambda h, p: f"http://{h}:{p}", host, st.one_of(st.integers(min_value=65536), st.text(
        alphabet="abcxyz-", min_size=1, max_size=5))),
    st.builds(lambda h, c: f"http://{h}{c}x/", host, st.sampled_from([" ", "\n", "\t", "\x00", "\x7f"])),
)


@BOUNDED
@given(name=st.sampled_from(URLS), url=malformed_urls)
def test_malformed_urls(name: str, url: str) -> None:
    rejected({name: url}, name)


@BOUNDED
@given(url=malformed_urls)
def test_malformed_urls_inside_lists_and_mappings(url: str) -> None:
    rejected({"dashboards": {"NATS": url}}, "dashboards")
    rejected({"service_metrics": {"api-gateway": url}}, "service_metrics")
    rejected({"nats_monitor_urls": ["http://nats-0:8222", url]}, "nats_monitor_urls")


def test_the_limits_themselves() -> None:
    for name, (low, high) in LIMITS.items():
        over = int(high) + 1 if SPECS[name].check is check_int else high * 10
        rejected({name: over}, name)
        if low > 0:
            rejected({name: low / 2 if SPECS[name].check is not check_int else 0}, name)
    half = LAB_MAX_PARTITION_SECONDS / 2
    rejected({"partition_seconds": half + 1, "partition_safety_margin_seconds": half}, "partition_seconds")
    validate(P, {"partition_seconds": half + 1, "partition_safety_margin_seconds": half, "target": "kubernetes"})


malformed_yaml = st.sampled_from(["[1, 2", "{a: 1", "a: b: c", "'unterminated", "- x\n y: [", "{[}]", "&a [*a, *b]",
                                  "!!python/object:os.system x", "\t- 1", "%YAML 9.9\n---\n1"])


@BOUNDED
@given(name=st.sampled_from(sorted(SPECS)), text=malformed_yaml)
def test_malformed_yaml_values_name_the_parameter(name: str, text: str) -> None:
    try:
        _, value = parse_assignment(f"{name}={text}")
    except InvalidParameters as exc:
        assert name in exc.problems and name in str(exc)
        return
    # YAML that parses (a plain string, say) still has to pass validation
    try:
        validate(P, {name: value})
    except InvalidParameters as exc:
        assert name in exc.problems


@BOUNDED
@given(text=st.one_of(malformed_yaml, st.sampled_from(["- a\n- b\n", "42\n", "just text\n", "[1, 2]\n"])))
def test_malformed_params_files_are_rejected(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    path = tmp_path_factory.mktemp("p") / "params.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InvalidParameters) as info:
        load_params_file(str(path))
    assert "--params" in info.value.problems


CLI_CASES = [
    (["-p", "partition_seconds=1e12"], "partition_seconds"),
    (["-p", "sample_interval_seconds=1e-9"], "sample_interval_seconds"),
    (["-p", "prometheus_url=ftp://127.0.0.1:9090"], "prometheus_url"),
    (["-p", "nats_monitor_url=http://127.0.0.1:notaport"], "nats_monitor_url"),
    (["-p", "observations={buffering: [unclosed"], "observations"),
    (["-p", "stop_error_rate=1.5"], "stop_error_rate"),
    (["-p", "lab_buffer_capacity=-3"], "lab_buffer_capacity"),
    (["-p", "lab_retry=yes please"], "lab_retry"),
    (["-p", "partiton_seconds=12"], "partiton_seconds"),
    (["--profile", "chaos"], "profile"),
    (["--gameday", "GAMEDAY-999"], "gameday_id"),
]


@pytest.fixture
def tripwires(monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused run must not start a lab, cut a network or run the notebook: fail loudly if it tries."""

    def tripped(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a refused run went on")

    monkeypatch.setattr(Lab, "up", tripped)
    monkeypatch.setattr(Lab, "partition", tripped)
    monkeypatch.setattr(notebook, "execute", tripped)


@pytest.mark.parametrize(("args", "name"), CLI_CASES, ids=[n for _, n in CLI_CASES])
def test_the_command_line_refuses_bad_parameters_and_writes_nothing(
        args: list[str], name: str, tmp_path: Path, tripwires: None, capsys: pytest.CaptureFixture[str]) -> None:
    output_dir, lab_dir = tmp_path / "outputs", tmp_path / "lab"
    status = cli.main(["run", "-p", f"lab_dir={lab_dir}", *args, "--output-dir", str(output_dir)])
    out, err = capsys.readouterr()
    assert status == 2, err
    assert name in err and "Traceback" not in err
    assert out == ""  # no archive folder to print: none was made
    assert not output_dir.exists() and not lab_dir.exists()


def test_a_malformed_params_file_is_refused_the_same_way(tmp_path: Path, tripwires: None,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("partition_seconds: 12\nobservations: {replay: [\n", encoding="utf-8")
    status = cli.main(["run", "--params", str(bad), "-p", f"lab_dir={tmp_path / 'lab'}", "--output-dir",
                       str(tmp_path / "outputs")])
    err = capsys.readouterr().err
    assert status == 2 and "--params" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


@pytest.mark.timeout(120)
def test_the_installed_command_refuses_with_exit_2(tmp_path: Path) -> None:
    """The console script as a user runs it, from an empty directory."""
    gameday = str(Path(sys.executable).with_name("gameday"))
    proc = subprocess.run([gameday, "run", "-p", "partiton_seconds=12", "-p", f"lab_dir={tmp_path / 'lab'}"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=100, check=False,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "partiton_seconds" in proc.stderr and "did you mean 'partition_seconds'" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert list(tmp_path.iterdir()) == []  # no outputs/, no lab
