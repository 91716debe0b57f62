"""Golden files: the objects Portolan builds and the reports it renders, byte for byte, without root.

Each test renders one artefact from fixed inputs and compares it with its file
in tests/golden/.  After an intended change, rewrite them all with

    PORTOLAN_UPDATE_GOLDEN=1 .venv/bin/pytest tests/golden

and review the diff.  (The CRDs and the chart's generated files are golden files
too: tests/operator/test_crds.py compares ``portolan generate`` with crds/ and
charts/, and ``portolan generate --root .`` updates them.)
"""

from __future__ import annotations

import io
from typing import Any

import pytest
import yaml

from harness import audited, golden
from portolan.cli import rendering
from portolan.kube import builders
from portolan.models import results, scanjobs, settings, statuses

JOB: dict[str, Any] = {
    "apiVersion": "portolan.dev/v1alpha1", "kind": "ScanJob",
    "metadata": {"name": "edge-audit", "namespace": "scans", "uid": "0a1b2c3d-0000-4000-8000-000000000001"},
}
SPEC = scanjobs.ScanJobSpec.model_validate({
    "targets": {"addresses": ["198.18.0.0/28", "2001:db8::1"]},
    "ports": "22,80,443,8000-8100", "udpPorts": "53,161", "protocols": ["tcp", "udp"],
    "pools": [{"name": "edge", "nodeSelector": {"portolan.dev/pool": "edge"},
               "tolerations": [{"key": "portolan.dev/edge", "operator": "Exists", "effect": "NoSchedule"}]},
              {"name": "cloud", "nodeSelector": {"portolan.dev/pool": "cloud"}}],
})
SHARDS = [
    statuses.ShardPlan(id="s0", index=0, pool="edge", targets=["198.18.0.0-198.18.0.15"], ports="22,80,443,8000-8100",
                       udp_ports="53,161", probes=1648),
    statuses.ShardPlan(id="s1", index=1, pool="cloud", targets=["2001:db8::1"], ports="22,80,443,8000-8100",
                       udp_ports="53,161", probes=103),
]


def _yaml(obj: Any) -> str:
    return yaml.safe_dump(obj, sort_keys=True, default_flow_style=False)


@pytest.mark.parametrize(("name", "update", "avoid"), [
    ("shard-pod-connect.yaml", {}, ()),
    ("shard-pod-syn-capture.yaml", {"technique": "syn", "capture": {"persistentVolumeClaim": "evidence"}}, ()),
    ("shard-pod-avoiding-lost-nodes.yaml", {}, ("edge-2", "edge-1")),
])
def test_the_shard_pod_matches_its_golden_file(name: str, update: dict[str, Any], avoid: tuple[str, ...]) -> None:
    spec = scanjobs.ScanJobSpec.model_validate(SPEC.model_dump(by_alias=True) | update)
    pod = builders.shard_pod(JOB, spec, SHARDS[0], 2, settings.OperatorSettings(), len(SHARDS), avoid_nodes=avoid)
    golden.check(name, _yaml(pod))


def test_a_scanshard_object_matches_its_golden_file_and_the_view_reads_it_back_in_plan_order() -> None:
    objects = [builders.scan_shard(JOB, shard, ordinal) for ordinal, shard in enumerate(SHARDS)]
    golden.check("scanshard.yaml", _yaml(objects[1]))
    objects[0]["status"] = {"attempt": 1, "phase": "Succeeded"}
    view = builders.job_view({**JOB, "status": {"shardCount": 2, "phase": "Running"}}, objects[::-1])
    assert [statuses.ShardPlan.model_validate(s) for s in view["status"]["plan"]] == SHARDS
    assert view["status"]["shards"] == {"s0": {"attempt": 1, "phase": "Succeeded"}}
    other = {**objects[1], "metadata": {**objects[1]["metadata"], "ownerReferences": [{"uid": "someone-else"}]}}
    assert builders.job_view(JOB, [other])["status"]["plan"] == []  # another job's object of the same name is ignored


