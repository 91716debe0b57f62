"""ReachabilityAudits on the in-memory client: acceptance, guardrails, canaries, probe pods, verdicts, cleanup.

The expected verdicts come from a table the test gives (the policy evaluator is
tested against cyclonus elsewhere); the probe pods' reports are written the way a
probe pod writes them.  The real path runs on the control plane in tests/cluster.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest

from portolan.controller.reachabilityaudits import auditing, resolving
from portolan.kube import builders, codecs, fakes
from portolan.models import audits, settings

T0 = datetime.datetime(2026, 11, 22, 12, 0, 0, tzinfo=datetime.UTC)
CONFIG = settings.OperatorSettings(audit_namespaces=["shop", "db"])
SECONDS = datetime.timedelta(seconds=1)


def _pod(namespace: str, name: str, labels: dict[str, str], ip: str, ports: list[dict[str, Any]] = ()) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"namespace": namespace, "name": name, "labels": labels},
            "spec": {"containers": [{"name": "app", "ports": list(ports)}]},
            "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]}}


def _cluster() -> fakes.FakeKube:
    kube = fakes.FakeKube()
    for name in ("shop", "db"):
        kube.add({"kind": "Namespace", "metadata": {"name": name, "namespace": "", "labels": {"team": name}}})
    kube.add(_pod("shop", "web-0", {"app": "web"}, "198.18.200.10", [{"containerPort": 8080, "name": "http"}]))
    kube.add(_pod("db", "pg-0", {"app": "pg"}, "198.18.201.10", [{"containerPort": 5432, "name": "pg"}]))
    kube.add(_pod("db", "pg-1", {"app": "pg"}, "198.18.201.11", [{"containerPort": 5432, "name": "pg"}]))
    return kube


def _audit(kube: fakes.FakeKube, **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "sources": [{"name": "web", "namespace": "shop", "fromPodsMatching": {"app": "web"}},
                    {"name": "other", "namespace": "shop", "podLabels": {"app": "other"}}],
        "destinations": [{"name": "pg", "namespace": "db", "podSelector": {"app": "pg"}}],
        "ports": [{"port": "pg"}, {"port": 22}],
    }
    return kube.add({"apiVersion": "portolan.dev/v1alpha1", "kind": "ReachabilityAudit",
                     "metadata": {"name": "shop-db", "namespace": ""}, "spec": {**base, **spec}})


def _policies(snapshot: resolving.Snapshot, labels: Any, namespace: str, pair: resolving.Pair) -> tuple[bool | None, str]:
    """A stand-in for the policy evaluator: only web may reach pg's 5432."""
    allowed = labels.get("app") == "web" and pair.port == 5432
    return allowed, "db/allow-web" if allowed else "db/default-deny"


def _report(kube: fakes.FakeKube, source: str, verdicts: str) -> None:
    kube.patch_audit_status("shop-db", {"probes": {source: {"phase": "Done", "verdicts": verdicts, "rounds": 1}}})


def _probe_pod(kube: fakes.FakeKube, source: str) -> dict[str, Any]:
    return next(p for p in kube.list_pods(None, f"{builders.LABEL_SOURCE}={source}"))


def test_each_source_gets_one_probe_pod_with_the_workloads_labels_its_pairs_and_expectations() -> None:
    kube = _cluster()
    _audit(kube)
    auditing.step(kube, CONFIG, "shop-db", T0, _policies)
    web = _probe_pod(kube, "web")
    assert web["metadata"]["namespace"] == "shop"
    assert web["metadata"]["labels"]["app"] == "web"  # selected by every policy exactly as web-0
    env = {e["name"]: e["value"] for e in web["spec"]["containers"][0]["env"]}
    assert codecs.decode_pairs(env["PORTOLAN_PAIRS"]) == [
        ("198.18.201.10", 5432, "TCP", True, False), ("198.18.201.10", 22, "TCP", False, False),
        ("198.18.201.11", 5432, "TCP", True, False), ("198.18.201.11", 22, "TCP", False, False)]
    assert web["spec"]["containers"][0]["readinessProbe"]["exec"]["command"] == ["/bin/false"]  # never behind a Service
    security = web["spec"]["securityContext"] | web["spec"]["containers"][0]["securityContext"]
    assert security["runAsNonRoot"] is True and security["capabilities"] == {"drop": ["ALL"]}
    assert web["metadata"]["ownerReferences"][0]["kind"] == "ReachabilityAudit"
    status = kube.get_audit("shop-db")["status"]
    assert status["phase"] == "Running" and status["sources"]["other"]["pairs"] == 4


