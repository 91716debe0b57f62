"""``portolan audit evaluate``: what NetworkPolicies allow, offline, from a folder of policies and a model."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

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
    assert table["5432/TCP"]["shop/web"]["db/pg"] == {"allowed": True, "decidedBy":
                                                      "no egress policy selects shop pod; ingress allowed by db/pg-from-web"}
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
