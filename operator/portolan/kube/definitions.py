"""CustomResourceDefinitions generated from the pydantic models (the one source of truth).

:func:`scanjob_crd` turns the ScanJob spec and status models into a structural
OpenAPI v3 schema: references inlined, ``anyOf`` with null turned into
``nullable``, free-form maps marked ``x-kubernetes-preserve-unknown-fields``,
CEL rules carried over.  ``crds/`` and the Helm chart hold its output; a test
keeps them in sync (``portolan crd > crds/scanjobs.portolan.dev.yaml``).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pydantic
import yaml

from portolan.models import audits, charts, scanjobs, schedules, statuses

_DROP = {"title", "$defs"}


def structural(schema: dict[str, Any]) -> dict[str, Any]:
    """Inline ``$ref``s and rewrite JSON Schema into Kubernetes' structural OpenAPI subset."""
    definitions = schema.get("$defs", {})

    def convert(node: Any) -> Any:
        if isinstance(node, list):
            return [convert(item) for item in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            target = copy.deepcopy(definitions[node["$ref"].split("/")[-1]])
            extra = {k: v for k, v in node.items() if k != "$ref"}
            return convert({**target, **extra})
        if "anyOf" in node:
            options = [o for o in node["anyOf"] if o.get("type") != "null"]
            nullable = len(options) < len(node["anyOf"])
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            if len(options) == 1:
                merged = convert({**options[0], **rest})
                if nullable:
                    merged["nullable"] = True
                if merged.get("default", 0) is None:
                    del merged["default"]
                return merged
            if nullable or {o.get("type") for o in options} == {"integer", "string"}:
                return convert({**rest, "x-kubernetes-int-or-string": True})
            return convert(rest)
        result: dict[str, Any] = {}
        for key, value in node.items():
            if key in _DROP:
                continue
            if key == "const":
                result["enum"] = [value]
            elif key == "exclusiveMinimum" and not isinstance(value, bool):
                result["minimum"] = value
                result["exclusiveMinimum"] = True
            elif key == "additionalProperties" and value is True:
                result["x-kubernetes-preserve-unknown-fields"] = True
            elif key == "additionalProperties" and value is False:
                continue  # the API server prunes unknown fields; it forbids this beside properties
            elif key == "properties":
                result[key] = {name: convert(sub) for name, sub in value.items()}
            else:
                result[key] = convert(value)
        if result.get("type") == "object" and "properties" not in result and "additionalProperties" not in result:
            result["x-kubernetes-preserve-unknown-fields"] = True
        if "default" in result and result["default"] is None:
            del result["default"]
        return result

    converted: dict[str, Any] = convert({k: v for k, v in schema.items() if k != "$defs"})
    return converted


def _namespaced_crd(
    *, kind: str, plural: str, singular: str, short: str, spec_model: type[pydantic.BaseModel],
    status_model: type[pydantic.BaseModel], columns: list[dict[str, Any]], description: str,
    scope: str = "Namespaced",
) -> dict[str, Any]:
    """A Portolan kind's CRD: structural schemas from its spec and status models, status subresource."""
    spec = structural(spec_model.model_json_schema(by_alias=True, mode="validation"))
    status = structural(status_model.model_json_schema(by_alias=True, mode="validation"))
    status.pop("required", None)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{scanjobs.API_GROUP}",
                     "labels": {"app.kubernetes.io/name": "portolan"}},
        "spec": {
            "group": scanjobs.API_GROUP,
            "scope": scope,
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural,
                      "singular": singular, "shortNames": [short], "categories": ["portolan"]},
            "versions": [{
                "name": scanjobs.API_VERSION, "served": True, "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": columns,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": description,
                    "required": ["spec"],
                    "properties": {
                        "apiVersion": {"type": "string"}, "kind": {"type": "string"},
                        "metadata": {"type": "object"}, "spec": spec, "status": status,
                    },
                }},
            }],
        },
    }


