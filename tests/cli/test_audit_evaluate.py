"""``portolan audit evaluate``: what NetworkPolicies allow, offline, from a folder of policies and a model."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from harness import cyclonus

PORTOLAN = [sys.executable, "-m", "portolan"]

POLICIES = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: pg-from-web, namespace: db}
spec:
  podSelector: {matchLabels: {app: pg}}
  policyTypes: [Ingress]
  ingress:
  - from: [{namespaceSelector: {matchLabels: {team: shop}}, podSelector: {matchLabels: {app: web}}}]
    ports: [{port: pg}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: ignored, namespace: db}
"""
MODEL = """
namespaces: {shop: {team: shop}, db: {team: db}}
pods:
- {namespace: shop, name: web, labels: {app: web}, ip: 198.18.200.10}
- {namespace: shop, name: cart, labels: {app: cart}, ip: 198.18.200.11}
- {namespace: db, name: pg, labels: {app: pg}, ip: 198.18.201.10, ports: [{name: pg, port: 5432}]}
ports: [{port: 5432}, {port: 5433}]
"""


def test_audit_evaluate_prints_what_the_policies_allow_and_why_without_a_cluster(tmp_path: pathlib.Path) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "all.yaml").write_text(POLICIES)
    (tmp_path / "model.yaml").write_text(MODEL)
    done = subprocess.run([*PORTOLAN, "audit", "evaluate", "--policies", str(tmp_path / "policies"),
                           "--model", str(tmp_path / "model.yaml"), "-o", "json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    table = json.loads(done.stdout)
    assert table["5432/TCP"]["shop/web"]["db/pg"] == {
        "allowed": True, "decidedBy": "no egress policy selects shop pod; ingress allowed by db/pg-from-web",
        "policies": ["db/pg-from-web"]}
    assert table["5432/TCP"]["shop/cart"]["db/pg"]["allowed"] is False
    assert table["5433/TCP"]["shop/web"]["db/pg"]["allowed"] is False  # the named port is 5432 only
    assert table["5433/TCP"]["db/pg"]["shop/cart"]["allowed"] is True


def test_audit_evaluate_refuses_a_model_without_pods_in_one_line(tmp_path: pathlib.Path) -> None:
    (tmp_path / "p.yaml").write_text(POLICIES)
    (tmp_path / "model.yaml").write_text("pods: []\nports: [{port: 80}]\n")
    done = subprocess.run([*PORTOLAN, "audit", "evaluate", "--policies", str(tmp_path / "p.yaml"),
                           "--model", str(tmp_path / "model.yaml")], capture_output=True, text=True)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "pods" in done.stderr


SCENARIOS = pathlib.Path(__file__).resolve().parents[1] / "netpol" / "scenarios"


@pytest.mark.skipif(not cyclonus.available() and os.environ.get("CI") != "true",
                    reason="cyclonus is built by tools/k8s/build.sh")
@pytest.mark.parametrize("name", ["shop-and-db-like-application", "egress-named-port-resolved-at-destination",
                                  "ip-block-with-except-ingress", "dns-egress-to-kube-dns-only"])
def test_audit_evaluate_reads_a_cyclonus_model_and_prints_cyclonus_s_matrix(name: str) -> None:
    folder = SCENARIOS / name
    done = subprocess.run([*PORTOLAN, "audit", "evaluate", "--policies", str(folder / "policies"),
                           "--model", str(folder / "model.json"), "-o", "json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    table = json.loads(done.stdout)
    expected = cyclonus.probe_matrix(folder / "policies", folder / "model.json")
    ours = {(s, d, int(key.split("/")[0]), key.split("/")[1]): verdict["allowed"]
            for key, rows in table.items() for s, row in rows.items() for d, verdict in row.items()}
    pod_pairs = {cell: allowed for cell, allowed in ours.items() if "/" in cell[0] and "/" in cell[1]}
    assert pod_pairs == {cell: allowed for cell, allowed in expected.items() if cell[0] != cell[1]}
    outside = json.loads((folder / "model.json").read_text())["External"]
    assert {cell[1] for cell in ours if cell[0] == "shop/web"} >= set(outside)  # outside addresses are columns too


def test_audit_evaluate_prints_a_truth_table_per_port_with_a_legend_of_destinations() -> None:
    folder = SCENARIOS / "shop-and-db-like-application"
    done = subprocess.run([*PORTOLAN, "audit", "evaluate", "--policies", str(folder / "policies"),
                           "--model", str(folder / "model.json")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    legend = dict(item.split("=", 1) for item in lines[0].removeprefix("destinations:").split())
    column = {name: index for index, name in enumerate(legend.values())}
    start = lines.index(next(line for line in lines if line.startswith("5432/TCP")))
    rows = {line.split()[0]: line.split()[1] for line in lines[start + 1:start + 1 + len(legend)]}
    assert rows["shop/web"][column["db/pg"]] == "."  # the one path the application opens
    assert rows["shop/cart"][column["db/pg"]] == "x"
    assert rows["shop/web"][column["shop/web"]] == "-"


def test_audit_evaluate_refuses_a_malformed_policy_in_one_line(tmp_path: pathlib.Path) -> None:
    (tmp_path / "p.yaml").write_text(POLICIES.replace("{matchLabels: {team: shop}}", "{matchExpressions: [{key: team, operator: Near}]}"))
    (tmp_path / "model.yaml").write_text(MODEL)
    done = subprocess.run([*PORTOLAN, "audit", "evaluate", "--policies", str(tmp_path / "p.yaml"),
                           "--model", str(tmp_path / "model.yaml")], capture_output=True, text=True)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "operator must be one of" in done.stderr
