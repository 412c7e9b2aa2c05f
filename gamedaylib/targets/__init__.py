"""Where a gameday runs: the embedded lab or a Kubernetes cluster, behind one ``Target`` protocol."""

from __future__ import annotations

from typing import Any

from gamedaylib.parameters import as_dict
from gamedaylib.targets.base import Target

__all__ = ["make_target"]


def make_target(params: Any, knobs_type: type) -> Target:
    """The target ``params.target`` names (the Kubernetes client is imported only when used)."""
    if params.target == "lab":
        from gamedaylib.lab.knobs import knobs_of
        from gamedaylib.targets.lab import LabTarget

        return LabTarget(params.lab_dir, knobs_of(params, knobs_type),
                         nats_monitor_urls=list(params.nats_monitor_urls)
                         or ([params.nats_monitor_url] if params.nats_monitor_url else []))
    from gamedaylib.targets.kubernetes import KubernetesTarget

    return KubernetesTarget.from_params(as_dict(params))
