"""The notebook contract and how a notebook is run: headless with Papermill, or as a live copy.

- Contract names: the ``parameters`` cell Papermill replaces (it injects ``injected-parameters``), and
  cells tagged ``live-only`` that headless runs skip (the rollback cell run by hand).
- ``execute``: Papermill runs the gameday's notebook into the archive as ``runbook.ipynb``; the run
  counts as completed only when Papermill raised nothing and the journal has ``run.finished``.
- ``prepare_live_copy``: Papermill's prepare-only writes the parameterized copy a facilitator opens in
  JupyterLab (``gameday live``); the tracked notebook is never run in place.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gamedaylib.archive import RUNBOOK_FILE
from gamedaylib.journal import JOURNAL_FILE, Journal

__all__ = ["INJECTED_PARAMETERS_TAG", "LIVE_ONLY_TAG", "PARAMETERS_TAG", "Execution", "execute",
           "headless_notebook", "prepare_live_copy"]

# Papermill's notebook contract names, and ours.
PARAMETERS_TAG = "parameters"
INJECTED_PARAMETERS_TAG = "injected-parameters"
LIVE_ONLY_TAG = "live-only"


@dataclass
class Execution:
    """How the Papermill run ended."""

    completed: bool
    reason: str = ""
    seconds: float = 0.0


def execute(
    params: Mapping[str, Any],
    archive_dir: Path,
    notebook: Path,
    *,
    kernel_name: str = "python3",
    cwd: Path | None = None,
) -> Execution:
    """Run ``notebook`` headless into ``archive_dir/runbook.ipynb`` with ``params``. ``completed`` only
    when the notebook ran to its end (the journal has ``run.finished``): Papermill's own errors, a
    dead kernel and a cell timeout all count as not completed, with the reason."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    start = time.monotonic()
    reason = ""
    try:
        papermill.execute_notebook(
            headless_notebook(notebook),
            str(archive_dir / RUNBOOK_FILE),
            parameters=dict(params),
            kernel_name=kernel_name,
            execution_timeout=int(params["cell_timeout_seconds"]),
            progress_bar=False,
            cwd=str(cwd or archive_dir),
            kernel_manager_class=_local_kernel_manager(),
        )
    except PapermillExecutionError as exc:
        reason = f"cell {exc.exec_count} raised {exc.ename}: {exc.evalue}"
    except KeyboardInterrupt:
        reason = "interrupted (SIGINT/SIGTERM)"
    except Exception as exc:  # noqa: BLE001 - nbclient: DeadKernelError, CellTimeoutError, ...; recorded
        reason = f"{type(exc).__name__}: {exc}"
    entries = list(Journal.read(archive_dir / JOURNAL_FILE))
    finished = any(e.get("kind") == "run.finished" for e in entries)
    if not reason and not finished:
        reason = "the notebook did not reach finish()"
    return Execution(completed=finished and not reason, reason=reason, seconds=time.monotonic() - start)


def _local_kernel_manager() -> type:
    """The kernel talks over local IPC sockets in Jupyter's runtime folder, not TCP ports: a headless
    gameday opens no listening port for its kernel."""
    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.paths import jupyter_runtime_dir
    from traitlets import default

    class LocalKernelManager(AsyncKernelManager):
        @default("transport")
        def _default_transport(self) -> str:
            return "ipc"

        @default("ip")
        def _default_ip(self) -> str:
            os.makedirs(jupyter_runtime_dir(), exist_ok=True)
            return os.path.join(jupyter_runtime_dir(), f"gameday-kernel-{os.getpid()}")

    return LocalKernelManager


def headless_notebook(path: Path) -> Any:
    """The notebook without the cells tagged ``live-only`` (headless runs skip them)."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    nb.cells = [c for c in nb.cells if LIVE_ONLY_TAG not in c.get("metadata", {}).get("tags", [])]
    return nb


def prepare_live_copy(notebook: Path, dest: Path, params: Mapping[str, Any]) -> Path:
    """``notebook`` with ``params`` injected (Papermill's prepare-only: nothing is executed), at ``dest``."""
    import papermill

    papermill.execute_notebook(str(notebook), str(dest), parameters=dict(params), prepare_only=True,
                               progress_bar=False)
    return dest
