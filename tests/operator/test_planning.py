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


EDGE_TAINT = planning.Taint("portolan.dev/edge", "true", "NoSchedule")
NODES = (
    planning.NodeView("edge-1", {"pool": "edge"}, (EDGE_TAINT,)),
    planning.NodeView("edge-2", {"pool": "edge"}, (EDGE_TAINT,)),
    planning.NodeView("cloud-1", {"pool": "cloud", "zone": "a"}),
    planning.NodeView("cloud-2", {"pool": "cloud", "zone": "b"}),
    planning.NodeView("cloud-3", {"pool": "cloud"}, ready=False),
    planning.NodeView("cloud-4", {"pool": "cloud"}, unschedulable=True),
    planning.NodeView("cloud-5", {"pool": "cloud"}, (planning.Taint("gpu", None, "PreferNoSchedule"),)),
)
TOLERATE_EDGE = [{"key": "portolan.dev/edge", "operator": "Exists"}]


@pytest.mark.parametrize(
    ("pool", "names"),
    [
        ({"name": "p"}, ["cloud-1", "cloud-2", "cloud-5"]),
        ({"name": "p", "nodeSelector": {"pool": "edge"}}, []),
        ({"name": "p", "nodeSelector": {"pool": "edge"}, "tolerations": TOLERATE_EDGE}, ["edge-1", "edge-2"]),
        ({"name": "p", "tolerations": [{"operator": "Exists"}]}, ["cloud-1", "cloud-2", "cloud-5", "edge-1", "edge-2"]),
        ({"name": "p", "tolerations": [{"key": "portolan.dev/edge", "value": "true", "effect": "NoSchedule"}]},
         ["cloud-1", "cloud-2", "cloud-5", "edge-1", "edge-2"]),
        ({"name": "p", "tolerations": [{"key": "portolan.dev/edge", "value": "false"}]}, ["cloud-1", "cloud-2", "cloud-5"]),
        ({"name": "p", "tolerations": [{"key": "portolan.dev/edge", "operator": "Exists", "effect": "NoExecute"}]},
         ["cloud-1", "cloud-2", "cloud-5"]),
        ({"name": "p", "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}]}}}},
         ["cloud-1", "cloud-2"]),
        ({"name": "p", "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]},
                                  {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["cloud-2"]}]}]}}}},
         ["cloud-2", "cloud-5"]),
        ({"name": "p", "affinity": {"podAntiAffinity": {}}}, ["cloud-1", "cloud-2", "cloud-5"]),
    ],
)
def test_a_pool_can_use_the_ready_schedulable_nodes_its_selector_affinity_and_tolerations_allow(
    pool: dict[str, object], names: list[str]
) -> None:
    assert planning.pool_nodes(scanjobs.Pool.model_validate(pool), NODES) == names


ALL_NODES = [{"name": "all", "tolerations": TOLERATE_EDGE}]
TEST_BED = NODES[:4]  # edge-1, edge-2 (tainted), cloud-1, cloud-2


