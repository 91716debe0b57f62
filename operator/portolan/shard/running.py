"""Running one shard inside its pod: read the plan, scan, write this shard's ScanShard status.

A shard pod learns which job, shard and attempt it is from its environment
(set by :func:`portolan.kube.builders.shard_pod`), reads its slice of the plan from
its ScanShard object's spec (and the scan options from the ScanJob's spec), runs the
engine, heartbeats progress, and finally writes its counts and open ports into its
ScanShard's status with a JSON merge patch.  It never writes the ScanJob: a shard's
writes stay small however many shards the job has.  The write replaces the
entry's results, so a retried shard never duplicates them.  A stale attempt (the operator already
started a newer one) writes nothing.  On SIGTERM the partial counts are written
with ``lastError`` before exiting, so nothing gathered is lost.

An inventory shard (``kind: inventory`` in the plan) scans nothing: it lists the
listeners of the node it runs on (its pod has the node's network and PID
namespaces) and writes them, bounded, into its entry (:mod:`portolan.shard.listing`).

A shard's UDP re-probe of hosts that rate-limit ICMP (about one closed port per
second per host, hosts in parallel) gets the time its slice needs
(:func:`udp_pacing_budget`), not the CLI's default: in a cluster the job's
``activeDeadlineSeconds`` is the bound, and a slice cut short would report
closed ports as open|filtered.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import math
import pathlib
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from portolan import errors
from portolan.engine import payloads, plans, scanning, services
from portolan.engine import ports as ports_
from portolan.engine import targets as targets_
from portolan.inventory import listening
from portolan.kube import names, rest
from portolan.models import results
from portolan.shard import listing, reading

if TYPE_CHECKING:
    from portolan.capture import recording
    from portolan.models import scanjobs

# The shard's exit codes, read by the operator from the pod's terminated state.
EXIT_OK = 0
EXIT_SPEC = 2  # the job or the environment is malformed
EXIT_SCAN = 3  # the engine could not scan
EXIT_SUPERSEDED = 0  # a newer attempt owns the shard: nothing to do, and not a failure
EXIT_TERMINATED = 143


@dataclasses.dataclass(frozen=True)
class ShardEnv:
    """Who this shard pod is: job, shard, attempt and limits, from the environment the operator set."""

    namespace: str
    job: str
    shard: str
    attempt: int
    open_cap: int
    heartbeat_seconds: float
    pod: str | None
    node: str | None
    capture_dir: str | None = None
    listener_cap: int = 500
    shard_object: str = ""  # the ScanShard's name (derived from job and shard when not given)

    def __post_init__(self) -> None:
        if not self.shard_object:
            object.__setattr__(self, "shard_object", names.scan_shard_name(self.job, self.shard))

    @classmethod
    def from_environment(cls, env: Mapping[str, str]) -> ShardEnv:
        """The shard's identity from its environment; a missing or malformed variable is one SpecError naming it."""

        def required(name: str) -> str:
            value = env.get(name, "").strip()
            if not value:
                raise errors.SpecError(f"shard environment: {name} is missing")
            return value

        def number(name: str, text: str, kind: type[int] | type[float], minimum: float) -> Any:
            try:
                value = kind(text)
            except ValueError:
                raise errors.SpecError(f"shard environment: {name}={text!r} is not a number") from None
            if not math.isfinite(value) or value < minimum:
                raise errors.SpecError(f"shard environment: {name}={text!r} must be at least {minimum}")
            return value

        return cls(
            namespace=required("PORTOLAN_JOB_NAMESPACE"), job=required("PORTOLAN_JOB_NAME"),
            shard=required("PORTOLAN_SHARD_ID"),
            attempt=number("PORTOLAN_ATTEMPT", required("PORTOLAN_ATTEMPT"), int, 0),
            open_cap=number("PORTOLAN_OPEN_CAP", env.get("PORTOLAN_OPEN_CAP", "200"), int, 0),
            heartbeat_seconds=number("PORTOLAN_HEARTBEAT_SECONDS", env.get("PORTOLAN_HEARTBEAT_SECONDS", "2"),
                                     float, 0.01),
            pod=env.get("PORTOLAN_POD_NAME"), node=env.get("PORTOLAN_NODE_NAME"),
            capture_dir=env.get("PORTOLAN_CAPTURE_DIR") or None,
            listener_cap=number("PORTOLAN_LISTENER_CAP", env.get("PORTOLAN_LISTENER_CAP", "500"), int, 0),
            shard_object=env.get("PORTOLAN_SHARD_OBJECT", "").strip(),
        )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def udp_pacing_budget(plan: plans.Plan) -> float:
    """Seconds for the paced UDP pass: one closed port per second per host, plus half again and 30 s."""
    return 30.0 + 1.5 * len(plan.udp_ports)


