"""The notebook contract: each packaged gameday notebook is thin, clean and parameterized from its
parameters class (Papermill reads its types and help), headless runs skip live-only cells, and a
live session works on a parameterized copy, never on the tracked notebook."""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

import nbformat
import pytest
from click.testing import CliRunner
from papermill.cli import papermill
from papermill.translators import PythonTranslator

from gamedaylib import gamedays
from gamedaylib.archive import RUNBOOK_FILE
from gamedaylib.journal import JOURNAL_FILE, Journal
from gamedaylib.notebook import (
    INJECTED_PARAMETERS_TAG,
    LIVE_ONLY_TAG,
    PARAMETERS_TAG,
    execute,
    headless_notebook,
    prepare_live_copy,
)
from gamedaylib.parameters import parameters_cell, specs
from gamedaylib.scenario import Scenario

pytestmark = pytest.mark.timeout(120)

SCENARIOS = gamedays.scenarios()


def _nb(scenario: Scenario) -> nbformat.NotebookNode:
    return nbformat.read(str(scenario.notebook), as_version=4)


def _tags(cell: nbformat.NotebookNode) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _parameters_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    cells = [c for c in nb.cells if PARAMETERS_TAG in _tags(c)]
    assert len(cells) == 1
    return cells[0]


@pytest.fixture(params=SCENARIOS, ids=[s.id for s in SCENARIOS])
def scenario(request: pytest.FixtureRequest) -> Scenario:
    return request.param  # type: ignore[no-any-return]


def test_packaged_notebook_is_committed_without_outputs(scenario: Scenario) -> None:
    assert scenario.notebook.is_file() and scenario.notebook.is_relative_to(Path(gamedays.__file__).parent)
    nb = _nb(scenario)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], cell.source[:60]
            assert cell.execution_count is None, cell.source[:60]
    assert "widgets" not in nb.metadata


def test_parameters_cell_is_made_from_the_parameters_class(scenario: Scenario) -> None:
    assert _parameters_cell(_nb(scenario)).source == parameters_cell(scenario.params)


def test_every_parameters_line_parses_with_papermills_own_translator(scenario: Scenario) -> None:
    table = specs(scenario.params)
    source = _parameters_cell(_nb(scenario)).source
    seen = set()
    for line in source.splitlines():
        if line.startswith("#"):
            continue
        (found,) = PythonTranslator.inspect(nbformat.v4.new_code_cell(line))
        spec = table[found.name][1]
        assert found.inferred_type_name == spec.type, line
        assert found.help.startswith(spec.help), line
        assert ast.literal_eval(found.default) == ast.literal_eval(line.split(" = ", 1)[1].split("  # ")[0])
        seen.add(found.name)
    assert seen == set(table)
    assert {p.name for p in PythonTranslator.inspect(_parameters_cell(_nb(scenario)))} == set(table)


def test_papermill_help_notebook_lists_every_parameter_with_type_and_help(scenario: Scenario) -> None:
    result = CliRunner().invoke(papermill, ["--help-notebook", str(scenario.notebook)])
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    for name, (_, spec) in specs(scenario.params).items():
        assert f"{name}: {spec.type} (default " in flat, name
        assert " ".join(spec.help.split()) in flat, name


def test_one_thin_cell_per_phase_in_the_playbook_order(scenario: Scenario) -> None:
    nb = _nb(scenario)
    code = [c for c in nb.cells if c.cell_type == "code" and PARAMETERS_TAG not in _tags(c)]
    for cell in code:  # the notebook is thin: calls into gamedaylib, no logic
        for node in ast.walk(ast.parse(cell.source)):
            assert not isinstance(node, (ast.For, ast.While, ast.If, ast.FunctionDef, ast.Try, ast.With)), cell.source
    calls = [c.source.strip() for c in code]
    phase_calls = [s for s in calls if s.startswith("gd.phase(")]
    assert phase_calls == [f'gd.phase("{p}")' for p in scenario.playbook.phase_ids]
    assert list(scenario.phases) == list(scenario.playbook.phase_ids)
    order = [calls.index(s) for s in ("gd.success_metrics()", "gd.finish()", "gd.archive()")]
    assert order == sorted(order) and order[0] > calls.index(phase_calls[-1])
    headings = [c.source.splitlines()[0] for c in nb.cells if c.cell_type == "markdown" and c.source]
    positions = [next(i for i, h in enumerate(headings) if h.startswith("## ") and p.title in h)
                 for p in scenario.playbook.phases]
    assert positions == sorted(positions)
    (rollback,) = [c for c in nb.cells if LIVE_ONLY_TAG in _tags(c)]
    assert rollback.source.startswith("gd.rollback(")