@pytest.mark.parametrize(
    ("fields", "addresses", "layout"),
    [
        # 200 UDP ports of one host, a pool of four nodes: four slices of 50, one per node.
        ({"protocols": ["udp"], "udpPorts": "1-200", "pools": ALL_NODES}, ["198.18.0.1"],
         [("", "1-50", "cloud-1"), ("", "51-100", "cloud-2"), ("", "101-150", "edge-1"), ("", "151-200", "edge-2")]),
        # the default pool (no toleration) has the two cloud nodes
        ({"protocols": ["udp"], "udpPorts": "1-10"}, ["198.18.0.1"],
         [("", "1-5", "cloud-1"), ("", "6-10", "cloud-2")]),
        # TCP keeps its own shards, planned as a TCP-only job would be; UDP is spread after them
        ({"protocols": ["tcp", "udp"], "ports": "22,80", "udpPorts": "53,161,500", "sharding": {"shards": 2}},
         ["198.18.0.1", "198.18.0.2"],
         [("22,80", None, None), ("22,80", None, None), ("", "53,161", "cloud-1"), ("", "500", "cloud-2")]),
        # more shards than nodes with one target: still one slice per node, never two on one node
        ({"protocols": ["udp"], "udpPorts": "1-8", "sharding": {"shards": 4}}, ["198.18.0.1"],
         [("", "1-4", "cloud-1"), ("", "5-8", "cloud-2")]),
        # fewer UDP ports than nodes: as many slices as ports
        ({"protocols": ["udp"], "udpPorts": "53,161", "pools": ALL_NODES}, ["198.18.0.1"],
         [("", "53", "cloud-1"), ("", "161", "cloud-2")]),
        # one UDP port: nothing to spread, the plan of today
        ({"protocols": ["udp"], "udpPorts": "53", "pools": ALL_NODES}, ["198.18.0.1"], [("", "53", None)]),
        # a pool with one usable node: a target's UDP ports are not split (one source address)...
        ({"protocols": ["udp"], "udpPorts": "1-10", "sharding": {"shards": 2},
          "pools": [{"name": "one", "nodeSelector": {"zone": "a"}}]}, ["198.18.0.1"],
         [("", "1-10", None)]),
        # ... while its TCP ports are, as before; UDP gets a shard per target run
        ({"protocols": ["tcp", "udp"], "ports": "1-10", "udpPorts": "53,161", "sharding": {"shards": 2},
          "pools": [{"name": "one", "nodeSelector": {"zone": "a"}}]}, ["198.18.0.1"],
         [("1-5", None, None), ("6-10", None, None), ("", "53,161", None)]),
        # ... and split by targets, TCP and UDP share shards as before
        ({"protocols": ["tcp", "udp"], "ports": "22", "udpPorts": "53,161", "sharding": {"shards": 2},
          "pools": [{"name": "one", "nodeSelector": {"zone": "a"}}]}, ["198.18.0.1", "198.18.0.2"],
         [("22", "53,161", None), ("22", "53,161", None)]),
        # TCP only: never spread
        ({"ports": "1-10", "sharding": {"shards": 2}, "pools": ALL_NODES}, ["198.18.0.1"],
         [("1-5", None, None), ("6-10", None, None)]),
    ],
)
def test_udp_ports_of_each_target_are_split_across_the_pools_nodes_in_disjoint_slices(
    fields: dict[str, object], addresses: list[str], layout: list[tuple[str, str | None, str | None]]
) -> None:
    plan = planning.plan(_spec(**fields), CONFIG, addresses, nodes=TEST_BED)
    assert [(s.ports, s.udp_ports, s.node) for s in plan] == layout
    assert [s.index for s in plan] == list(range(len(plan)))


def test_with_many_targets_and_shards_udp_shards_form_target_runs_times_one_slice_per_node() -> None:
    spec = _spec(protocols=["udp"], udpPorts="1-100", sharding={"shards": 6}, pools=ALL_NODES)
    plan = planning.plan(spec, CONFIG, ["198.18.0.0/28"], nodes=TEST_BED)
    assert len(plan) == 8  # 2 target runs x 4 nodes
    for run in ({"198.18.0.0-198.18.0.7"}, {"198.18.0.8-198.18.0.15"}):
        shards = [s for s in plan if set(s.targets) == run]
        assert sorted(s.node or "" for s in shards) == ["cloud-1", "cloud-2", "edge-1", "edge-2"]
        covered = [p for s in shards for p in planning.ports_.parse_ports(s.udp_ports or "")]
        assert sorted(covered) == list(range(1, 101))  # disjoint and complete
    assert sum(s.probes for s in plan) == 16 * 100


def test_every_pool_spreads_over_its_own_nodes() -> None:
    spec = _spec(protocols=["udp"], udpPorts="1-4",
                 pools=[{"name": "edge", "nodeSelector": {"pool": "edge"}, "tolerations": TOLERATE_EDGE},
                        {"name": "cloud", "nodeSelector": {"pool": "cloud"}}])
    plan = planning.plan(spec, CONFIG, ["198.18.0.1"], nodes=NODES)
    assert [(s.id, s.udp_ports, s.node) for s in plan] == [
        ("edge-0", "1-2", "edge-1"), ("edge-1", "3-4", "edge-2"),
        ("cloud-0", "1-2", "cloud-1"), ("cloud-1", "3", "cloud-2"), ("cloud-2", "4", "cloud-5")]
    assert planning.udp_spread(plan) == {"edge": ["edge-1", "edge-2"], "cloud": ["cloud-1", "cloud-2", "cloud-5"]}


def test_without_observed_nodes_nothing_is_spread() -> None:
    plan = planning.plan(_spec(protocols=["udp"], udpPorts="1-200", pools=ALL_NODES), CONFIG, ["198.18.0.1"])
    assert [(s.udp_ports, s.node) for s in plan] == [("1-200", None)]
    assert planning.udp_spread(plan) == {}
