"""Shard planning: deterministic, balanced by probes, compact, and guarded."""

from __future__ import annotations

import json

import pytest

from portolan import errors
from portolan.controller.scanjobs import planning
from portolan.models import scanjobs, settings


def _spec(**fields: object) -> scanjobs.ScanJobSpec:
    return scanjobs.ScanJobSpec.model_validate({"targets": {"addresses": ["198.18.0.1"]}, **fields})


CONFIG = settings.OperatorSettings()


@pytest.mark.parametrize(
    ("addresses", "ports", "shards", "sizes"),
    [
        (["198.18.0.0/30"], "22,80", 2, [4, 4]),
        (["198.18.0.0/30"], "22,80", 3, [4, 2, 2]),
        (["198.18.0.1"], "1-10", 3, [4, 3, 3]),
        (["198.18.0.1"], "22", 5, [1]),
    ],
)
def test_shards_are_balanced_by_probe_count(addresses: list[str], ports: str, shards: int, sizes: list[int]) -> None:
    spec = _spec(ports=ports, sharding={"shards": shards})
    plan = planning.plan(spec, CONFIG, addresses)
    assert [s.probes for s in plan] == sizes
    assert sum(s.probes for s in plan) == planning.targets_.count_addresses(addresses) * len(planning.ports_.parse_ports(ports))


def test_every_pool_gets_the_same_split_and_its_own_shard_ids() -> None:
    spec = _spec(ports="22,80", sharding={"shards": 3}, pools=[{"name": "edge"}, {"name": "cloud"}])
    plan = planning.plan(spec, CONFIG, ["198.18.0.0/29"])
    assert [s.id for s in plan] == ["edge-0", "edge-1", "edge-2", "cloud-0", "cloud-1", "cloud-2"]
    assert [s.targets for s in plan[:3]] == [s.targets for s in plan[3:]]
    assert [s.targets for s in plan[:3]] == [["198.18.0.0-198.18.0.2"], ["198.18.0.3-198.18.0.5"], ["198.18.0.6-198.18.0.7"]]


def test_the_same_spec_always_plans_the_same_shards() -> None:
    spec = _spec(ports="common", sharding={"targetsPerShard": 10})
    first = planning.plan(spec, CONFIG, ["198.18.0.0/26"])
    second = planning.plan(spec, CONFIG, ["198.18.0.0/26"])
    assert first == second and len(first) == 7


def test_a_65536_target_plan_stays_small() -> None:
    spec = _spec(ports="22", sharding={"shards": 64})
    plan = planning.plan(spec, CONFIG, ["198.18.0.0/16"])
    assert len(plan) == 64
    assert len(json.dumps([s.model_dump(by_alias=True) for s in plan])) < 16 * 1024


@pytest.mark.parametrize(
    ("addresses", "fields", "config", "message"),
    [
        (["198.18.0.0/8"], {"ports": "all"}, CONFIG, "above the limit"),
        (["198.18.0.1"], {}, settings.OperatorSettings(allowedCidrs=["198.19.0.0/16"]), "outside the allowed CIDRs"),
        (["198.18.0.1"], {}, settings.OperatorSettings(deniedCidrs=["198.18.0.0/24"]), "denied CIDR"),
        (["198.18.0.0/15"], {"ports": "1-30000"}, CONFIG, "probes, above the limit"),
    ],
)
def test_guardrails_reject_specs_before_expanding_them(
    addresses: list[str], fields: dict[str, object], config: settings.OperatorSettings, message: str
) -> None:
    with pytest.raises(errors.GuardrailError, match=message):
        planning.plan(_spec(**fields), config, addresses)


def test_compact_ranges_round_trip_through_the_target_grammar() -> None:
    addresses = ["198.18.0.1", "198.18.0.2", "198.18.0.3", "198.18.0.9", "::1", "::2"]
    runs = planning.compact(addresses)
    assert runs == ["198.18.0.1-198.18.0.3", "198.18.0.9", "::1-::2"]
    assert [t.address for t in planning.targets_.parse_targets(runs)] == addresses


def test_port_expressions_are_the_shortest_ranges() -> None:
    assert planning.port_expression([1, 2, 3, 5, 7, 8]) == "1-3,5,7-8"