class ShardRunner:
    """One attempt of one shard: read the plan, scan (``scan``, the engine by default), write the shard's entry."""

    def __init__(self, client: rest.ShardClient, env: ShardEnv, *, stop: threading.Event,
                 now: Callable[[], datetime.datetime] = _now,
                 scan: Callable[..., results.ScanReport] = scanning.run,
                 take: Callable[[], listening.Inventory] = listening.take) -> None:
        self.kube = client
        self.scan = scan
        self.take = take
        self.env = env
        self.stop = stop
        self.now = now
        self.last_beat = 0.0
        self.shard_body: dict[str, Any] | None = None

    def _patch(self, fields: dict[str, Any], *, tries: int = 5) -> None:
        for attempt in range(tries):
            try:
                self.kube.patch_scan_shard_status(self.env.namespace, self.env.shard_object, fields)
                return
            except errors.KubeError as exc:
                if attempt == tries - 1 or exc.status == 404:
                    raise
                time.sleep(0.2 * (attempt + 1))

    def _read_shard(self) -> dict[str, Any]:
        self.shard_body = self.kube.get_scan_shard(self.env.namespace, self.env.shard_object)
        return self.shard_body

    def _still_mine(self) -> bool:
        status = self._read_shard().get("status") or {}
        attempt = reading.attempt(status)
        if attempt is None:  # not plainly an integer: the model's reading (and its error)
            from portolan.models import statuses

            attempt = statuses.ShardStatus.model_validate(status).attempt
        return attempt <= self.env.attempt

    def _base(self) -> dict[str, Any]:
        return {"attempt": self.env.attempt, "pod": self.env.pod, "node": self.env.node,
                "heartbeat": names.timestamp(self.now())}

    def progress(self, tick: results.Progress) -> None:
        """Heartbeat progress into the shard's entry at most once per interval (a missed one is harmless)."""
        moment = time.monotonic()
        if moment - self.last_beat < self.env.heartbeat_seconds:
            return
        self.last_beat = moment
        with contextlib.suppress(errors.KubeError):  # a missed heartbeat is harmless; the final write retries
            self._patch({**self._base(), "phase": "Running", "done": tick.done, "total": tick.total}, tries=1)

    def planned(self, job: dict[str, Any]) -> reading.Slice:
        """This shard's slice of the plan: its ScanShard's spec (which must name this shard)."""
        body = self.shard_body if self.shard_body is not None else self._read_shard()
        shard = reading.shard_slice(body.get("spec") or {})
        if shard is None:  # not plainly well formed: the models judge it
            shard = _validated_slice(body.get("spec") or {}, self.env.shard_object)
        if shard.id != self.env.shard:
            raise errors.SpecError(f"ScanShard {self.env.shard_object} plans shard {shard.id}, not {self.env.shard}")
        return shard

    def scan_plan(self, job: dict[str, Any]) -> plans.Plan:
        """This shard's slice of the job's plan, as the engine's scan plan."""
        options = reading.scan_options(job["spec"])
        if options is None:  # not plainly well formed, or it records evidence: the models read it
            spec = _validated_spec(job, self.env.job)
            options = reading.Options(spec.targets.exclude, plans.timing_of(spec.timing), spec.service_detection,
                                      spec.verify_open, spec.technique)
        shard = self.planned(job)
        return plans.Plan(
            targets=targets_.parse_targets(shard.targets, options.exclude),
            tcp_ports=ports_.parse_ports(shard.ports) if shard.ports else [],
            udp_ports=ports_.parse_ports(shard.udp_ports) if shard.udp_ports else [],
            timing=options.timing, service_detection=options.service_detection, verify_open=options.verify_open,
            technique=options.technique,
        )

    def _recorder(self, job: dict[str, Any], plan: plans.Plan) -> tuple[recording.Recorder | None, dict[str, Any] | None]:
        """Start recording this attempt's traffic if the job asks for it; the status entry says how it went."""
        if job["spec"].get("capture") is None:
            return None, None
        spec = _validated_spec(job, self.env.job)  # only jobs that record evidence load the models here
        if spec.capture is None:
            return None, None
        entry: dict[str, Any] = {"persistentVolumeClaim": spec.capture.persistent_volume_claim, "files": [],
                                 "packets": 0, "dropped": 0, "filter": None, "error": None}
        if self.env.capture_dir is None:
            entry["error"] = "NoVolume: the pod has no capture volume mounted"
            return None, entry
        relative = pathlib.PurePosixPath(self.env.namespace, self.env.job, f"{self.env.shard}-a{self.env.attempt}")
        from portolan.capture import recording  # only shards that record evidence load capture

        try:
            recorder = recording.Recorder(
                pathlib.Path(self.env.capture_dir, relative), (t.address for t in plan.targets),
                fmt=spec.capture.format, snaplen=spec.capture.snap_length, compress=spec.capture.compress,
                rotate_bytes=None if spec.capture.rotate_megabytes is None else spec.capture.rotate_megabytes << 20,
            ).start()
        except errors.PortolanError as exc:
            entry["error"] = f"{exc.reason}: {exc}"
            return None, entry
        entry["filter"] = recorder.expression
        return recorder, entry

    def _evidence(self, recorder: recording.Recorder | None, entry: dict[str, Any] | None) -> dict[str, Any]:
        if entry is None:
            return {}
        if recorder is not None:
            root = pathlib.Path(self.env.capture_dir or "/")
            try:
                evidence = recorder.finish()
            except errors.PortolanError as exc:
                from portolan.capture import recording

                entry["error"] = f"{exc.reason}: {exc}"
                evidence = recording.Evidence(list(recorder.writer.files), recorder.expression, 0, 0)
            entry.update(files=[str(path.relative_to(root)) for path in evidence.files],
                         packets=evidence.packets, dropped=evidence.dropped)
        return {"capture": entry}

    def inventory(self, shard: reading.Slice) -> int:
        """List this node's listeners and write them, bounded, into the shard's entry; returns the exit code."""
        done = {**self._base(), "done": 0, "total": 0, "finishedAttempt": self.env.attempt}
        if shard.node and self.env.node and shard.node != self.env.node:
            self._patch({**done, "lastError": f"WrongNode: planned for {shard.node}, running on {self.env.node}"})
            return EXIT_SPEC
        try:
            found = self.take()
        except (errors.PortolanError, OSError) as exc:
            reason = exc.reason if isinstance(exc, errors.PortolanError) else "ListingFailed"
            self._patch({**done, "lastError": f"{reason}: {exc}"})
            return EXIT_SCAN
        if not self._still_mine():
            return EXIT_SUPERSEDED
        self._patch({**done, **listing.entry(found, self.env.listener_cap),
                     "phase": "Succeeded", "lastError": None})
        return EXIT_OK

    def run(self) -> int:
        """Run this attempt to its end and return the exit code (nothing gathered is lost)."""
        job = self.kube.get_job(self.env.namespace, self.env.job)
        if not self._still_mine():
            return EXIT_SUPERSEDED
        try:
            planned = self.planned(job)
            if planned.kind == "inventory":
                return self.inventory(planned)
            plan = self.scan_plan(job)
        except errors.SpecError as exc:
            self._patch({**self._base(), "lastError": f"{exc.reason}: {exc}", "finishedAttempt": self.env.attempt})
            return EXIT_SPEC
        # No write at start: short shards write once, at the end; long ones heartbeat every interval.
        self.last_beat = time.monotonic()
        recorder, capture = self._recorder(job, plan)
        try:
            report = self.scan(
                plan, on_progress=self.progress, identify=services.Session,
                payloads=payloads.payload_bytes, identify_reply=payloads.identify_reply,
                stop=self.stop, args=f"shard {self.env.shard} attempt {self.env.attempt}",
                rate_limit_budget=udp_pacing_budget(plan),
            )
        except errors.ScanError as exc:
            self._patch({**self._base(), "lastError": f"{exc.reason}: {exc}", "finishedAttempt": self.env.attempt,
                         **self._evidence(recorder, capture)})
            return EXIT_SCAN
        except BaseException:
            if recorder is not None:  # close the last file properly even on an unexpected failure
                with contextlib.suppress(errors.PortolanError):
                    recorder.finish()
            raise
        found = [
            {"host": port.host, "port": port.port, "protocol": port.protocol.value,
             **({"service": port.service.name} if port.service else {})}
            for host in report.hosts for port in host.ports if port.state == results.PortState.OPEN
        ]
        fields: dict[str, Any] = {
            **self._base(), "done": report.summary.probes, "total": plan.probe_count,
            "states": report.summary.states, "open": found[: self.env.open_cap],
            "openTruncated": max(0, len(found) - self.env.open_cap),
            "finishedAttempt": self.env.attempt, **self._evidence(recorder, capture),
        }
        if not report.complete:
            fields["lastError"] = "Terminated: the shard was stopped; partial results kept"
            self._patch(fields)
            return EXIT_TERMINATED
        if not self._still_mine():
            return EXIT_SUPERSEDED
        fields["phase"] = "Succeeded"
        fields["lastError"] = None
        self._patch(fields)
        return EXIT_OK


