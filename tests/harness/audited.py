"""A ReachabilityAudit run to its end on the in-memory client, for golden files and CLI tests.

web may reach pg's 5432 (says a stand-in for the policy evaluator), and the
cluster lets everything through: six pairs come out unexpectedly reachable.
"""

from __future__ import annotations

import datetime
from typing import Any

from portolan.models import settings


def finished_audit() -> dict[str, Any]:
    """An audit run on the in-memory client: web may reach pg's 5432; the cluster lets everything through."""

    from portolan.controller.reachabilityaudits import auditing
    from portolan.kube import fakes

    kube = fakes.FakeKube()
    for namespace, name, labels, ip in (("shop", "web-0", {"app": "web"}, "198.18.200.10"),
                                        ("db", "pg-0", {"app": "pg"}, "198.18.201.10"),
                                        ("db", "pg-1", {"app": "pg"}, "198.18.201.11")):
        kube.add({"kind": "Pod", "metadata": {"namespace": namespace, "name": name, "labels": labels},
                  "spec": {"containers": [{"name": "app"}]}, "status": {"phase": "Running", "podIP": ip}})
    kube.add({"apiVersion": "portolan.dev/v1alpha1", "kind": "ReachabilityAudit",
              "metadata": {"name": "shop-db", "namespace": "", "uid": "0a1b2c3d-0000-4000-8000-000000000002"},
              "spec": {"sources": [{"name": "web", "namespace": "shop", "podLabels": {"app": "web"}},
                                   {"name": "other", "namespace": "shop", "podLabels": {"app": "other"}}],
                       "destinations": [{"name": "pg", "namespace": "db", "podSelector": {"app": "pg"}}],
                       "ports": [{"port": 5432}, {"port": 22}]}})
    config = settings.OperatorSettings(audit_namespaces=["shop"])
    t0 = datetime.datetime(2026, 11, 22, 12, 0, 0, tzinfo=datetime.UTC)

    def policies(snapshot: Any, labels: Any, namespace: str, pair: Any) -> tuple[bool, str]:
        allowed = labels.get("app") == "web" and pair.port == 5432
        return allowed, "db/allow-web-to-pg" if allowed else "db/default-deny-ingress"

    auditing.step(kube, config, "shop-db", t0, policies)
    for source in ("web", "other"):
        kube.patch_audit_status("shop-db", {"probes": {source: {"phase": "Done", "verdicts": "rrrr"}}})
    auditing.step(kube, config, "shop-db", t0 + datetime.timedelta(seconds=3), policies)
    return kube.get_audit("shop-db")