def test_an_audit_that_matches_the_policies_is_complete_and_as_expected_and_its_pods_are_removed() -> None:
    kube = _cluster()
    _audit(kube)
    auditing.step(kube, CONFIG, "shop-db", T0, _policies)
    _report(kube, "web", "osos")  # 5432 connects, 22 silent
    _report(kube, "other", "ssss")
    actions = auditing.step(kube, CONFIG, "shop-db", T0 + SECONDS, _policies)
    status = kube.get_audit("shop-db")["status"]
    assert status["phase"] == "Complete"
    conditions = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conditions["ReachabilityAsExpected"] == ("True", "AsExpected")
    assert status["totals"] == {"pairs": 8, "agreeing": 8, "unexpectedlyReachable": 0, "unexpectedlyBlocked": 0,
                                "inconclusive": 0, "unjudged": 0, "ruleDisagreements": 0, "byCanary": 0}
    assert status["matrix"]["5432/TCP"] == ["web ..", "other xx"]
    assert kube.list_pods(None, f"{builders.LABEL_AUDIT}=shop-db") == []
    assert actions.mismatches["UnexpectedlyReachable"] == 0


def test_a_cluster_that_ignores_policies_shows_exactly_the_denied_pairs_as_unexpectedly_reachable() -> None:
    kube = _cluster()
    _audit(kube)
    auditing.step(kube, CONFIG, "shop-db", T0, _policies)
    _report(kube, "web", "orro")  # a CNI that ignores policies: everything answers
    _report(kube, "other", "rrrr")
    auditing.step(kube, CONFIG, "shop-db", T0 + SECONDS, _policies)
    status = kube.get_audit("shop-db")["status"]
    conditions = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conditions["ReachabilityAsExpected"] == ("False", "UnexpectedlyReachable")
    listed = [(m["source"], m["address"], m["port"], m["expected"], m["observed"], m["decidedBy"])
              for m in status["mismatches"]]
    assert listed == [
        ("other", "198.18.201.10", 22, "Blocked", "Reachable", "db/default-deny"),
        ("other", "198.18.201.10", 5432, "Blocked", "Reachable", "db/default-deny"),
        ("other", "198.18.201.11", 22, "Blocked", "Reachable", "db/default-deny"),
        ("other", "198.18.201.11", 5432, "Blocked", "Reachable", "db/default-deny"),
        ("web", "198.18.201.10", 22, "Blocked", "Reachable", "db/default-deny"),
        ("web", "198.18.201.11", 22, "Blocked", "Reachable", "db/default-deny"),
    ]
    assert status["totals"]["unexpectedlyReachable"] == 6
    assert [e["reason"] for e in kube.events][-1] == "UnexpectedlyReachable"
    assert status["matrix"]["22/TCP"] == ["web RR", "other RR"]


def _pairs(kube: fakes.FakeKube, source: str) -> list[tuple[str, int, str, bool | None, bool]]:
    env = {e["name"]: e["value"] for e in _probe_pod(kube, source)["spec"]["containers"][0]["env"]}
    return codecs.decode_pairs(env["PORTOLAN_PAIRS"])


def test_a_reset_from_a_canary_port_counts_as_blocked_because_something_listens_there() -> None:
    kube = _cluster()
    _audit(kube, canaries=True)
    auditing.step(kube, CONFIG, "shop-db", T0, _policies)
    canary = next(p for p in kube.pods("db") if p["metadata"]["labels"].get(builders.LABEL_ROLE) == "canary")
    container = canary["spec"]["containers"][0]
    assert canary["metadata"]["labels"]["app"] == "pg"  # policies select it as they select pg
    assert container["readinessProbe"]["exec"]["command"] == ["/bin/false"]  # never Ready: no Service sends it traffic
    assert container["command"][-2:] == ["--tcp", "22,5432"]
    assert container["ports"] == [{"containerPort": 5432, "protocol": "TCP", "name": "pg"}]  # named ports resolve alike
    assert kube.list_pods(None, f"{builders.LABEL_ROLE}=probe") == []  # probes wait for the canary
    kube.set_pod_phase("db", canary["metadata"]["name"], "Running")
    kube.objects[("Pod", "db", canary["metadata"]["name"])]["status"]["podIP"] = "198.18.201.99"
    auditing.step(kube, CONFIG, "shop-db", T0 + SECONDS, _policies)
    assert ("198.18.201.99", 5432, "TCP", False, True) in _pairs(kube, "other")
    # An enforcer that rejects: every denied SYN gets a reset, allowed ones connect.
    for source in ("web", "other"):
        _report(kube, source, "".join("o" if expected else "r" for _, _, _, expected, _ in _pairs(kube, source)))
    auditing.step(kube, CONFIG, "shop-db", T0 + 2 * SECONDS, _policies)
    status = kube.get_audit("shop-db")["status"]
    assert status["totals"]["byCanary"] == 4
    assert {m["address"] for m in status["mismatches"]} == {"198.18.201.10", "198.18.201.11"}  # never the canary
    assert all(m["kind"] == "UnexpectedlyReachable" and "real endpoint" in m["evidence"] for m in status["mismatches"])


