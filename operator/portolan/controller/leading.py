"""Leader election on a coordination.k8s.io Lease, as client-go's leaderelection package does it.

One replica holds the Lease and runs the controllers; the others poll it every
``retry_period`` and take it over only once its holder has not renewed it for
``lease_duration`` of *their own* observation time (no clock comparison between
machines).  There is no priority: a newcomer never preempts a live holder.  The
holder renews every ``retry_period``; if it cannot renew within ``renew_deadline``
it must stop working (the caller exits, the kubelet restarts it as a candidate).
On a graceful stop the holder releases the Lease at once (empty holder), so a
standby takes over on its next poll instead of waiting out the lease.

Pure decisions over an injected :class:`LeaseStore` and clock; the Kubernetes
store is :class:`portolan.kube.leases.KubeLeases`.  Limits: one Lease per
operator deployment; no fencing beyond the Lease's optimistic concurrency
(resourceVersion), as in client-go.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

LEASE_DURATION = 15.0
RENEW_DEADLINE = 10.0
RETRY_PERIOD = 2.0


class LeaseStore(Protocol):
    """Reads and writes one Lease; ``replace`` and ``create`` return False when another writer won."""

    def get(self) -> dict[str, Any] | None:
        """The Lease's ``spec`` plus ``resourceVersion``, or None when there is none."""

    def create(self, spec: dict[str, Any]) -> bool:
        """Create the Lease; False if it exists already."""

    def replace(self, spec: dict[str, Any], resource_version: str) -> bool:
        """Replace the Lease's spec if it is still at ``resource_version``; False on a conflict."""


def _micro(when: datetime.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclasses.dataclass
class Elector:
    """One candidate: ``try_acquire_or_renew`` decides and writes; ``release`` gives the Lease back."""

    store: LeaseStore
    identity: str
    lease_duration: float = LEASE_DURATION
    renew_deadline: float = RENEW_DEADLINE
    retry_period: float = RETRY_PERIOD
    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC)
    _observed_record: tuple[Any, ...] | None = None
    _observed_at: float = 0.0
    last_renewed: float | None = None  # monotonic time of our last successful write as holder

    def _record(self, spec: dict[str, Any]) -> tuple[Any, ...]:
        return (spec.get("holderIdentity"), spec.get("renewTime"), spec.get("leaseTransitions"))

    def try_acquire_or_renew(self) -> bool:
        """One attempt (client-go's tryAcquireOrRenew): True if we hold the Lease afterwards."""
        now = self.monotonic()
        wall = _micro(self.wall())
        mine = {"holderIdentity": self.identity, "leaseDurationSeconds": int(self.lease_duration),
                "acquireTime": wall, "renewTime": wall, "leaseTransitions": 0}
        current = self.store.get()
        if current is None:
            if self.store.create(mine):
                self.last_renewed = now
                return True
            return False
        record = self._record(current)
        if record != self._observed_record:
            self._observed_record, self._observed_at = record, now
        holder = current.get("holderIdentity") or ""
        duration = float(current.get("leaseDurationSeconds") or self.lease_duration)
        if holder and holder != self.identity and self._observed_at + duration > now:
            self.last_renewed = None  # someone else holds it (we may have lost it): stop at once
            return False  # held, and renewed within its duration as far as we have seen
        spec = dict(mine)
        if holder == self.identity:
            spec["acquireTime"] = current.get("acquireTime") or wall
            spec["leaseTransitions"] = int(current.get("leaseTransitions") or 0)
        else:
            spec["leaseTransitions"] = int(current.get("leaseTransitions") or 0) + 1
        if not self.store.replace(spec, str(current["resourceVersion"])):
            return False
        self._observed_record, self._observed_at = self._record(spec), now
        self.last_renewed = now
        return True

    def still_leading(self) -> bool:
        """Whether the last successful renewal is within the renew deadline."""
        return self.last_renewed is not None and self.monotonic() - self.last_renewed < self.renew_deadline

    def release(self) -> bool:
        """Give the Lease back at once if we hold it (empty holder, 1 s duration, as client-go)."""
        current = self.store.get()
        if current is None or current.get("holderIdentity") != self.identity:
            return False
        wall = _micro(self.wall())
        spec = {"holderIdentity": None, "leaseDurationSeconds": 1, "acquireTime": wall, "renewTime": wall,
                "leaseTransitions": int(current.get("leaseTransitions") or 0)}
        released = self.store.replace(spec, str(current["resourceVersion"]))
        if released:
            self.last_renewed = None
        return released


def acquire(elector: Elector, stop: threading.Event) -> bool:
    """Block until this candidate holds the Lease (True) or ``stop`` is set (False)."""
    while not stop.is_set():
        try:
            if elector.try_acquire_or_renew():
                return True
        except Exception:  # an API hiccup is one failed attempt, as in client-go
            pass
        stop.wait(elector.retry_period)
    return False


def renew_until_lost(elector: Elector, stop: threading.Event, lost: threading.Event) -> None:
    """Renew every retry period until ``stop``; set ``lost`` once the renew deadline passes unrenewed."""
    while not stop.wait(elector.retry_period):
        with contextlib.suppress(Exception):  # retried until the deadline
            elector.try_acquire_or_renew()
        if not elector.still_leading():
            lost.set()
            return
