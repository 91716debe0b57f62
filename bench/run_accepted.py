"""Time from ``create`` of a ScanJob to the first watch event that shows its ``Accepted`` condition.

    KUBECONFIG=... .venv/bin/python bench/run_accepted.py NAMESPACE COUNT PREFIX [GAP_SECONDS]

Runs against a control plane where an operator already watches NAMESPACE (which needs the
``portolan-shard`` ServiceAccount).  Each job is created through the API, one every GAP
seconds; a watch started before the first create timestamps the event that first carries
``Accepted``, so the client's polling adds nothing.  Prints min, median, p90 and max.
Bounded: COUNT jobs, a 120 s watch.
"""

from __future__ import annotations

import sys
import threading
import time

import kubernetes

GROUP, VERSION, PLURAL = "portolan.dev", "v1alpha1", "scanjobs"


def main() -> None:
    kubernetes.config.load_kube_config()
    api = kubernetes.client.CustomObjectsApi()
    namespace, count, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    gap = float(sys.argv[4]) if len(sys.argv) > 4 else 0.5
    created: dict[str, float] = {}
    accepted: dict[str, float] = {}
    version = api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, limit=1)["metadata"]["resourceVersion"]

    def watch() -> None:
        stream = kubernetes.watch.Watch().stream(api.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL,
                                                 resource_version=version, timeout_seconds=120)
        for event in stream:
            obj = event["object"]
            name = obj["metadata"]["name"]
            conditions = (obj.get("status") or {}).get("conditions") or []
            if name.startswith(prefix + "-") and name not in accepted and any(c["type"] == "Accepted" for c in conditions):
                accepted[name] = time.monotonic()
                if len(accepted) == count:
                    return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    time.sleep(0.5)
    for index in range(count):
        name = f"{prefix}-{index}"
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ScanJob", "metadata": {"name": name, "namespace": namespace},
                "spec": {"targets": {"addresses": ["198.18.64.101"]}, "ports": "22", "sharding": {"shards": 1}}}
        created[name] = time.monotonic()
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
        time.sleep(gap)
    watcher.join(60)
    seconds = sorted(accepted[name] - created[name] for name in accepted)
    print(f"accepted {len(seconds)}/{count}: min {seconds[0]:.3f} s, median {seconds[len(seconds) // 2]:.3f} s, "
          f"p90 {seconds[int(len(seconds) * 0.9)]:.3f} s, max {seconds[-1]:.3f} s")


if __name__ == "__main__":
    main()