def test_the_node_inventory_pod_matches_its_golden_file() -> None:
    spec = scanjobs.ScanJobSpec.model_validate(SPEC.model_dump(by_alias=True) | {"inventory": {"pools": ["edge"]}})
    shard = statuses.ShardPlan(id="edge-n0", index=0, pool="edge", targets=["198.18.64.11"], ports="", probes=0,
                               kind=statuses.ShardKind.INVENTORY, node="edge-1")
    pod = builders.shard_pod(JOB, spec, shard, 1, settings.OperatorSettings(), 3, avoid_nodes=("edge-2",),
                             inventory_shards=1)
    golden.check("inventory-pod.yaml", _yaml(pod))


def test_the_scanner_egress_networkpolicy_matches_its_golden_file() -> None:
    golden.check("scanner-egress-networkpolicy.yaml", _yaml(builders.scanner_egress_policy(JOB, SHARDS)))


def _report() -> results.ScanReport:
    tcp, udp = results.Protocol.TCP, results.Protocol.UDP

    def port(host: str, number: int, state: results.PortState, reason: results.Reason,
             protocol: results.Protocol = tcp, **extra: Any) -> results.PortResult:
        return results.PortResult(host=host, port=number, protocol=protocol, state=state, reason=reason, **extra)

    ssh = results.ServiceInfo(name="ssh", product="OpenSSH", version="9.2p1", banner="SSH-2.0-OpenSSH_9.2p1",
                              method="banner")
    web = port("198.18.0.2", 8080, results.PortState.OPEN, results.Reason.SYN_ACK, rtt_ms=0.21,
               service=results.ServiceInfo(name="http", product="nginx", method="probe"))
    return results.ScanReport(
        version="0.1.0", args="portolan scan 198.18.0.1-2 -p 22,80,8080 -u -p 53 --allow-open 22",
        started=1_795_000_000.0, finished=1_795_000_004.5,
        hosts=[
            results.HostResult(address="198.18.0.1", ports=[
                port("198.18.0.1", 22, results.PortState.OPEN, results.Reason.SYN_ACK, rtt_ms=0.118, service=ssh),
                port("198.18.0.1", 53, results.PortState.OPEN, results.Reason.UDP_RESPONSE, udp,
                     service=results.ServiceInfo(name="dns", method="payload")),
                port("198.18.0.1", 80, results.PortState.FILTERED, results.Reason.ADMIN_PROHIBITED, tries=2),
            ], extraports=[results.ExtraPorts(protocol=tcp, state=results.PortState.CLOSED,
                                              reason=results.Reason.CONN_REFUSED, count=997)]),
            results.HostResult(address="198.18.0.2", ports=[
                web, port("198.18.0.2", 53, results.PortState.OPEN_FILTERED, results.Reason.NO_RESPONSE, udp, tries=3),
            ]),
        ],
        summary=results.ScanSummary(hosts=2, probes=2004, packets_sent=2011,
                                    states={"open": 3, "closed": 997, "filtered": 1, "open|filtered": 1},
                                    duration_seconds=4.5),
        notes=[results.ScanNote(code="IcmpRateLimited", host="198.18.0.2",
                                message="the host rate-limits ICMP port-unreachable")],
        allowed_open_ports="22", unexpected_open=[web],
    )


@pytest.mark.parametrize("fmt", rendering.FORMATS)
def test_each_report_format_matches_its_golden_file(fmt: str) -> None:
    out = io.StringIO()
    rendering.write_report(_report(), fmt, out)
    golden.check(f"report.{fmt}", out.getvalue())


@pytest.mark.parametrize("fmt", ["table", "junit"])
def test_audit_show_renders_each_format_as_its_golden_file(fmt: str) -> None:
    from portolan.cli import auditing as showing
    from portolan.models import audits

    body = audited.finished_audit()
    status = audits.ReachabilityAuditStatus.model_validate(body["status"])
    render = showing.render_table if fmt == "table" else showing.render_junit
    golden.check(f"audit-show.{fmt}", render("shop-db", status))
