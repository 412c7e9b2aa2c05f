"""The committed notebook: thin, parameterized, clean (no outputs), in the playbook's order."""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat

from gamedaylib.parameters import SPECS, defaults
from gamedaylib.playbook import PARAMETERS_TAG, PHASES

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "nats_partition_gameday.ipynb"


def _nb() -> nbformat.NotebookNode:
    return nbformat.read(str(NOTEBOOK), as_version=4)


def test_committed_without_outputs_or_execution_counts() -> None:
    nb = _nb()
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], cell.source[:60]
            assert cell.execution_count is None, cell.source[:60]
    assert "widgets" not in nb.metadata


def test_parameters_cell_holds_every_parameter_as_a_literal_default() -> None:
    cells = [c for c in _nb().cells if PARAMETERS_TAG in c.metadata.get("tags", [])]
    assert len(cells) == 1
    tree = ast.parse(cells[0].source)
    values = {}
    for node in tree.body:
        assert isinstance(node, ast.Assign), ast.dump(node)
        values[node.targets[0].id] = ast.literal_eval(node.value)  # literals only
    assert set(values) == set(SPECS)
    assert values == defaults()


def test_one_section_per_phase_in_the_playbook_order_with_thin_code() -> None:
    nb = _nb()
    headings = [c.source.splitlines()[0] for c in nb.cells if c.cell_type == "markdown"]
    positions = []
    for phase in PHASES:
        matches = [i for i, h in enumerate(headings) if h.startswith("## ") and phase.title in h]
        assert matches, phase.title
        positions.append(matches[0])
    assert positions == sorted(positions)
    calls = [c.source for c in nb.cells if c.cell_type == "code" and PARAMETERS_TAG not in c.metadata.get("tags", [])]
    for src in calls:
        for node in ast.walk(ast.parse(src)):
            assert not isinstance(node, (ast.For, ast.While, ast.If, ast.FunctionDef, ast.Try)), src
    joined = "\n".join(calls)
    for method in ("preflight", "inject", "buffering", "heal", "replay", "verify_rto", "verify_rpo",
                   "incident_response", "postmortem", "success_metrics", "finish", "rollback"):
        assert f"gd.{method}(" in joined
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "Success Criteria" in text and "Rollback Procedure" in text
    assert "Consumer lag returns to <10 messages within 15 minutes" in text  # the playbook, quoted
