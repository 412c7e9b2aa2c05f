"""A real Prometheus (Debian's ``prometheus``) as a cluster's would run, for the CloudNativePG tests.

It scrapes each instance pod's metrics endpoint (``fake_instances.PodNetwork``) the way the Cluster's
PodMonitor makes Prometheus do it: job ``<namespace>/<cluster>``, labels ``namespace`` and ``pod`` on
every series. Optionally it federates the lab's own Prometheus (the services, JetStream), adding the
namespace label a cluster's series carry, and evaluates the gamedays' alert rules with the lab's short
``for:`` (``gamedaylib.lab.supervisor.write_lab_rules``): alerts then carry the namespace, as on a
cluster, and the runbook's alert probe (filtered by namespace) counts them.
"""

from __future__ import annotations

import subprocess
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from fake_apiserver import free_port
from fake_instances import PodNetwork

from gamedaylib.lab.processes import monitoring_binaries

__all__ = ["ClusterPrometheus"]


class ClusterPrometheus:
    """``start()`` / ``stop()``; ``url`` once started."""

    def __init__(self, directory: Path, *, scrape_interval: str = "1s") -> None:
        binary, _ = monitoring_binaries()  # the lab's lookup: GAMEDAY_LAB_WITHOUT hides it here too
        if binary is None:
            raise RuntimeError("prometheus is not on PATH (Debian package prometheus; .ci/run installs it)")
        self.binary = binary
        self.directory = Path(directory)
        self.scrape_interval = scrape_interval
        self.jobs: list[dict[str, Any]] = []
        self.rule_files: list[str] = []
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def scrape_cnpg(self, network: PodNetwork, namespace: str, cluster: str, pods: Sequence[str]) -> None:
        """The Cluster's PodMonitor: one target per instance pod."""
        self.jobs.append(
            {
                "job_name": f"{namespace}/{cluster}",
                "static_configs": [
                    {
                        "targets": [network.address],
                        "labels": {
                            "namespace": namespace,
                            "pod": pod,
                            "container": "postgres",
                            "endpoint": "metrics",
                            "__metrics_path__": network.path(namespace, pod),
                        },
                    }
                    for pod in pods
                ],
            }
        )

    def federate(self, prometheus_url: str, namespace: str, jobs: Sequence[str]) -> None:
        """The lab's series (the services, JetStream) with ``namespace`` added."""
        where = urlsplit(prometheus_url)
        self.jobs.append(
            {
                "job_name": "federate-lab",
                "honor_labels": True,
                "metrics_path": "/federate",
                "params": {"match[]": ['{job=~"' + "|".join(jobs) + '"}']},
                "static_configs": [{"targets": [where.netloc], "labels": {"namespace": namespace}}],
            }
        )

    def with_lab_rules(self) -> None:
        """Every gameday's alert rules, with the lab's short ``for:``."""
        from gamedaylib.lab.supervisor import write_lab_rules

        self.rule_files = [str(p) for p in write_lab_rules(self.directory / "rules")]

    def start(self, timeout: float = 30.0) -> ClusterPrometheus:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = {
            "global": {
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
            },
            "rule_files": self.rule_files,
            "scrape_configs": self.jobs,
        }
        path = self.directory / "prometheus.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        log = open(self.directory / "prometheus.log", "wb")  # noqa: SIM115 - the process keeps it
        self._proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={path}",
                f"--storage.tsdb.path={self.directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                pass
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"prometheus not ready: {(self.directory / 'prometheus.log').read_text()[-2000:]}"
                )
            time.sleep(0.1)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def __enter__(self) -> ClusterPrometheus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