def test_headless_notebook_drops_live_only_cells(scenario: Scenario) -> None:
    nb = _nb(scenario)
    headless = headless_notebook(scenario.notebook)
    assert len(headless.cells) == len(nb.cells) - 1
    assert not [c for c in headless.cells if LIVE_ONLY_TAG in _tags(c)]
    assert not any("gd.rollback(" in c.source for c in headless.cells if c.cell_type == "code")


def test_live_copy_is_parameterized_and_the_tracked_notebook_untouched(scenario: Scenario, tmp_path: Path) -> None:
    before = hashlib.sha256(scenario.notebook.read_bytes()).hexdigest()
    dest = prepare_live_copy(scenario.notebook, tmp_path / RUNBOOK_FILE,
                             {"run_id": "live-1", "archive_dir": str(tmp_path), "partition_seconds": 15.0})
    assert hashlib.sha256(scenario.notebook.read_bytes()).hexdigest() == before
    copy = nbformat.read(str(dest), as_version=4)
    (injected,) = [c for c in copy.cells if INJECTED_PARAMETERS_TAG in _tags(c)]
    assert "run_id = \"live-1\"" in injected.source and "partition_seconds = 15.0" in injected.source
    index = copy.cells.index(injected)
    assert PARAMETERS_TAG in _tags(copy.cells[index - 1])  # right after the defaults, as Papermill does
    assert all(c.get("outputs", []) == [] for c in copy.cells if c.cell_type == "code")  # nothing executed
    assert any(LIVE_ONLY_TAG in _tags(c) for c in copy.cells)  # a person may still roll back by hand


def test_execute_runs_headless_into_the_archive(tmp_path: Path) -> None:
    """Papermill runs the notebook into ``runbook.ipynb``, skipping live-only cells; completed only when
    the journal has ``run.finished``."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell("archive_dir = ''\ncell_timeout_seconds = 60")
    params.metadata["tags"] = [PARAMETERS_TAG]
    live_only = nbformat.v4.new_code_cell("raise SystemExit('a live-only cell ran headless')")
    live_only.metadata["tags"] = [LIVE_ONLY_TAG]
    finish = nbformat.v4.new_code_cell(
        "from gamedaylib.journal import Journal\n"
        f"Journal(archive_dir + '/{JOURNAL_FILE}').record('run.finished', verdict='pass')\nprint('finished')")
    nb.cells = [params, live_only, finish]
    source = tmp_path / "tiny.ipynb"
    nbformat.write(nb, str(source))
    archive = tmp_path / "archive"
    archive.mkdir()
    execution = execute({"archive_dir": str(archive), "cell_timeout_seconds": 60}, archive, source)
    assert execution.completed, execution.reason
    assert execution.reason == "" and execution.seconds > 0
    ran = nbformat.read(str(archive / RUNBOOK_FILE), as_version=4)
    assert "finished" in "".join(o.get("text", "") for o in ran.cells[-1].outputs)
    assert [e["kind"] for e in Journal.read(archive / JOURNAL_FILE)] == ["run.finished"]


def test_gameday_001s_notebook_quotes_its_playbook() -> None:
    nb = _nb(gamedays.scenario("GAMEDAY-001"))
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "Success Criteria" in text and "Rollback Procedure" in text and "## Success Metrics" in text
    assert "Consumer lag returns to <10 messages within 15 minutes" in text  # the playbook, quoted
    for phase in gamedays.scenario("GAMEDAY-001").playbook.phases:
        for question in phase.questions[:1]:
            assert question.casefold() in text.casefold(), question
