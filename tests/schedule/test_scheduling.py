"""ScanSchedules on fake time: the cron grammar, when runs start, policies, history, drift."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from portolan.controller.scanschedules import scheduling

T0 = datetime.datetime(2026, 11, 22, 12, 0, 30, tzinfo=datetime.UTC)  # a Sunday


def _at(text: str) -> datetime.datetime:
    return datetime.datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=datetime.UTC)


@pytest.mark.parametrize(
    ("schedule", "after", "expected"),
    [
        ("*/15 * * * *", "2026-11-22 12:07", "2026-11-22 12:15"),
        ("0 2 * * *", "2026-11-22 12:00", "2026-11-23 02:00"),
        ("@hourly", "2026-11-22 12:00", "2026-11-22 13:00"),
        ("30 9 * * mon-fri", "2026-11-21 10:00", "2026-11-23 09:30"),  # Saturday -> Monday
        ("0 0 1 jan *", "2026-11-22 12:00", "2027-01-01 00:00"),
        ("0 0 29 2 *", "2026-03-01 00:00", "2028-02-29 00:00"),  # the next leap day
        ("0 12 13 * 5", "2026-11-22 12:00", "2026-11-27 12:00"),  # day 13 OR Friday (Vixie cron)
        ("5,35 8-9 * * 0", "2026-11-22 08:05", "2026-11-22 08:35"),
        ("0 0 * * 7", "2026-11-22 12:00", "2026-11-29 00:00"),  # 7 is Sunday too
    ],
)
def test_cron_expressions_fire_at_the_next_matching_minute(schedule: str, after: str, expected: str) -> None:
    assert scheduling.parse(schedule).next_after(_at(after)) == _at(expected)


def test_every_adds_a_fixed_interval_to_the_last_run() -> None:
    assert scheduling.parse("@every 90s").next_after(T0) == T0 + datetime.timedelta(seconds=90)


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("* * * *", "cron needs 5 fields"),
        ("61 * * * *", "minute: 61 is outside 0-59"),
        ("* * * foo *", "month: 'foo' is not a number or a name"),
        ("*/0 * * * *", "step must be at least 1"),
        ("10-5 * * * *", "runs backwards"),
        ("@every 5s", "at least 10s"),
        ("@fortnightly", "unknown macro"),
        ("0 0 31 2 *", "never fires"),
    ],
)
def test_bad_schedules_are_refused_with_the_reason(schedule: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        scheduling.parse(schedule).next_after(T0)


def _schedule(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "portolan.dev/v1alpha1", "kind": "ScanSchedule",
        "metadata": {"name": "nightly", "namespace": "team", "uid": "s-1", "generation": 1,
                     "creationTimestamp": "2026-11-22T11:00:00Z"},
        "spec": {"schedule": "@hourly", "jobTemplate": {"spec": {"targets": {"addresses": ["198.18.0.10"]}}}, **spec},
        "status": {},
    }


def _results(*ports: int) -> list[dict[str, Any]]:
    return [{"pool": "default", "open": [{"host": "198.18.0.10", "port": p, "protocol": "tcp"} for p in ports]}]


def test_a_due_run_creates_an_owned_scanjob_named_after_its_time() -> None:
    decision = scheduling.decide(_schedule(), [], T0)
    job = decision.create
    assert job is not None and job["metadata"]["name"] == scheduling.job_name("nightly", _at("2026-11-22 12:00"))
    assert job["metadata"]["ownerReferences"][0]["uid"] == "s-1"
    assert job["metadata"]["labels"]["portolan.dev/schedule"] == "nightly"
    assert job["metadata"]["annotations"]["portolan.dev/scheduled-time"] == "2026-11-22T12:00:00Z"
    assert job["spec"]["targets"]["addresses"] == ["198.18.0.10"]
    assert decision.status["lastScheduleTime"] == "2026-11-22T12:00:00Z"
    assert decision.status["nextScheduleTime"] == "2026-11-22T13:00:00Z"
    assert decision.status["active"] == [job["metadata"]["name"]]


def test_nothing_happens_before_the_next_run_and_the_status_says_when() -> None:
    body = _schedule()
    body["status"] = {"lastScheduleTime": "2026-11-22T12:00:00Z"}
    decision = scheduling.decide(body, [], T0 + datetime.timedelta(minutes=10))
    assert decision.create is None and decision.status["nextScheduleTime"] == "2026-11-22T13:00:00Z"


def test_forbid_skips_a_run_while_the_last_one_runs_and_replace_deletes_it() -> None:
    running = scheduling.JobView("nightly-old", _at("2026-11-22 11:00"), "Running")
    body = _schedule()
    body["status"] = {"lastScheduleTime": "2026-11-22T11:00:00Z"}
    forbid = scheduling.decide(body, [running], T0)
    assert forbid.create is None and forbid.events[-1][1] == "RunSkipped"
    replace = scheduling.decide(_schedule(concurrencyPolicy="Replace") | {"status": body["status"]}, [running], T0)
    assert replace.create is not None and replace.delete == ["nightly-old"]


def test_a_run_missed_by_more_than_the_starting_deadline_is_skipped_with_an_event() -> None:
    body = _schedule(startingDeadlineSeconds=10)
    decision = scheduling.decide(body, [], T0)  # due at 12:00:00, now 12:00:30
    assert decision.create is None and decision.events[-1][1] == "MissedSchedule"
    assert decision.status["lastScheduleTime"] == "2026-11-22T12:00:00Z"


def test_old_runs_beyond_the_history_limits_are_deleted_oldest_first() -> None:
    jobs = [scheduling.JobView(f"nightly-{i}", _at(f"2026-11-22 0{i}:00"), "Complete", _results(22)) for i in range(5)]
    jobs += [scheduling.JobView("nightly-f", _at("2026-11-22 06:00"), "Failed")]
    body = _schedule(successfulJobsHistoryLimit=2, failedJobsHistoryLimit=0)
    body["status"] = {"lastScheduleTime": "2026-11-22T12:00:00Z"}
    decision = scheduling.decide(body, jobs, T0)
    assert decision.delete == ["nightly-0", "nightly-1", "nightly-2", "nightly-f"]


def test_drift_between_the_two_latest_completed_runs_is_reported_once() -> None:
    jobs = [scheduling.JobView("nightly-1", _at("2026-11-22 10:00"), "Complete", _results(22, 80)),
            scheduling.JobView("nightly-2", _at("2026-11-22 11:00"), "Complete", _results(22, 443))]
    body = _schedule()
    body["status"] = {"lastScheduleTime": "2026-11-22T12:00:00Z"}
    decision = scheduling.decide(body, jobs, T0)
    drift = decision.status["drift"]
    assert (drift["previous"], drift["latest"]) == ("nightly-1", "nightly-2")
    assert [c["port"] for c in drift["opened"]] == [443] and [c["port"] for c in drift["closed"]] == [80]
    assert [e[1] for e in decision.events] == ["DriftDetected"]
    drifted = next(c for c in decision.status["conditions"] if c["type"] == "Drifted")
    assert (drifted["status"], drifted["reason"]) == ("True", "PortsChanged")
    body["status"] = {**body["status"], **decision.status}  # a merge patch
    again = scheduling.decide(body, jobs, T0 + datetime.timedelta(seconds=30))
    assert again.events == []


def test_an_invalid_schedule_is_not_accepted_and_creates_nothing() -> None:
    decision = scheduling.decide(_schedule(schedule="61 * * * *"), [], T0)
    assert decision.create is None
    accepted = next(c for c in decision.status["conditions"] if c["type"] == "Accepted")
    assert accepted["status"] == "False" and "minute: 61 is outside 0-59" in accepted["message"]
    assert decision.events == [("Warning", "InvalidSpec", accepted["message"])]


def test_a_suspended_schedule_starts_nothing() -> None:
    decision = scheduling.decide(_schedule(suspend=True), [], T0)
    assert decision.create is None and decision.status["nextScheduleTime"] is None
