"""A shard reads its slice and scan options without pydantic, exactly as the models would.

The shard's plain readers (:mod:`portolan.shard.reading`) take well-formed fields
directly and hand anything else to the models; these tables hold both paths to the
same result, and a subprocess holds a shard's start to its promise of not loading pydantic.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from portolan.engine import plans
from portolan.models import scanjobs, statuses
from portolan.shard import reading

_TARGETS = {"addresses": ["198.18.0.0/30"]}


def _by_models(spec: dict[str, Any]) -> reading.Options:
    model = scanjobs.ScanJobSpec.model_validate(spec)
    return reading.Options(model.targets.exclude, plans.timing_of(model.timing), model.service_detection,
                           model.verify_open, model.technique)


@pytest.mark.parametrize(
    "spec",
    [
        {"targets": _TARGETS},
        {"targets": {**_TARGETS, "exclude": ["198.18.0.1", "198.18.0.2/31"]}, "ports": "1-1000"},
        {"targets": _TARGETS, "technique": "syn", "serviceDetection": False, "verifyOpen": True},
        {"targets": _TARGETS, "timing": {"retries": 0, "concurrency": 1_000_000, "maxRate": 5000}},
        {"targets": _TARGETS, "timing": {"minRttTimeoutMs": 50, "maxRttTimeoutMs": 50, "initialRttTimeoutMs": 60_000}},
        {"targets": _TARGETS, "timing": {"maxRate": None, "maxHostRate": 1}},
        {"targets": _TARGETS, "pools": [{"name": "edge"}], "sharding": {"shards": 4}, "retries": 0},
    ],
)
def test_a_plain_job_spec_gives_the_shard_the_options_the_models_give(spec: dict[str, Any]) -> None:
    assert reading.scan_options(spec) == _by_models(spec)


@pytest.mark.parametrize(
    "spec",
    [
        {"targets": _TARGETS, "timing": {"retries": "3"}},  # the models coerce strings; their business
        {"targets": _TARGETS, "timing": {"retries": 11}},
        {"targets": _TARGETS, "timing": {"concurrency": 0}},
        {"targets": _TARGETS, "timing": {"retries": True}},
        {"targets": _TARGETS, "timing": {"minRttTimeoutMs": 200, "maxRttTimeoutMs": 100}},
        {"targets": _TARGETS, "timing": {"min_rtt_timeout_ms": 200}},
        {"targets": _TARGETS, "timing": {"burst": 3}},
        {"targets": _TARGETS, "technique": "fin"},
        {"targets": _TARGETS, "serviceDetection": "yes"},
        {"targets": {**_TARGETS, "exclude": ["x" * 300]}},
        {"targets": {**_TARGETS, "exclude": "198.18.0.1"}},
        {"targets": _TARGETS, "capture": {"persistentVolumeClaim": "evidence"}},
        {"targets": "198.18.0.1"},
        {"targets": _TARGETS, "technique": ["syn"]},
        {"targets": _TARGETS, "timing": None},
        {"targets": _TARGETS, "service_detection": False},
        {"targets": {**_TARGETS, "excludes": ["198.18.0.1"]}},
    ],
)
def test_anything_not_plainly_well_formed_is_left_to_the_models(spec: dict[str, Any]) -> None:
    assert reading.scan_options(spec) is None


_SLICE = {"id": "edge-0", "pool": "edge", "index": 0, "targets": ["198.18.0.0-198.18.0.3"], "ports": "22,80",
          "probes": 8}


@pytest.mark.parametrize(
    "spec",
    [
        _SLICE,
        {**_SLICE, "udpPorts": "53", "node": "edge-1"},
        {**_SLICE, "kind": "inventory", "node": "edge-1", "ports": ""},
        {**_SLICE, "udpPorts": None, "node": None},
    ],
)
def test_a_plain_scanshard_spec_gives_the_slice_the_models_give(spec: dict[str, Any]) -> None:
    model = statuses.ShardPlan.model_validate(spec)
    assert reading.shard_slice(spec) == reading.Slice(model.id, model.kind.value, model.targets, model.ports,
                                                      model.udp_ports, model.node)


@pytest.mark.parametrize(
    "spec",
    [
        {**_SLICE, "kind": "listen"},
        {**_SLICE, "index": "0"},
        {**_SLICE, "targets": "198.18.0.1"},
        {**_SLICE, "extra": 1},
        {key: value for key, value in _SLICE.items() if key != "id"},
    ],
)
def test_a_scanshard_spec_not_plainly_well_formed_is_left_to_the_models(spec: dict[str, Any]) -> None:
    assert reading.shard_slice(spec) is None


@pytest.mark.parametrize(("status", "expected"), [({}, 0), ({"attempt": 3, "phase": "Running"}, 3),
                                                 ({"attempt": "3"}, None), ({"attempt": True}, None)])
def test_a_shards_attempt_is_read_plainly_when_it_is_an_integer(status: dict[str, Any], expected: int | None) -> None:
    assert reading.attempt(status) == expected
    if expected is not None:
        assert statuses.ShardStatus.model_validate(status).attempt == expected


_PROBE = """
import sys, threading
from portolan.shard import running

class Api:  # stands in for the API server: the bodies a shard reads
    def get_job(self, namespace, name):
        return {"spec": {"targets": {"addresses": ["198.18.0.1"]}, "ports": "22", "timing": {"retries": 0}}}
    def get_scan_shard(self, namespace, name):
        return {"spec": {"id": "edge-0", "pool": "edge", "index": 0, "targets": ["198.18.0.1"], "ports": "22",
                         "probes": 1}, "status": {"attempt": 1}}

env = running.ShardEnv(namespace="team", job="audit", shard="edge-0", attempt=1, open_cap=200,
                       heartbeat_seconds=60.0, pod=None, node=None)
runner = running.ShardRunner(Api(), env, stop=threading.Event())
job = runner.kube.get_job("team", "audit")
assert runner._still_mine()
plan = runner.scan_plan(job)
assert [t.address for t in plan.targets] == ["198.18.0.1"] and plan.tcp_ports == [22] and plan.timing.retries == 0
print("pydantic loaded" if "pydantic" in sys.modules else "pydantic not loaded")
"""


def test_a_shard_of_a_plain_job_plans_its_scan_without_loading_pydantic() -> None:
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "pydantic not loaded"
