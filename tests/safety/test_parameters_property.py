"""Bad parameters, property-based: wrong types, negative and huge numbers, unknown names, malformed
URLs and malformed YAML thrown at the parameter layer are all rejected with ``InvalidParameters``
naming the parameter (never another exception); through the command line a handful exit 2 with the
name on stderr, and no partition is applied to a running lab."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetytools import LabHandle, gameday, read_journal

from gamedaylib.exceptions import InvalidParameters
from gamedaylib.parameters import SPECS, load_params_file, parse_assignment, validate
from gamedaylib.safety import LIMITS, URL_PARAMETERS

BOUNDED = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

NUMBERS = sorted(n for n, s in SPECS.items() if s.check.__name__ in ("_positive", "_non_negative", "_fraction",
                                                                       "_number", "_positive_int"))
BOOLS = sorted(n for n, s in SPECS.items() if s.check.__name__ == "_bool")
STRINGS = sorted(n for n, s in SPECS.items() if s.check.__name__ in ("_str", "_url", "_env_name", "_run_id"))

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**400), max_value=10**400),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20))
anything = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                         st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                        max_leaves=8)


def rejected(raw: dict[str, Any], name: str) -> InvalidParameters:
    with pytest.raises(InvalidParameters) as info:
        validate(raw)
    assert name in info.value.problems, info.value.problems
    assert name in str(info.value)
    return info.value


@BOUNDED
@given(raw=st.dictionaries(st.one_of(st.sampled_from(sorted(SPECS)), st.text(max_size=12)), anything, max_size=6))
def test_any_input_is_accepted_or_rejected_by_name_never_a_traceback(raw: dict[str, Any]) -> None:
    try:
        validate(raw)
    except InvalidParameters as exc:
        assert exc.problems and all(isinstance(k, str) for k in exc.problems)
        for name in exc.problems:
            assert name in str(exc)


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
    st.sampled_from(["http://", "https://", "http:///path", "http://:8080", "//host/x", "http:host"]),
    st.builds(lambda h, p: f"http://{h}:{p}", host, st.one_of(st.integers(min_value=65536), st.text(
        alphabet="abcxyz-", min_size=1, max_size=5))),
    st.builds(lambda h, c: f"http://{h}{c}x/", host, st.sampled_from([" ", "\n", "\t", "\x00", "\x7f"])),
)


@BOUNDED
@given(name=st.sampled_from(URL_PARAMETERS), url=malformed_urls)
def test_malformed_urls(name: str, url: str) -> None:
    rejected({name: url}, name)


@BOUNDED
@given(url=malformed_urls)
def test_malformed_dashboard_urls(url: str) -> None:
    rejected({"dashboards": {"NATS": url}}, "dashboards")


def test_the_limits_themselves() -> None:
    for name, (low, high) in LIMITS.items():
        value = int(high) + 1 if SPECS[name].check.__name__ == "_positive_int" else high * 10
        rejected({name: value}, name)
    rejected({"partition_seconds": 3500, "partition_safety_margin_seconds": 200}, "partition_seconds")
    validate({"partition_seconds": 3500, "partition_safety_margin_seconds": 200, "target": "kubernetes"})


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
        validate({name: value})
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
    (["-p", "partiton_seconds=12"], "partiton_seconds"),
]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_cli_rejects_bad_parameters_and_cuts_nothing(lab: LabHandle, tmp_path: Path) -> None:
    before = lab.partition()["cuts"]
    for n, (args, name) in enumerate(CLI_CASES):
        proc = gameday("run", "-p", f"lab_dir={lab.lab_dir}", *args, "--output-dir", str(tmp_path / str(n)),
                       timeout=120)
        assert proc.returncode == 2, (args, proc.stderr[-2000:])
        assert name in proc.stderr, (args, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr, proc.stderr
        archive = Path(proc.stdout.strip().splitlines()[-1])
        assert not any(e["kind"].startswith("fault.") for e in read_journal(archive))
        assert json.loads((archive / "scorecard.json").read_text())["verdict"] == "aborted"
    bad = tmp_path / "bad.yaml"
    bad.write_text("partition_seconds: 12\nobservations: {replay: [\n", encoding="utf-8")
    proc = gameday("run", "--params", str(bad), "-p", f"lab_dir={lab.lab_dir}", "--output-dir", str(tmp_path / "f"))
    assert proc.returncode == 2 and "--params" in proc.stderr and "Traceback" not in proc.stderr
    assert lab.partition()["cuts"] == before and lab.partition()["active"] is False
