"""An audit's truth tables: the compact matrix, what of it the status carries, the spilled ConfigMap, bounded names.

The builders are pure (table tests); the spill is checked through the in-memory
client the way the operator's step writes it.  The real path (a spilled audit on
the control plane, read back by ``portolan audit show``) is in tests/cluster/test_audits.py.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import pathlib
import re
from typing import Any

import pytest

from portolan.cli import auditing as show
from portolan.controller.reachabilityaudits import auditing, matrices, resolving
from portolan.kube import builders, codecs, fakes
from portolan.models import audits, settings

T0 = datetime.datetime(2026, 11, 22, 12, 0, 0, tzinfo=datetime.UTC)
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@pytest.mark.parametrize(("rows", "columns", "built"), [
    ({}, [], {}),
    ({"22/TCP": {"web": {"a": ".", "b": "x"}}}, ["a", "b"], {"22/TCP": ["web .x"]}),
    # ports in numeric order (not text order), sources in the order given, an unprobed cell blank
    ({"8080/TCP": {"web": {"a": "R"}}, "443/TCP": {"web": {"a": "."}, "db": {"b": "B"}}, "53/UDP": {"dns": {"b": "?"}}},
     ["a", "b"], {"53/UDP": ["dns  ?"], "443/TCP": ["web . ", "db  B"], "8080/TCP": ["web R "]}),
])
def test_the_matrix_has_a_row_per_source_and_a_character_per_destination(
        rows: dict[str, dict[str, dict[str, str]]], columns: list[str], built: dict[str, list[str]]) -> None:
    assert matrices.build(rows, columns) == built
    assert list(matrices.build(rows, columns)) == list(built)


TABLES = {"22/TCP": ["web ..x"], "80/TCP": ["web x.x"], "443/TCP": ["web xxx"]}
COLUMNS = ["db/a", "db/b", "db/c"]
WHOLE = matrices.size(COLUMNS, TABLES)
TWO = matrices.size(COLUMNS, {k: TABLES[k] for k in ("22/TCP", "80/TCP")})
ONE = matrices.size(COLUMNS, {"22/TCP": TABLES["22/TCP"]})


@pytest.mark.parametrize(("room", "kept", "omitted", "spilled"), [
    (10_000, ["22/TCP", "80/TCP", "443/TCP"], 0, False),
    (WHOLE, ["22/TCP", "80/TCP", "443/TCP"], 0, False),  # exactly the room: it fits
    (WHOLE - 1, ["22/TCP", "80/TCP"], 1, True),
    (TWO, ["22/TCP", "80/TCP"], 1, True),
    (ONE, ["22/TCP"], 2, True),
    (ONE - 1, [], 3, True),  # not even one table: the status carries none (and no columns)
    (-5, [], 3, True),  # the rest of the status already took the budget
])
def test_the_status_keeps_the_whole_matrix_or_the_leading_port_tables_that_fit_the_room(
        room: int, kept: list[str], omitted: int, spilled: bool) -> None:
    fitted = matrices.fit(COLUMNS, TABLES, room)
    assert list(fitted.matrix) == kept and fitted.omitted == omitted and fitted.spilled is spilled
    assert fitted.columns == (COLUMNS if kept else [])
    assert all(fitted.matrix[k] == TABLES[k] for k in kept)  # tables are kept whole, never cut
    assert matrices.size(fitted.columns, fitted.matrix) <= max(room, matrices.size([], {}))


def test_the_spilled_matrix_decodes_to_what_was_encoded_and_garbage_is_refused() -> None:
    data = codecs.encode_matrix(3, COLUMNS, TABLES)
    assert codecs.decode_matrix(data) == (3, COLUMNS, TABLES)
    assert codecs.decode_matrix({}) is None
    with pytest.raises(ValueError, match="not an audit matrix"):
        codecs.decode_matrix({codecs.MATRIX_KEY: "bm90IGd6aXA="})  # base64 of "not gzip"


LONG = "a" * 200 + ".example"


@pytest.mark.parametrize(("text", "expected"), [
    ("shop-db", "shop-db"),
    ("x" * 63, "x" * 63),  # at the limit: unchanged
    ("x" * 64, "x" * 54 + "-" + "?" * 8),  # one over: a prefix and a hash
    (LONG, "a" * 54 + "-" + "?" * 8),
    ("b" * 53 + "--------------", "b" * 53 + "-" + "?" * 8),  # a prefix never ends in a dash
])
def test_names_and_label_values_stay_within_63_characters_with_a_hash_of_the_whole(text: str, expected: str) -> None:
    bounded = builders.bounded_name(text)
    assert len(bounded) <= 63 and LABEL_VALUE.match(bounded)
    assert re.fullmatch(re.escape(expected).replace(re.escape("?" * 8), "[0-9a-f]{8}"), bounded), bounded
    assert builders.bounded_name(text) == bounded  # stable: selectors find what builders labelled


def test_two_long_names_that_share_a_prefix_stay_apart() -> None:
    first, second = builders.bounded_name("a" * 70 + "-one"), builders.bounded_name("a" * 70 + "-two")
    assert first != second and first[:54] == second[:54]


def _pod(namespace: str, name: str, labels: dict[str, str], ip: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"namespace": namespace, "name": name, "labels": labels},
            "spec": {"containers": [{"name": "app", "ports": []}]},
            "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]}}


def _cluster(destinations: int) -> fakes.FakeKube:
    kube = fakes.FakeKube()
    for name in ("shop", "db"):
        kube.add({"kind": "Namespace", "metadata": {"name": name, "namespace": "", "labels": {"team": name}}})
    for index in range(destinations):
        kube.add(_pod("db", f"pg-{index:03d}", {"app": "pg"}, f"198.18.201.{index + 1}"))
    return kube


def _allow_even_ports(snapshot: resolving.Snapshot, labels: Any, namespace: str,
                      pair: resolving.Pair) -> tuple[bool | None, str]:
    allowed = pair.port % 2 == 0
    return allowed, "db/even" if allowed else "db/default-deny"


def _report_all(kube: fakes.FakeKube, name: str, run: int, flip: tuple[str, int] | None = None) -> None:
    """Every probe pod of the run reports what the policies say, but the pair at ``flip`` (source, index) answers."""
    for source, placed in kube.get_audit(name)["status"]["sources"].items():
        pod = kube.objects[("Pod", placed["namespace"], placed["pod"])]
        pairs = codecs.decode_pairs(next(e["value"] for e in pod["spec"]["containers"][0]["env"]
                                         if e["name"] == "PORTOLAN_PAIRS"))
        verdicts = ["o" if expected else "s" for _, _, _, expected, _ in pairs]
        if flip is not None and flip[0] == source:
            verdicts[flip[1]] = "o"
        kube.patch_audit_status(name, {"probes": {source: {"run": run, "phase": "Done", "verdicts": "".join(verdicts)}}})


def _run(name: str, budget: int, sources: int = 3, destinations: int = 40, ports: int = 60,
         schedule: str | None = None) -> fakes.FakeKube:
    """An audit of sources x destinations x ports, every probe answering as the policies say."""
    kube = _cluster(destinations)
    spec = {**({"schedule": schedule} if schedule else {}),"sources": [{"name": f"src-{i}-" + "s" * 40, "namespace": "shop", "podLabels": {"app": f"s{i}"}}
                        for i in range(sources)],
            "destinations": [{"name": "pg", "namespace": "db", "podSelector": {"app": "pg"}}],
            "ports": [{"port": start, "endPort": min(start + 59, 8000 + ports - 1)}  # ranges: 64 ports at most
                      for start in range(8000, 8000 + ports, 60)]}
    kube.add({"apiVersion": "portolan.dev/v1alpha1", "kind": "ReachabilityAudit",
              "metadata": {"name": name, "namespace": "", "uid": "u-1"}, "spec": spec})
    config = settings.OperatorSettings(audit_namespaces=["shop", "db"], status_byte_budget=budget)
    auditing.step(kube, config, name, T0, _allow_even_ports)
    _report_all(kube, name, 1)
    auditing.step(kube, config, name, T0 + datetime.timedelta(seconds=1), _allow_even_ports)
    return kube


def test_drift_compares_the_whole_spilled_matrix_of_the_previous_run_not_only_what_the_status_kept() -> None:
    kube = _run("big", 16 * 1024, schedule="@every 10m")
    config = settings.OperatorSettings(audit_namespaces=["shop", "db"], status_byte_budget=16 * 1024)
    kept = len(kube.get_audit("big")["status"]["matrix"])
    auditing.step(kube, config, "big", T0 + datetime.timedelta(minutes=10), _allow_even_ports)  # run 2 starts
    auditing.step(kube, config, "big", T0 + datetime.timedelta(minutes=10, seconds=1), _allow_even_ports)
    last = 3 * 40 * 60 // 3 - 1  # the last pair of the first source: port 8059 of pg-039, far past the kept tables
    _report_all(kube, "big", 2, flip=("src-0-" + "s" * 40, last))
    auditing.step(kube, config, "big", T0 + datetime.timedelta(minutes=10, seconds=2), _allow_even_ports)
    status = kube.get_audit("big")["status"]
    assert status["run"] == 2 and status["phase"] == "Complete" and status["totals"]["unexpectedlyReachable"] == 1
    assert kept < 60 and status["matrixConfigMap"] == "shop/big-matrix"
    assert status["drift"]["becameReachable"] == ["src-0-" + "s" * 40 + " -> db/pg-039 8059/TCP"]
    assert codecs.decode_matrix(kube.objects[("ConfigMap", "shop", "big-matrix")]["binaryData"])[0] == 2


def test_a_matrix_too_big_for_the_status_spills_whole_into_a_configmap_the_audit_owns() -> None:
    roomy, tight = _run("big", 1024 * 1024), _run("big", 16 * 1024)
    whole = roomy.get_audit("big")["status"]
    assert whole["phase"] == "Complete" and whole["totals"]["pairs"] == 3 * 40 * 60 == whole["totals"]["agreeing"]
    assert len(whole["matrix"]) == 60 and "matrixConfigMap" not in whole and whole["matrixOmitted"] == 0
    status = tight.get_audit("big")["status"]
    assert status["phase"] == "Complete" and status["totals"] == whole["totals"]
    assert status["matrixConfigMap"] == "shop/big-matrix" and status["matrixOmitted"] == 60 - len(status["matrix"])
    assert 0 < len(status["matrix"]) < 60  # the leading tables, whole
    assert all(status["matrix"][k] == whole["matrix"][k] for k in status["matrix"])
    assert len(json.dumps(status)) <= 16 * 1024
    configmap = tight.objects[("ConfigMap", "shop", "big-matrix")]
    assert configmap["metadata"]["ownerReferences"][0]["kind"] == "ReachabilityAudit"
    assert configmap["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert tight.audit_matrix(tight.get_audit("big")) == (whole["matrixColumns"], whole["matrix"])
    written = [c.verb for c in tight.calls if c.kind in ("ConfigMap", audits.KIND)]
    assert written.index("write") < len(written) - 1 - written[::-1].index("patch-status")  # before the status names it


def test_the_table_of_a_file_says_where_the_port_tables_it_lacks_are(tmp_path: pathlib.Path) -> None:
    body = _run("big", 16 * 1024).get_audit("big")
    path = tmp_path / "audit.json"
    path.write_text(json.dumps(body))
    out = io.StringIO()
    code = show.run(argparse.Namespace(name=None, file=str(path), output="table"), out)
    status = audits.ReachabilityAuditStatus.model_validate(body["status"])
    assert code == 0
    assert f"({status.matrix_omitted} more port table(s) in ConfigMap shop/big-matrix;" in out.getvalue()
    assert out.getvalue().count("\n  src-0-") == len(status.matrix)


def test_an_audit_with_a_name_past_63_characters_labels_and_finds_its_pods_by_a_hashed_value() -> None:
    name = "quarterly-" + "reachability-" * 6 + "audit.of.the.payments.team"
    kube = _run(name, 1024 * 1024, sources=2, destinations=2, ports=2)
    status = kube.get_audit(name)["status"]
    assert status["phase"] == "Complete" and status["totals"]["agreeing"] == 8
    # the pods were created, found by the selector and removed: their names and labels were valid
    kube2 = _cluster(2)
    kube2.add({"apiVersion": "portolan.dev/v1alpha1", "kind": "ReachabilityAudit",
               "metadata": {"name": name, "namespace": "", "uid": "u-2"},
               "spec": {"sources": [{"name": "s" * 63, "namespace": "shop", "podLabels": {"app": "x"}},
                                    {"name": "s" * 62 + "t", "namespace": "shop", "podLabels": {"app": "y"}}],
                        "destinations": [{"name": "pg", "namespace": "db", "podSelector": {"app": "pg"}}],
                        "ports": [{"port": 80}], "canaries": True}})
    config = settings.OperatorSettings(audit_namespaces=["shop", "db"])
    auditing.step(kube2, config, name, T0, _allow_even_ports)
    pods = [o for (kind, _, _), o in kube2.objects.items()
            if kind == "Pod" and o["metadata"]["labels"].get(builders.LABEL_ROLE) == "canary"]
    assert len(pods) == 1
    for pod in pods:
        assert all(len(v) <= 63 and LABEL_VALUE.match(v) for v in pod["metadata"]["labels"].values())
        assert len(pod["metadata"]["name"]) <= 63
    assert kube2.list_pods(None, f"{builders.LABEL_AUDIT}={builders.bounded_name(name)}") == [pods[0]]
    probes = [builders.probe_pod(kube2.get_audit(name), s, "shop", {}, "", config, convergence_seconds=1,
                                 timeout_ms=100) for s in ("s" * 63, "s" * 62 + "t")]
    names = [p["metadata"]["name"] for p in probes]
    assert len(set(names)) == 2 and all(len(n) <= 63 and DNS_LABEL.match(n.replace(".", "-")) for n in names)
    assert {p["metadata"]["labels"][builders.LABEL_AUDIT] for p in probes} == {builders.bounded_name(name)}


@pytest.mark.parametrize(("status", "reported"), [
    ({}, False),
    ({"phase": "Running", "run": 1, "sources": {}}, False),
    ({"phase": "Running", "run": 1, "sources": {"a": {}, "b": {}}, "probes": {"a": {"run": 1, "phase": "Done"}}}, False),
    ({"phase": "Running", "run": 1, "sources": {"a": {}, "b": {}},
      "probes": {"a": {"run": 1, "phase": "Done"}, "b": {"run": 1, "phase": "Done"}}}, True),
    ({"phase": "Running", "sources": {"a": {}}, "probes": {"a": {"verdicts": "o"}}}, True),  # the defaults: run 1, Done
    ({"phase": "Running", "run": 2, "sources": {"a": {}}, "probes": {"a": {"run": 1, "phase": "Done"}}}, False),
    ({"phase": "Running", "run": 1, "sources": {"a": {}}, "probes": {"a": {"run": 1, "phase": "Interrupted"}}}, False),
    ({"phase": "Complete", "run": 1, "sources": {"a": {}}, "probes": {"a": {"run": 1, "phase": "Done"}}}, False),
])
def test_an_audit_is_concluded_as_soon_as_every_probe_of_its_run_reported(status: dict[str, Any], reported: bool) -> None:
    assert auditing.all_reported({"status": status}) is reported


def test_a_source_with_twelve_thousand_pairs_fits_its_pod_environment_and_annotations() -> None:
    kube = _cluster(100)
    spec = {"sources": [{"name": "web", "namespace": "shop", "podLabels": {"app": "web"}}],
            "destinations": [{"name": "pg", "namespace": "db", "podSelector": {"app": "pg"}}],
            "ports": [{"port": start, "endPort": start + 59} for start in (8000, 8060)]}
    kube.add({"apiVersion": "portolan.dev/v1alpha1", "kind": "ReachabilityAudit",
              "metadata": {"name": "wide", "namespace": "", "uid": "u-3"}, "spec": spec})
    config = settings.OperatorSettings(audit_namespaces=["shop", "db"], status_byte_budget=1024 * 1024)
    auditing.step(kube, config, "wide", T0, _allow_even_ports)
    placed = kube.get_audit("wide")["status"]["sources"]["web"]
    pod = kube.objects[("Pod", placed["namespace"], placed["pod"])]
    pairs = next(e["value"] for e in pod["spec"]["containers"][0]["env"] if e["name"] == "PORTOLAN_PAIRS")
    assert placed["pairs"] == 100 * 120 and pairs.startswith(codecs.PACKED)
    assert len(pairs.encode()) < 128 * 1024  # one environment variable's limit in execve
    assert sum(len(k) + len(v) for k, v in pod["metadata"]["annotations"].items()) < 256 * 1024
    _report_all(kube, "wide", 1)
    auditing.step(kube, config, "wide", T0 + datetime.timedelta(seconds=1), _allow_even_ports)
    status = kube.get_audit("wide")["status"]
    assert status["phase"] == "Complete" and status["totals"]["agreeing"] == 12_000


@pytest.mark.parametrize("text", ["", "10.0.0.1 80 TCP 1 0", "x" * codecs.PACK_ABOVE, "y" * (codecs.PACK_ABOVE + 1)])
def test_packing_keeps_short_texts_readable_and_gives_back_long_ones(text: str) -> None:
    packed = codecs.pack(text)
    assert codecs.unpack(packed) == text
    assert (packed == text) is (len(text) <= codecs.PACK_ABOVE)


def test_a_damaged_packed_text_is_refused() -> None:
    with pytest.raises(ValueError, match="damaged packed text"):
        codecs.unpack(codecs.PACKED + "not base64!")


def test_a_probe_pod_whose_legend_was_damaged_fails_the_audit_naming_it() -> None:
    kube = _cluster(1)
    kube.add({"apiVersion": "portolan.dev/v1alpha1", "kind": "ReachabilityAudit",
              "metadata": {"name": "hurt", "namespace": "", "uid": "u-4"},
              "spec": {"sources": [{"name": "web", "namespace": "shop", "podLabels": {"app": "web"}}],
                       "destinations": [{"name": "pg", "namespace": "db", "podSelector": {"app": "pg"}}],
                       "ports": [{"port": 80}]}})
    config = settings.OperatorSettings(audit_namespaces=["shop", "db"])
    auditing.step(kube, config, "hurt", T0, _allow_even_ports)
    placed = kube.get_audit("hurt")["status"]["sources"]["web"]
    pod = kube.objects[("Pod", placed["namespace"], placed["pod"])]
    pod["metadata"]["annotations"][builders.ANNOTATION_LEGEND] = codecs.PACKED + "AAAA"
    _report_all(kube, "hurt", 1)
    auditing.step(kube, config, "hurt", T0 + datetime.timedelta(seconds=1), _allow_even_ports)
    status = kube.get_audit("hurt")["status"]
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert status["phase"] == "Failed" and failed["reason"] == "ProbeFailed"
    assert f"shop/{placed['pod']}: damaged packed text" in failed["message"]