def test_an_audit_placing_pods_outside_the_allowed_namespaces_is_rejected_with_no_pods() -> None:
    kube = _cluster()
    _audit(kube, sources=[{"name": "x", "namespace": "kube-system", "podLabels": {"a": "b"}}])
    auditing.step(kube, CONFIG, "shop-db", T0, _policies)
    status = kube.get_audit("shop-db")["status"]
    assert status["phase"] == "Rejected"
    accepted = next(c for c in status["conditions"] if c["type"] == "Accepted")
    assert accepted["reason"] == "GuardrailViolated" and "kube-system" in accepted["message"]
    assert kube.list_pods(None, f"{builders.LABEL_AUDIT}=shop-db") == []
    assert [e["reason"] for e in kube.events] == ["GuardrailViolated"]
    assert kube.events[0]["metadata"]["namespace"] == "default"  # cluster-scoped: Events go to default


def test_declared_rules_that_contradict_the_policies_are_reported_apart_from_cluster_mismatches() -> None:
    kube = _cluster()
    _audit(kube, expect={"rules": [{"from": "other", "to": "pg", "ports": [{"port": 5432}], "reachable": True}]})
    auditing.step(kube, CONFIG, "shop-db", T0, _policies)
    _report(kube, "web", "osos")
    _report(kube, "other", "ssss")
    auditing.step(kube, CONFIG, "shop-db", T0 + SECONDS, _policies)
    status = kube.get_audit("shop-db")["status"]
    conditions = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conditions["ReachabilityAsExpected"] == ("True", "AsExpected")  # the cluster does what policies say
    assert conditions["RulesMatchPolicies"] == ("False", "PolicyDisagreesWithRule")
    assert {(m["kind"], m["port"]) for m in status["mismatches"]} == {("PolicyDisagreesWithRule", 5432)}
    assert status["totals"]["ruleDisagreements"] == 2


def test_a_probe_pod_that_fails_without_reporting_fails_the_audit_with_its_name() -> None:
    kube = _cluster()
    _audit(kube)
    auditing.step(kube, CONFIG, "shop-db", T0, _policies)
    pod = _probe_pod(kube, "web")
    kube.set_pod_phase("shop", pod["metadata"]["name"], "Failed", exit_code=3)
    auditing.step(kube, CONFIG, "shop-db", T0 + SECONDS, _policies)
    status = kube.get_audit("shop-db")["status"]
    assert status["phase"] == "Failed"
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "ProbeFailed" and pod["metadata"]["name"] in failed["message"]
    assert kube.list_pods(None, f"{builders.LABEL_AUDIT}=shop-db") == []


@pytest.mark.parametrize(("char", "protocol", "listener", "verdict"), [
    ("o", "TCP", False, audits.Verdict.REACHABLE),
    ("r", "TCP", False, audits.Verdict.REACHABLE),
    ("r", "TCP", True, audits.Verdict.BLOCKED),
    ("p", "TCP", False, audits.Verdict.BLOCKED),
    ("s", "TCP", False, audits.Verdict.BLOCKED),
    ("s", "UDP", False, None),
    ("s", "UDP", True, audits.Verdict.BLOCKED),
    ("r", "UDP", False, audits.Verdict.REACHABLE),
    ("o", "UDP", True, audits.Verdict.REACHABLE),
    ("e", "TCP", False, None),
])
def test_what_each_probe_answer_proves(char: str, protocol: str, listener: bool, verdict: audits.Verdict | None) -> None:
    assert audits.observed(char, protocol, listener) == verdict


def test_the_legend_names_what_decided_each_expectation() -> None:
    kube = _cluster()
    _audit(kube)
    auditing.step(kube, CONFIG, "shop-db", T0, _policies)
    legend = json.loads(_probe_pod(kube, "web")["metadata"]["annotations"][builders.ANNOTATION_LEGEND])
    assert legend[0] == ["pg", "db/pg-0", "db/allow-web", None]


def _report_run(kube: fakes.FakeKube, source: str, verdicts: str, run: int) -> None:
    kube.patch_audit_status("shop-db", {"probes": {source: {"run": run, "phase": "Done", "verdicts": verdicts}}})


