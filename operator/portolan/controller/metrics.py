"""Prometheus metrics of the operator: jobs, shards, probes, durations, status writes.

All metrics live in a registry passed in by the caller (no global registry).
Aggregates have bounded label sets (phases, states, result kinds).  The per-object
gauges (``portolan_scanjob_*``, ``portolan_scanschedule_*``) carry the object's
namespace and name so alerts can say which job; their series are removed when the
object goes (:meth:`Metrics.forget_job`, :meth:`Metrics.forget_schedule`), as
trivy-operator does, so the label set stays bounded by the objects that exist.
ReachabilityAudits (few, cluster-scoped) have one series per audit and kind,
removed when the audit goes.  Never addresses or ports as labels.
"""

from __future__ import annotations

import contextlib
from typing import Any

import prometheus_client

from portolan.models import statuses

_EXPOSURES = ("exposed", "shielded", "local-only", "unknown", "not-scanned")  # as portolan.inventory.exposure names them


class Metrics:
    """The operator's Prometheus metrics, on an injected registry (none is global)."""

    def __init__(self, registry: prometheus_client.CollectorRegistry) -> None:
        self.registry = registry
        self.jobs = prometheus_client.Gauge(
            "portolan_scanjobs", "ScanJobs by phase", ["phase"], registry=registry)
        self.shards_running = prometheus_client.Gauge(
            "portolan_shards_running", "Shard pods pending or running", registry=registry)
        self.shards_started = prometheus_client.Counter(
            "portolan_shards_started", "Shard pods created (first attempts and retries)", registry=registry)
        self.shard_retries = prometheus_client.Counter(
            "portolan_shard_retries", "Shard attempts that failed and will be retried", registry=registry)
        self.shard_failures = prometheus_client.Counter(
            "portolan_shard_failures", "Shards that failed for good (retries exhausted)", registry=registry)
        self.probes = prometheus_client.Counter(
            "portolan_probes", "Probes of finished jobs by resulting port state", ["state"], registry=registry)
        self.open_ports = prometheus_client.Counter(
            "portolan_open_ports_found", "Open ports reported by finished jobs", registry=registry)
        self.job_duration = prometheus_client.Histogram(
            "portolan_scanjob_duration_seconds", "Wall time from acceptance to completion", ["result"],
            buckets=(1, 5, 15, 30, 60, 120, 300, 900, 1800, 3600, 4 * 3600), registry=registry)
        self.status_write_failures = prometheus_client.Counter(
            "portolan_status_write_failures", "Failed writes of ScanJob status", registry=registry)
        self.expectation_violations = prometheus_client.Counter(
            "portolan_expectation_violations", "Open ports found outside a ScanJob's spec.expect.allowedOpenPorts",
            registry=registry)
        self.drift_ports = prometheus_client.Counter(
            "portolan_drift_ports", "Open ports that appeared or disappeared between two runs of a ScanSchedule",
            ["change"], registry=registry)
        self.reconcile_errors = prometheus_client.Counter(
            "portolan_reconcile_errors", "Reconciliations that raised", ["reason"], registry=registry)
        self.reachability_mismatches = prometheus_client.Gauge(
            "portolan_reachability_mismatches", "Pairs of the last run of a ReachabilityAudit that disagree: "
            "UnexpectedlyReachable, UnexpectedlyBlocked, PolicyDisagreesWithRule", ["audit", "kind"], registry=registry)
        self.job_open_ports = prometheus_client.Gauge(
            "portolan_scanjob_open_ports", "Open ports a ScanJob has found so far, per vantage (pool)",
            ["namespace", "scanjob", "vantage"], registry=registry)
        self.job_violations = prometheus_client.Gauge(
            "portolan_scanjob_expectation_violations",
            "Open ports a ScanJob found outside its spec.expect.allowedOpenPorts", ["namespace", "scanjob"],
            registry=registry)
        self.job_listeners = prometheus_client.Gauge(
            "portolan_scanjob_node_listeners", "Node listeners a ScanJob's inventory judged, by exposure",
            ["namespace", "scanjob", "exposure"], registry=registry)
        self.schedule_drift = prometheus_client.Gauge(
            "portolan_scanschedule_drift_ports",
            "Open ports that differ between the two latest runs of a ScanSchedule (opened plus closed)",
            ["namespace", "scanschedule"], registry=registry)
        self._vantages: dict[tuple[str, str], set[str]] = {}
        self._running: dict[tuple[str, str], int] = {}  # (namespace, job) -> its shard pods holding a slot
        # Every label value the alerts use exists from the start at 0: a series born at its first
        # increment has no earlier sample, so increase() would miss a fresh process's first failure.
        for phase in statuses.Phase:
            self.jobs.labels(phase=phase.value)
        for result in ("complete", "failed"):
            self.job_duration.labels(result=result)
        for change in ("opened", "closed"):
            self.drift_ports.labels(change=change)

    def forget_audit(self, name: str) -> None:
        """Drop a deleted audit's series (audits are few and named: one series per audit and kind)."""
        for kind in ("UnexpectedlyReachable", "UnexpectedlyBlocked", "PolicyDisagreesWithRule"):
            with contextlib.suppress(KeyError):
                self.reachability_mismatches.remove(name, kind)

    def observe_job(self, namespace: str, name: str, status: statuses.ScanJobStatus) -> None:
        """Set a ScanJob's own gauges from its status (open ports per vantage, violations)."""
        counts: dict[str, int] = {}
        for result in status.results:
            counts[result.pool] = counts.get(result.pool, 0) + len(result.open) + result.open_truncated
        known = self._vantages.setdefault((namespace, name), set())
        for gone in known - counts.keys():
            self.job_open_ports.remove(namespace, name, gone)
        for vantage, count in counts.items():
            self.job_open_ports.labels(namespace=namespace, scanjob=name, vantage=vantage).set(count)
        self._vantages[(namespace, name)] = set(counts)
        if status.expectations is not None:
            self.job_violations.labels(namespace=namespace, scanjob=name).set(status.expectations.violated)
        if status.inventory is not None:
            for kind in _EXPOSURES:
                self.job_listeners.labels(namespace=namespace, scanjob=name, exposure=kind).set(
                    status.inventory.counts.get(kind, 0))

    def knows_job(self, namespace: str, name: str) -> bool:
        """Whether :meth:`observe_job` has seen this ScanJob (and not forgotten it since)."""
        return (namespace, name) in self._vantages

    def job_shards_running(self, namespace: str, name: str, count: int) -> None:
        """Record one job's pending or running shard pods; the gauge is the sum over jobs."""
        if count:
            self._running[(namespace, name)] = count
        else:
            self._running.pop((namespace, name), None)
        self.shards_running.set(sum(self._running.values()))

    def forget_job(self, namespace: str, name: str) -> None:
        """Remove a deleted ScanJob's series."""
        self.job_shards_running(namespace, name, 0)
        for vantage in self._vantages.pop((namespace, name), set()):
            self.job_open_ports.remove(namespace, name, vantage)
        with contextlib.suppress(KeyError):
            self.job_violations.remove(namespace, name)
        for kind in _EXPOSURES:
            with contextlib.suppress(KeyError):
                self.job_listeners.remove(namespace, name, kind)

    def observe_schedule(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Set a ScanSchedule's drift gauge from its status patch (when it carries a drift)."""
        drift = status.get("drift")
        if isinstance(drift, dict):
            count = len(drift.get("opened") or []) + len(drift.get("closed") or []) + int(drift.get("truncated") or 0)
            self.schedule_drift.labels(namespace=namespace, scanschedule=name).set(count)

    def forget_schedule(self, namespace: str, name: str) -> None:
        """Remove a deleted ScanSchedule's series."""
        with contextlib.suppress(KeyError):
            self.schedule_drift.remove(namespace, name)

    def finished(self, status: statuses.ScanJobStatus, seconds: float) -> None:
        """Record a job that reached Complete or Failed: its duration, probes and open ports."""
        result = "complete" if status.phase == statuses.Phase.COMPLETE else "failed"
        self.job_duration.labels(result=result).observe(seconds)
        for result_ in status.results:
            for state, count in result_.states.items():
                self.probes.labels(state=state).inc(count)
        self.open_ports.inc(status.open_ports)
        if status.expectations is not None:
            self.expectation_violations.inc(status.expectations.violated)
