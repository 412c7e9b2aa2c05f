"""GAMEDAY-002's parameters: what every gameday has, the failover lab's knobs, and the kill's own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from gamedaylib.gamedays.postgres_failover.playbook import GAMEDAY_ID, PLAYBOOK
from gamedaylib.lab.knobs import FailoverLabKnobs
from gamedaylib.parameters import (
    DAY,
    RunParams,
    check_label_selector,
    check_str,
    choice,
    number_param,
    param,
)

_SCENARIO = "Scenario"


@dataclass(frozen=True, kw_only=True)
class FailoverParams(FailoverLabKnobs, RunParams):
    GAMEDAY_ID: ClassVar[str] = GAMEDAY_ID
    PHASE_IDS: ClassVar[tuple[str, ...]] = PLAYBOOK.phase_ids
    METRIC_NAMES: ClassVar[tuple[str, ...]] = PLAYBOOK.metric_names
    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {
        "full": {  # the playbook's own numbers
            "failover_target_seconds": 60.0,
            "promote_deadline_seconds": 300.0,
            "replica_rejoin_target_seconds": 600.0,
            "lag_recovery_deadline_seconds": 900.0,
            "rto_target_seconds": 900.0,
            "rpo_target_seconds": 0.0,
            "alert_fire_target_seconds": 120.0,
            "team_response_target_seconds": 600.0,
            "sample_interval_seconds": 5.0,
            "baseline_seconds": 30.0,
            "cell_timeout_seconds": 3600.0,
            "required_metrics": list(PLAYBOOK.metric_names[:8]),
        },
        "rehearsal": {  # the same scenario on the lab in a few minutes (Patroni's ttl bounds failover at ~20 s)
            "failover_target_seconds": 60.0,
            "promote_deadline_seconds": 90.0,
            "replica_rejoin_target_seconds": 120.0,
            "lag_recovery_deadline_seconds": 90.0,
            "rto_target_seconds": 240.0,
            "rpo_target_seconds": 0.0,
            "alert_fire_target_seconds": 60.0,
            "team_response_target_seconds": 120.0,
            "sample_interval_seconds": 1.0,
            "baseline_seconds": 3.0,
            "cell_timeout_seconds": 300.0,
            "required_metrics": ["failover_seconds", "rto_seconds", "rpo_seconds", "event_loss_count",
                                 "user_facing_errors", "split_brain_samples"],
        },
    }

    kill: str = param("node", "node (the primary's pod / Patroni and its postgres) | agent (only the failover "
                      "agent: the postgres it leaves is an orphan primary)", type="str", check=choice("node", "agent"),
                      section=_SCENARIO)
    failover_target_seconds: float | None = number_param(None, "a new primary accepts writes within",
                                                         limit=(1.0, DAY), section=_SCENARIO)
    promote_deadline_seconds: float | None = number_param(
        None, "no writable primary by then: the rollback promotes a replica by hand", limit=(1.0, DAY),
        section=_SCENARIO)
    replica_rejoin_target_seconds: float | None = number_param(
        None, "the old primary streams as a replica within (from T+0)", limit=(1.0, 7 * DAY), section=_SCENARIO)
    replication_stall_seconds: float = number_param(
        2.0, "lab with async replication: the replication link stalls this long before the kill",
        limit=(0.0, 600.0), section=_SCENARIO)
    cnpg_cluster: str = param("events-db", "the CloudNativePG Cluster holding the events table", type="str",
                              check=check_str, section="Kubernetes")
    primary_selector: dict[str, Any] = param(
        {"cnpg.io/cluster": "events-db", "cnpg.io/instanceRole": "primary"},
        "labels of the primary's pod (CloudNativePG's)", type="dict", check=check_label_selector,
        section="Kubernetes")
    chaos_manifest: str = param("", "a PodChaos template of your own (empty: the one shipped)", type="str",
                                check=check_str, section="Kubernetes")

    def targets(self) -> dict[str, float]:
        return {
            **super().targets(),
            "failover_seconds": float(self.failover_target_seconds or 0),
            "split_brain_samples": 0.0,
            "replica_rejoin_seconds": float(self.replica_rejoin_target_seconds or 0),
        }

    @property
    def fault_deadline_seconds(self) -> float:
        """A kill has no duration; the deadline is the promote deadline (the rollback's)."""
        return float(self.promote_deadline_seconds or 0)

    def longest_wait_seconds(self) -> float:
        return max(super().longest_wait_seconds(), float(self.promote_deadline_seconds or 0) + 30,
                   float(self.replica_rejoin_target_seconds or 0) + 30)
