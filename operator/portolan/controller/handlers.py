"""kopf handlers: thin delegations to the controllers (:mod:`.scanjobs.reconciling`, :mod:`.scanschedules.scheduling`).

Everything is built inside :func:`build_registry` from injected settings, API
client and metrics (nothing happens at import).  Portolan errors become kopf
errors only here: API failures are temporary (kopf retries with a delay); bad
specs never raise — reconciliation turns them into ``Accepted=False`` and an
Event, so a bad object cannot crash-loop the operator.  kopf's per-object timers
make kopf put its finalizer on every ScanJob; on shutdown the finalizers are
released, so ScanJobs stay deletable while no operator runs.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import datetime
import http.server
import logging
import os
import pathlib
import secrets
import signal
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any

import kopf
import prometheus_client

from portolan import errors
from portolan.controller import configuring, leading, metrics
from portolan.controller.reachabilityaudits import auditing, expecting
from portolan.controller.scanjobs import reconciling
from portolan.controller.scanschedules import scheduling
from portolan.kube import clients, leases
from portolan.models import audits, scanjobs, schedules, settings, statuses

KOPF_FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"
FRESH_WORKERS = 4


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def build_registry(
    config: settings.OperatorSettings, client: clients.Client, gauges: metrics.Metrics,
    namespaces: Sequence[str] = (), leading: Callable[[], bool] = lambda: True,
    evaluate: auditing.Evaluator | None = None,
) -> kopf.OperatorRegistry:
    """A kopf registry whose handlers delegate to the controllers, with everything injected."""
    registry = kopf.OperatorRegistry()
    phases: dict[str, str] = {}
    finalizer: dict[str, str] = {}
    worked = {"any": False}  # a paused standby replica never runs a handler
    resource = (scanjobs.API_GROUP, scanjobs.API_VERSION, scanjobs.PLURAL)

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # A custom registry has none of kopf's default login handlers: use the kubernetes client's
        # configuration (in-cluster service account, or KUBECONFIG) as the rest of Portolan does.
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="portolan.dev")
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="portolan.dev")
        settings.posting.level = logging.WARNING
        settings.watching.server_timeout = 60
        finalizer["name"] = settings.persistence.finalizer

    locks: collections.defaultdict[str, threading.Lock] = collections.defaultdict(threading.Lock)

    def run_step(namespace: str | None, name: str, uid: str) -> None:
        if namespace is None:
            return  # ScanJobs are namespaced; nothing to do for a cluster-scoped event
        worked["any"] = True
        # kopf runs an object's timer and its change handlers concurrently; two steps interleaving
        # (one listing pods before the other created one) would see a fresh pod as missing.
        with locks[uid]:
            run_step_locked(namespace, name, uid)

    def run_step_locked(namespace: str, name: str, uid: str) -> None:
        try:
            actions = reconciling.step(client, config, gauges, namespace, name, _now())
        except errors.KubeError as exc:
            gauges.reconcile_errors.labels(reason=exc.reason).inc()
            if exc.status == 404:
                gauges.forget_job(namespace, name)
                return
            raise kopf.TemporaryError(str(exc), delay=5) from exc
        phase = actions.status.get("phase")
        if phase:
            phases[uid] = phase
        counts = {p.value: 0 for p in statuses.Phase}
        for value in phases.values():
            counts[value] = counts.get(value, 0) + 1
        for key, count in counts.items():
            gauges.jobs.labels(phase=key).set(count)

    # A new or changed ScanJob must not queue behind the periodic steps of every other job in
    # kopf's shared thread pool (with a few hundred jobs ticking, Accepted waited seconds): its
    # step runs on a pool of its own.  Resumes at startup stay in the shared pool, so a restart
    # over a thousand jobs cannot starve a fresh one either.
    fresh = concurrent.futures.ThreadPoolExecutor(max_workers=FRESH_WORKERS, thread_name_prefix="portolan-fresh")

    @kopf.on.create(*resource, registry=registry)
    @kopf.on.update(*resource, registry=registry, field="spec")
    async def changed(namespace: str | None, name: str, uid: str, **_: Any) -> None:
        await asyncio.get_running_loop().run_in_executor(fresh, run_step, namespace, name, uid)

    @kopf.on.resume(*resource, registry=registry)
    def resumed(namespace: str | None, name: str, uid: str, **_: Any) -> None:
        run_step(namespace, name, uid)

    # The first tick waits one interval: at creation the create handler steps the job already, and
    # a tick at the same moment would only make it wait on the job's lock.
    @kopf.timer(*resource, registry=registry, interval=config.reconcile_interval_seconds, sharp=True,
                initial_delay=config.reconcile_interval_seconds,
                when=lambda body, **_: reconciling.ticks_needed(body))
    def tick(namespace: str | None, name: str, uid: str, **_: Any) -> None:
        run_step(namespace, name, uid)

    schedule_resource = (scanjobs.API_GROUP, scanjobs.API_VERSION, schedules.PLURAL)

    def run_schedule(namespace: str | None, name: str) -> None:
        if namespace is None:
            return
        worked["any"] = True
        with locks[f"schedule/{namespace}/{name}"]:
            run_schedule_locked(namespace, name)

    def run_schedule_locked(namespace: str, name: str) -> None:
        try:
            decision = scheduling.step(client, namespace, name, _now())
        except errors.KubeError as exc:
            gauges.reconcile_errors.labels(reason=exc.reason).inc()
            if exc.status == 404:
                gauges.forget_schedule(namespace, name)
                return
            raise kopf.TemporaryError(str(exc), delay=5) from exc
        gauges.observe_schedule(namespace, name, decision.status)
        gauges.drift_ports.labels(change="opened").inc(decision.drift_opened)
        gauges.drift_ports.labels(change="closed").inc(decision.drift_closed)

    @kopf.on.create(*schedule_resource, registry=registry)
    @kopf.on.resume(*schedule_resource, registry=registry)
    @kopf.on.update(*schedule_resource, registry=registry, field="spec")
    def schedule_changed(namespace: str | None, name: str, **_: Any) -> None:
        run_schedule(namespace, name)

    @kopf.timer(*schedule_resource, registry=registry, interval=config.reconcile_interval_seconds, sharp=True)
    def schedule_tick(namespace: str | None, name: str, **_: Any) -> None:
        run_schedule(namespace, name)

    audit_resource = (scanjobs.API_GROUP, scanjobs.API_VERSION, audits.PLURAL)

    def run_audit(name: str) -> None:
        if evaluate is None:
            return  # an operator built without the policy evaluator (tests of the other kinds)
        worked["any"] = True
        with locks[f"audit/{name}"]:
            try:
                actions = auditing.step(client, config, name, _now(), evaluate)
            except errors.KubeError as exc:
                gauges.reconcile_errors.labels(reason=exc.reason).inc()
                if exc.status == 404:
                    return
                raise kopf.TemporaryError(str(exc), delay=5) from exc
        for kind, count in actions.mismatches.items():
            gauges.reachability_mismatches.labels(audit=name, kind=kind).set(count)

    @kopf.on.create(*audit_resource, registry=registry)
    @kopf.on.resume(*audit_resource, registry=registry)
    @kopf.on.update(*audit_resource, registry=registry, field="spec")
    def audit_changed(name: str, **_: Any) -> None:
        run_audit(name)

    @kopf.timer(*audit_resource, registry=registry, interval=config.reconcile_interval_seconds, sharp=True)
    def audit_tick(name: str, **_: Any) -> None:
        run_audit(name)

    @kopf.on.event(*audit_resource, registry=registry)
    def audit_reported(name: str, body: kopf.Body, type: str | None, **_: Any) -> None:
        # kopf sees no status changes in its diffs; the raw watch event of the last probe's
        # report concludes the audit now rather than at the next tick.
        if type == "MODIFIED" and auditing.all_reported(body):
            run_audit(name)

    @kopf.on.delete(*audit_resource, registry=registry, optional=True)
    def audit_deleted(name: str, **_: Any) -> None:
        gauges.forget_audit(name)
        locks.pop(f"audit/{name}", None)

    @kopf.on.cleanup(registry=registry)
    def release(logger: kopf.Logger, **_: Any) -> None:
        # kopf timers put kopf's finalizer on every ScanJob; without a running operator nothing
        # would remove it and `kubectl delete` would hang (e.g. after helm uninstall). Release
        # them on the way out; the next operator to start puts them back.
        if not leading():
            # The Lease was lost: another replica leads now and owns those finalizers.
            logger.info("leadership lost; finalizers left to the new leader")
            return
        if not worked["any"]:
            # A standby (peering paused it) stopping must not strip the active replica's finalizers.
            logger.info("this replica handled nothing (a standby); finalizers left to the active one")
            return
        count = 0
        for plural in (scanjobs.PLURAL, schedules.PLURAL, audits.PLURAL):  # one kind failing spares the others
            try:
                count += client.release_finalizer(namespaces, finalizer.get("name", KOPF_FINALIZER), plural)
            except errors.KubeError as exc:
                logger.warning(f"could not release the finalizers of {plural} on shutdown: {exc}")
        logger.info(f"released the finalizer of {count} ScanJob(s), ScanSchedule(s) and ReachabilityAudit(s) on shutdown")

    @kopf.on.delete(*resource, registry=registry, optional=True)
    def deleted(namespace: str | None, name: str, uid: str, **_: Any) -> None:
        phases.pop(uid, None)
        locks.pop(uid, None)
        if namespace is not None:
            gauges.forget_job(namespace, name)

    @kopf.on.delete(*schedule_resource, registry=registry, optional=True)
    def schedule_deleted(namespace: str | None, name: str, **_: Any) -> None:
        locks.pop(f"schedule/{namespace}/{name}", None)
        if namespace is not None:
            gauges.forget_schedule(namespace, name)

    return registry


def run(settings_path: str | None, namespaces: list[str], *, standalone: bool, verbose: bool = False,
        settings_text: str | None = None) -> int:
    """The operator's entry point (``portolan operator``).

    With several replicas (``peering`` names the Lease), each is a candidate in a Lease election
    (:mod:`.leading`): a standby waits without watching anything; the holder runs kopf standalone.
    A holder that cannot renew within the deadline stops kopf and exits 1 (the kubelet restarts it
    as a candidate); a graceful stop (SIGTERM) releases the Lease at once.
    """
    kopf.configure(verbose=verbose, log_prefix=True)
    config = configuring.load(settings_path, settings_text)
    api_client = clients.client_from_environment()
    clients.check_reachable(api_client)  # unreachable: one line and exit 3 now, not kopf's retries and a traceback
    client = clients.Kube(api_client)
    gauges = metrics.Metrics(prometheus_client.CollectorRegistry())
    if config.metrics_port:
        # Served from the start, by standbys too: the chart's readiness probe is this port, and a standby
        # that is never Ready would hold `helm install --wait` and every rollout.
        prometheus_client.start_http_server(config.metrics_port, registry=gauges.registry)
    alone = standalone or config.peering is None
    elector = None
    stop, lost = threading.Event(), threading.Event()
    if not alone:
        identity = f"{os.environ.get('POD_NAME') or socket.gethostname()}_{secrets.token_hex(4)}"
        lease_namespace = os.environ.get("POD_NAMESPACE") or _own_namespace() or "default"
        elector = leading.Elector(leases.KubeLeases(api_client, lease_namespace, str(config.peering)), identity)
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
        logging.getLogger("portolan").warning(
            f"candidate {identity} for Lease {lease_namespace}/{config.peering}: waiting for leadership")
        health = _standby_health(config.liveness_port) if config.liveness_port else None
        try:
            if not leading.acquire(elector, stop):
                return 0  # stopped while standing by: nothing held, nothing to release
        finally:
            if health is not None:  # kopf serves /healthz from here on, on the same port
                health.shutdown()
                health.server_close()
        signal.signal(signal.SIGTERM, previous)
        logging.getLogger("portolan").warning(f"{identity} leads (Lease {lease_namespace}/{config.peering})")
        threading.Thread(target=_renew, args=(elector, stop, lost), daemon=True,
                         name="portolan-lease").start()
    registry = build_registry(config, client, gauges, namespaces, leading=lambda: not lost.is_set(),
                              evaluate=expecting.from_policies)
    try:
        kopf.run(
            registry=registry,
            clusterwide=not namespaces,
            namespaces=namespaces,
            standalone=True,  # exclusivity comes from the Lease, not kopf peering
            liveness_endpoint=f"http://0.0.0.0:{config.liveness_port}/healthz" if config.liveness_port else None,
        )
    finally:
        stop.set()
        if elector is not None and not lost.is_set():
            try:
                elector.release()
            except Exception as exc:  # the Lease then simply expires
                logging.getLogger("portolan").warning(f"could not release the Lease: {exc}")
    if lost.is_set():
        logging.getLogger("portolan").error("lost the Lease (not renewed within the deadline): exiting")
        return 1
    return 0


def _renew(elector: leading.Elector, stop: threading.Event, lost: threading.Event) -> None:
    """Keep the Lease; once it is lost, stop kopf as a SIGTERM would (kopf.run then returns).

    Not kopf's ``stop_flag``: kopf waits for a threading.Event or a concurrent Future in a thread
    of the loop's default executor, which asyncio.run joins at exit, so a flag never set hangs
    every other shutdown (a SIGTERMed leader never got to release its Lease).
    """
    leading.renew_until_lost(elector, stop, lost)
    if lost.is_set():
        os.kill(os.getpid(), signal.SIGTERM)


class _Healthy(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"standby\n")

    def log_message(self, *_: Any) -> None:
        return


def _standby_health(port: int) -> http.server.ThreadingHTTPServer:
    """/healthz for a standby replica (kopf, which serves it when leading, does not run yet)."""
    server = http.server.ThreadingHTTPServer(("0.0.0.0", port), _Healthy)
    threading.Thread(target=server.serve_forever, daemon=True, name="portolan-standby-health").start()
    return server


def _own_namespace() -> str | None:
    """The namespace of the pod's service account, when running in a cluster."""
    path = pathlib.Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    return path.read_text().strip() if path.exists() else None