def _validated_spec(job: Mapping[str, Any], name: str) -> scanjobs.ScanJobSpec:
    """A ScanJob's spec read by the models (their error count in the SpecError)."""
    import pydantic

    from portolan.models import scanjobs

    try:
        return scanjobs.ScanJobSpec.model_validate(job.get("spec"))
    except pydantic.ValidationError as exc:
        raise errors.SpecError(f"ScanJob {name} has no usable spec: {exc.error_count()} error(s)") from exc


def _validated_slice(spec: Mapping[str, Any], name: str) -> reading.Slice:
    """A ScanShard's spec read by the models (their error count in the SpecError)."""
    import pydantic

    from portolan.models import statuses

    try:
        shard = statuses.ShardPlan.model_validate(spec)
    except pydantic.ValidationError as exc:
        raise errors.SpecError(f"ScanShard {name} has no usable plan: {exc.error_count()} error(s)") from exc
    return reading.Slice(shard.id, shard.kind.value, shard.targets, shard.ports, shard.udp_ports, shard.node)


def _client() -> rest.ShardClient:
    """The standard library's HTTPS when the configuration allows (most pods), else the official client."""
    found = rest.from_environment()
    if found is not None:
        return found
    from portolan.kube import clients

    return clients.Kube(clients.client_from_environment())


def main() -> int:
    """``portolan shard``: run the shard this pod's environment names; returns the exit code."""
    import os

    from portolan.engine import stopping

    env = ShardEnv.from_environment(os.environ)
    with stopping.on_signals(threading.Event()) as stop:
        runner = ShardRunner(_client(), env, stop=stop)
        code = runner.run()
    print(f"portolan shard {env.shard} attempt {env.attempt}: exit {code}", file=sys.stderr)
    return code
