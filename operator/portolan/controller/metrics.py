"""Prometheus metrics of the operator: jobs, shards, probes, durations, status writes.

All metrics live in a registry passed in by the caller (no global registry), with
bounded label sets: phases, states and result kinds — never addresses; the only
per-object series are those of ReachabilityAudits (few, cluster-scoped), removed
when the audit goes.
"""

from __future__ import annotations

import contextlib

import prometheus_client

from portolan.models import statuses


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