def scanjob_crd() -> dict[str, Any]:
    """The ScanJob CRD, its schema generated from the models (the plan and shard entries live in ScanShards)."""
    crd = _namespaced_crd(
        kind=scanjobs.KIND, plural=scanjobs.PLURAL, singular="scanjob", short="sj",
        spec_model=scanjobs.ScanJobSpec, status_model=statuses.ScanJobStatus,
        description="A network scan, split into shards that run on the node pools it names.",
        columns=[
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Shards", "type": "string", "jsonPath": ".status.summary", "description": "succeeded/total"},
            {"name": "Open", "type": "integer", "jsonPath": ".status.openPorts"},
            {"name": "Progress", "type": "string", "jsonPath": ".status.progress"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    )
    status = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    for field in statuses.VIEW_ONLY:  # never stored in the job: the API server prunes them if sent
        del status["properties"][field]
    return crd


def scanshard_crd() -> dict[str, Any]:
    """The ScanShard CRD: one shard of a ScanJob (spec: its slice of the plan; status: what it reported)."""
    return _namespaced_crd(
        kind=statuses.KIND_SHARD, plural=statuses.PLURAL_SHARDS, singular="scanshard", short="ssh",
        spec_model=statuses.ShardPlan, status_model=statuses.ShardStatus,
        description="One shard of a ScanJob, owned by it: the operator writes its spec (the shard's slice of the "
        "plan) and attempts; the shard pod writes its progress and results.",
        columns=[
            {"name": "Pool", "type": "string", "jsonPath": ".spec.pool"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Attempt", "type": "integer", "jsonPath": ".status.attempt"},
            {"name": "Done", "type": "integer", "jsonPath": ".status.done"},
            {"name": "Probes", "type": "integer", "jsonPath": ".spec.probes"},
            {"name": "Node", "type": "string", "jsonPath": ".status.node"},
            {"name": "Error", "type": "string", "jsonPath": ".status.lastError", "priority": 1},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    )


def scanschedule_crd() -> dict[str, Any]:
    """The ScanSchedule CRD, its schema generated from the models."""
    return _namespaced_crd(
        kind=schedules.KIND, plural=schedules.PLURAL, singular="scanschedule", short="ss",
        spec_model=schedules.ScanScheduleSpec, status_model=schedules.ScanScheduleStatus,
        description="ScanJobs on a schedule, with the drift between consecutive runs.",
        columns=[
            {"name": "Schedule", "type": "string", "jsonPath": ".spec.schedule"},
            {"name": "Suspend", "type": "boolean", "jsonPath": ".spec.suspend"},
            {"name": "Last", "type": "date", "jsonPath": ".status.lastScheduleTime"},
            {"name": "Next", "type": "string", "jsonPath": ".status.nextScheduleTime"},
            {"name": "Drifted", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Drifted\")].status"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    )


def reachabilityaudit_crd() -> dict[str, Any]:
    """The ReachabilityAudit CRD (cluster-scoped: it places probe pods in several namespaces)."""
    return _namespaced_crd(
        kind=audits.KIND, plural=audits.PLURAL, singular="reachabilityaudit", short="ra", scope="Cluster",
        spec_model=audits.ReachabilityAuditSpec, status_model=audits.ReachabilityAuditStatus,
        description="Probes which pods can reach which, and compares it with the NetworkPolicies and declared rules.",
        columns=[
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Pairs", "type": "integer", "jsonPath": ".status.totals.pairs"},
            {"name": "Reachable!", "type": "integer", "jsonPath": ".status.totals.unexpectedlyReachable",
             "description": "pairs reachable against the expectation (a security finding)"},
            {"name": "Blocked!", "type": "integer", "jsonPath": ".status.totals.unexpectedlyBlocked"},
            {"name": "AsExpected", "type": "string",
             "jsonPath": ".status.conditions[?(@.type==\"ReachabilityAsExpected\")].status"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    )


def render_all() -> dict[str, dict[str, Any]]:
    """File name in ``crds/`` -> CRD."""
    return {
        "scanjobs.portolan.dev.yaml": scanjob_crd(),
        "scanshards.portolan.dev.yaml": scanshard_crd(),
        "scanschedules.portolan.dev.yaml": scanschedule_crd(),
        "reachabilityaudits.portolan.dev.yaml": reachabilityaudit_crd(),
    }


HEADER = "# Generated by `portolan generate` from portolan.models and portolan.settings; do not edit.\n"


def values_schema() -> dict[str, Any]:
    """JSON Schema of the chart's values (Helm validates values against it)."""
    schema = charts.ChartValues.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    converted: dict[str, Any] = _draft7(schema)
    return converted


def _draft7(node: Any) -> Any:
    """Helm's validator reads draft 7: move ``$defs`` to ``definitions``."""
    if isinstance(node, list):
        return [_draft7(item) for item in node]
    if not isinstance(node, dict):
        return node
    result = {}
    for key, value in node.items():
        if key == "$defs":
            result["definitions"] = _draft7(value)
        elif key == "$ref" and isinstance(value, str):
            result[key] = value.replace("#/$defs/", "#/definitions/")
        else:
            result[key] = _draft7(value)
    return result


def generated_files() -> dict[str, str]:
    """Repository-relative path -> content, for everything generated from the models."""
    files = {}
    for filename, crd in render_all().items():
        text = HEADER + yaml.safe_dump(crd, sort_keys=False)
        files[f"crds/{filename}"] = text
        files[f"charts/portolan/crds/{filename}"] = text
    values = charts.ChartValues().model_dump(by_alias=True, mode="json")
    files["charts/portolan/values.yaml"] = HEADER + yaml.safe_dump(values, sort_keys=False)
    files["charts/portolan/values.schema.json"] = json.dumps(values_schema(), indent=2) + "\n"
    return files
