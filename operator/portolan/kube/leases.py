"""The Lease behind leader election (:mod:`portolan.controller.leading`), through the coordination API.

Only get, create and replace (with the read resourceVersion, so two candidates
writing at once cannot both win); a 409 is a lost race, not an error.
"""

from __future__ import annotations

from typing import Any

import kubernetes


class KubeLeases:
    """One named Lease in one namespace."""

    def __init__(self, api_client: Any, namespace: str, name: str) -> None:
        self.api = kubernetes.client.CoordinationV1Api(api_client)
        self.namespace = namespace
        self.name = name

    def get(self) -> dict[str, Any] | None:
        """The Lease's spec (camelCase) with its resourceVersion, or None."""
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        spec: dict[str, Any] = self.api.api_client.sanitize_for_serialization(lease.spec) or {}
        spec["resourceVersion"] = lease.metadata.resource_version
        return spec

    def create(self, spec: dict[str, Any]) -> bool:
        """Create the Lease; False if another candidate created it first."""
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace}, "spec": spec}
        try:
            self.api.create_namespaced_lease(self.namespace, body)
        except kubernetes.client.ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def replace(self, spec: dict[str, Any], resource_version: str) -> bool:
        """Replace the spec if the Lease is still at ``resource_version``; False on a conflict."""
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace, "resourceVersion": resource_version},
                "spec": spec}
        try:
            self.api.replace_namespaced_lease(self.name, self.namespace, body)
        except kubernetes.client.ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True
