"""The chart's Argo CD health scripts under lua5.1, on objects recorded from a real operator run.

tests/golden/argocd holds ScanJobs and ScanSchedules as the API server returned them during
tests/cluster/test_health_and_alerts.py, which also checks that they still look like what the
operator writes. Each one is judged here as the issue's table says.
"""

from __future__ import annotations

import copy
import json
import pathlib
from typing import Any

import pytest

from harness import argocd

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests/golden/argocd"


def _recorded(case: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{case}.json").read_text())  # type: ignore[no-any-return]


def test_every_case_of_the_table_has_a_recorded_object() -> None:
    assert {path.stem for path in FIXTURES.glob("*.json")} == set(argocd.EXPECTED)


@pytest.mark.parametrize("case", sorted(argocd.EXPECTED))
def test_a_recorded_object_gets_the_health_the_table_gives_it(case: str) -> None:
    kind, status, words = argocd.EXPECTED[case]
    obj = _recorded(case)
    assert obj["kind"] == kind
    judged = argocd.health(kind, obj)
    assert judged.status == status and words in judged.message, judged


def test_a_rejected_job_whose_spec_changed_since_is_progressing_until_the_operator_looks_again() -> None:
    obj = copy.deepcopy(_recorded("scanjob-rejected"))
    obj["metadata"]["generation"] = obj["status"]["observedGeneration"] + 1
    assert argocd.health("ScanJob", obj) == argocd.Health("Progressing", "The spec changed since it was rejected; "
                                                                         "waiting for the Portolan operator")


def test_a_running_job_with_a_retrying_shard_stays_progressing_and_says_so() -> None:
    obj = copy.deepcopy(_recorded("scanjob-running"))
    degraded = {"type": "Degraded", "status": "True", "reason": "ShardRetrying", "message": "0 failed, 1 retrying"}
    obj["status"]["conditions"] = [c for c in obj["status"]["conditions"] if c["type"] != "Degraded"] + [degraded]
    judged = argocd.health("ScanJob", obj)
    assert judged.status == "Progressing" and judged.message.endswith("(ShardRetrying: 0 failed, 1 retrying)")


def test_a_schedule_whose_spec_changed_since_the_operator_saw_it_is_progressing() -> None:
    obj = copy.deepcopy(_recorded("scanschedule-healthy"))
    obj["metadata"]["generation"] += 1
    assert argocd.health("ScanSchedule", obj).status == "Progressing"


def test_messages_survive_quotes_backslashes_and_non_ascii_text() -> None:
    obj = copy.deepcopy(_recorded("scanjob-failed"))
    tricky = 'shard "edge-0" on n\\ode: über\nnext line'
    for condition in obj["status"]["conditions"]:
        if condition["type"] == "Failed":
            condition["message"] = tricky
    assert argocd.health("ScanJob", obj).message == f"DeadlineExceeded: {tricky}"
