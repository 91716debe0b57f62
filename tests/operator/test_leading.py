"""Lease election on fake time: acquisition, renewal, takeover only after the lease expires, release."""

from __future__ import annotations

import copy
import datetime
from typing import Any

from portolan.controller import leading

T0 = datetime.datetime(2026, 11, 23, 9, 0, tzinfo=datetime.UTC)


class Leases:
    """An in-memory Lease with optimistic concurrency (test-only)."""

    def __init__(self) -> None:
        self.spec: dict[str, Any] | None = None
        self.version = 0

    def get(self) -> dict[str, Any] | None:
        return None if self.spec is None else {**copy.deepcopy(self.spec), "resourceVersion": str(self.version)}

    def create(self, spec: dict[str, Any]) -> bool:
        if self.spec is not None:
            return False
        self.spec, self.version = copy.deepcopy(spec), 1
        return True

    def replace(self, spec: dict[str, Any], resource_version: str) -> bool:
        if resource_version != str(self.version):
            return False
        self.spec, self.version = copy.deepcopy(spec), self.version + 1
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> datetime.datetime:
        return T0 + datetime.timedelta(seconds=self.now)


def _pair() -> tuple[Leases, Clock, leading.Elector, leading.Elector]:
    store, clock = Leases(), Clock()
    first = leading.Elector(store, "a", monotonic=clock.monotonic, wall=clock.wall)
    second = leading.Elector(store, "b", monotonic=clock.monotonic, wall=clock.wall)
    return store, clock, first, second


def test_the_first_candidate_creates_the_lease_with_client_go_timings_and_renews_it() -> None:
    store, clock, first, _ = _pair()
    assert first.try_acquire_or_renew()
    assert store.spec is not None
    assert (store.spec["holderIdentity"], store.spec["leaseDurationSeconds"]) == ("a", 15)
    clock.now += 2
    assert first.try_acquire_or_renew() and first.still_leading()
    assert store.spec["renewTime"].endswith("Z") and store.spec["leaseTransitions"] == 0


def test_a_newcomer_never_preempts_a_holder_that_keeps_renewing() -> None:
    _, clock, first, second = _pair()
    first.try_acquire_or_renew()
    for _ in range(30):
        clock.now += 2
        assert first.try_acquire_or_renew()
        assert not second.try_acquire_or_renew()


def test_a_standby_takes_over_only_after_the_lease_duration_of_its_own_observation() -> None:
    store, clock, first, second = _pair()
    first.try_acquire_or_renew()
    assert not second.try_acquire_or_renew()  # first observation of the record
    clock.now += 14.9
    assert not second.try_acquire_or_renew()
    clock.now += 0.2
    assert second.try_acquire_or_renew()
    assert store.spec is not None and store.spec["holderIdentity"] == "b" and store.spec["leaseTransitions"] == 1
    assert not first.try_acquire_or_renew() and not first.still_leading()  # the old holder learns it lost


def test_a_released_lease_is_taken_over_on_the_next_poll() -> None:
    store, clock, first, second = _pair()
    first.try_acquire_or_renew()
    assert not second.try_acquire_or_renew()
    assert first.release()
    assert store.spec is not None and store.spec["holderIdentity"] is None
    clock.now += 2
    assert second.try_acquire_or_renew()


def test_a_holder_that_cannot_renew_within_the_deadline_is_no_longer_leading() -> None:
    _, clock, first, _ = _pair()
    first.try_acquire_or_renew()
    clock.now += 9.9
    assert first.still_leading()
    clock.now += 0.2
    assert not first.still_leading()


def test_two_candidates_writing_at_once_cannot_both_win() -> None:
    store, _, first, second = _pair()
    first.try_acquire_or_renew()
    first.release()
    seen = store.get()
    assert seen is not None
    assert first.store.replace({"holderIdentity": "a"}, seen["resourceVersion"])
    assert not second.store.replace({"holderIdentity": "b"}, seen["resourceVersion"])