def test_a_scheduled_audit_runs_again_on_time_keeps_history_and_reports_the_verdicts_that_changed() -> None:
    kube = _cluster()
    _audit(kube, schedule="@every 10m", ports=[{"port": 22}])
    auditing.step(kube, CONFIG, "shop-db", T0, _policies)
    _report_run(kube, "web", "ss", 1)
    _report_run(kube, "other", "ss", 1)
    auditing.step(kube, CONFIG, "shop-db", T0 + SECONDS, _policies)
    status = kube.get_audit("shop-db")["status"]
    assert status["phase"] == "Complete" and status["nextRunTime"] == "2026-11-22T12:10:00Z"
    auditing.step(kube, CONFIG, "shop-db", T0 + 5 * 60 * SECONDS, _policies)  # not yet due: nothing happens
    assert kube.get_audit("shop-db")["status"]["run"] == 1
    auditing.step(kube, CONFIG, "shop-db", T0 + 10 * 60 * SECONDS, _policies)  # due: run 2 starts
    status = kube.get_audit("shop-db")["status"]
    assert status["run"] == 2 and status["phase"] == "Pending" and "sources" not in status and "probes" not in status
    auditing.step(kube, CONFIG, "shop-db", T0 + 601 * SECONDS, _policies)
    assert {p["metadata"]["name"] for p in kube.list_pods(None, f"{builders.LABEL_RUN}=2")} == \
        {"shop-db-web-r2", "shop-db-other-r2"}
    _report_run(kube, "web", "rs", 1)  # a late report of run 1: ignored
    auditing.step(kube, CONFIG, "shop-db", T0 + 602 * SECONDS, _policies)
    assert kube.get_audit("shop-db")["status"]["phase"] == "Running"
    _report_run(kube, "web", "rs", 2)  # port 22 of pg-0 now answers
    _report_run(kube, "other", "ss", 2)
    auditing.step(kube, CONFIG, "shop-db", T0 + 603 * SECONDS, _policies)
    status = kube.get_audit("shop-db")["status"]
    assert [(h["run"], h["phase"], h["unexpectedlyReachable"]) for h in status["history"]] == \
        [(1, "Complete", 0), (2, "Complete", 1)]
    assert status["drift"] == {"previous": 1, "latest": 2, "becameReachable": ["web -> db/pg-0 22/TCP"],
                               "becameBlocked": [], "truncated": 0}
    drifted = next(c for c in status["conditions"] if c["type"] == "Drifted")
    assert (drifted["status"], drifted["reason"]) == ("True", "VerdictsChanged")
    assert "DriftDetected" in [e["reason"] for e in kube.events]


def test_an_audit_with_a_malformed_schedule_is_rejected_naming_the_field() -> None:
    kube = _cluster()
    _audit(kube, schedule="61 * * * *")
    auditing.step(kube, CONFIG, "shop-db", T0, _policies)
    status = kube.get_audit("shop-db")["status"]
    accepted = next(c for c in status["conditions"] if c["type"] == "Accepted")
    assert status["phase"] == "Rejected" and accepted["message"].startswith("spec.schedule: ")


def test_an_audit_whose_destinations_have_no_running_pod_is_not_called_as_expected() -> None:
    kube = _cluster()
    _audit(kube, destinations=[{"name": "none", "namespace": "db", "podSelector": {"app": "nothing"}}])
    auditing.step(kube, CONFIG, "shop-db", T0, _policies)
    _report(kube, "web", "")
    _report(kube, "other", "")
    auditing.step(kube, CONFIG, "shop-db", T0 + SECONDS, _policies)
    status = kube.get_audit("shop-db")["status"]
    assert status["totals"]["pairs"] == 0
    assert {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}["ReachabilityAsExpected"] == \
        ("False", "NothingJudged")


def test_overlapping_destinations_get_every_pair_its_verdict() -> None:
    import threading

    from portolan.models import results
    from portolan.shard import probing

    def scan(plan: Any, **_: Any) -> results.ScanReport:
        return results.ScanReport(version="t", started=0.0, finished=0.0, hosts=[results.HostResult(
            address="198.18.201.10", ports=[results.PortResult(host="198.18.201.10", port=5432,
                                                                protocol=results.Protocol.TCP,
                                                                state=results.PortState.OPEN,
                                                                reason=results.Reason.SYN_ACK)])])

    pairs = [("198.18.201.10", 5432, "TCP", True, False), ("198.18.201.10", 5432, "TCP", True, False)]
    assert probing.probe(pairs, 500, scan, threading.Event()) == ["o", "o"]
