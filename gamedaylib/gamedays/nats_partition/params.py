"""GAMEDAY-001's parameters: what every gameday has, the lab knobs, and the partition's own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from gamedaylib.gamedays.nats_partition.playbook import GAMEDAY_ID, PLAYBOOK
from gamedaylib.lab.knobs import LabKnobs
from gamedaylib.parameters import (
    DAY,
    RunParams,
    check_label_selector,
    check_str,
    check_str_list,
    number_param,
    param,
)

LAB_MAX_PARTITION_SECONDS = 3600.0  # the lab proxy refuses longer cuts (config.json max_partition_seconds)
_SCENARIO = "Scenario"


@dataclass(frozen=True, kw_only=True)
class NatsPartitionParams(LabKnobs, RunParams):
    GAMEDAY_ID: ClassVar[str] = GAMEDAY_ID
    PHASE_IDS: ClassVar[tuple[str, ...]] = PLAYBOOK.phase_ids
    METRIC_NAMES: ClassVar[tuple[str, ...]] = PLAYBOOK.metric_names
    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {
        "full": {  # the playbook's own numbers
            "partition_seconds": 600.0,
            "partition_safety_margin_seconds": 300.0,
            "lag_recovery_deadline_seconds": 900.0,
            "rto_target_seconds": 3600.0,
            "rpo_target_seconds": 900.0,
            "alert_fire_target_seconds": 120.0,
            "team_response_target_seconds": 600.0,
            "sample_interval_seconds": 5.0,
            "baseline_seconds": 30.0,
            "cell_timeout_seconds": 3600.0,
            "required_metrics": list(PLAYBOOK.metric_names[:6]),
        },
        "rehearsal": {  # the same scenario compressed so that a lab run ends within about 2 minutes
            "partition_seconds": 20.0,
            "partition_safety_margin_seconds": 30.0,
            "lag_recovery_deadline_seconds": 60.0,
            "rto_target_seconds": 120.0,
            "rpo_target_seconds": 30.0,
            "alert_fire_target_seconds": 60.0,
            "team_response_target_seconds": 120.0,
            "sample_interval_seconds": 1.0,
            "baseline_seconds": 3.0,
            "cell_timeout_seconds": 300.0,
            "required_metrics": ["rto_seconds", "rpo_seconds", "event_loss_count", "user_facing_errors"],
        },
    }

    partition_seconds: float | None = number_param(None, "how long the network stays cut", limit=(1.0, DAY),
                                                   section=_SCENARIO)
    partition_safety_margin_seconds: float | None = number_param(
        None, "the fault's own deadline is the partition plus this margin", limit=(1.0, DAY), section=_SCENARIO)
    heal_confirm_seconds: float = number_param(30.0, "services reconnected to NATS within", limit=(1.0, DAY),
                                               section=_SCENARIO)
    nats_selector: dict[str, Any] = param(
        {"app.kubernetes.io/name": "nats", "app.kubernetes.io/component": "nats"},
        "labels of the NATS server pods (the official chart's)", type="dict", check=check_label_selector,
        section="Kubernetes")
    service_selector: dict[str, Any] = param(
        {}, "labels of the service pods (empty: by name from service_pods)", type="dict",
        check=check_label_selector, section="Kubernetes")
    service_pods: list[str] = param(["api-gateway", "reporting"], "the services cut off from NATS",
                                    type="list[str]", check=check_str_list, section="Kubernetes")
    chaos_manifest: str = param("", "a NetworkChaos template of your own (empty: the one shipped)", type="str",
                                check=check_str, section="Kubernetes")

    @property
    def fault_deadline_seconds(self) -> float:
        """The fault ends by itself this long after it starts, whatever happens to the runbook."""
        return float(self.partition_seconds or 0) + float(self.partition_safety_margin_seconds or 0)

    def longest_wait_seconds(self) -> float:
        return max(super().longest_wait_seconds(),
                   float(self.partition_seconds or 0) / 2 + self.heal_confirm_seconds)

    def problems(self) -> dict[str, str]:
        problems = super().problems()
        if self.target == "lab" and self.fault_deadline_seconds > LAB_MAX_PARTITION_SECONDS:
            problems["partition_seconds"] = (
                f"partition_seconds + partition_safety_margin_seconds = {self.fault_deadline_seconds:g}s "
                f"exceeds the lab proxy's maximum of {LAB_MAX_PARTITION_SECONDS:g}s")
        return problems
