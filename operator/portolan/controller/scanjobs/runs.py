"""One reconciliation in progress: what was observed, the status being built, the actions decided.

:class:`Run` holds the state the phases of reconciliation share (the job's
status as a model, the shard entries touched, the actions) and turns it into a
status merge patch at the end (:meth:`Run.finish`).  The status is the job's *view*: ``plan`` and ``shards`` come from its
ScanShard objects, and the patch's ``plan`` (a new plan) and ``shards`` (entries
touched) are written there by the step, never into the job.  The phases themselves are
functions in :mod:`.driving` (shards: create, retry, fail, suspend, deadline)
and :mod:`.concluding` (phase, conditions, expectations, TTL).
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any

import pydantic.alias_generators

from portolan.controller.scanjobs import planning
from portolan.kube import builders, codecs
from portolan.models import settings, statuses

TERMINAL = (statuses.Phase.COMPLETE, statuses.Phase.FAILED)
SHARD_DONE = (statuses.ShardPhase.SUCCEEDED, statuses.ShardPhase.FAILED)


@dataclasses.dataclass(frozen=True)
class PodView:
    """What reconciliation needs to know about one shard pod."""

    name: str
    shard: str
    attempt: int
    phase: str  # Pending | Running | Succeeded | Failed | Unknown
    exit_code: int | None = None
    reason: str | None = None
    node: str | None = None
    deleting: bool = False
    job: str = ""

    @property
    def active(self) -> bool:
        """Pending or Running and not being deleted: it holds a concurrency slot."""
        return self.phase in ("Pending", "Running") and not self.deleting


@dataclasses.dataclass(frozen=True)
class Observed:
    """Everything reconcile reads: the job body, its shard pods, the namespace's active shards, the time.

    ``namespace_active_shards`` is None when not counted: counting lists every shard pod of the
    namespace, which only a job about to start shards needs (reconcile then asks for it with
    :attr:`Actions.needs_slots`).
    """

    body: Mapping[str, Any]
    pods: Sequence[PodView]
    namespace_active_shards: int | None
    now: datetime.datetime
    selector_addresses: Sequence[str] = ()
    selector_error: str | None = None
    lost_nodes: Mapping[str, str] = dataclasses.field(default_factory=dict)  # node -> what is wrong with it
    egress_policies: Sequence[str] | None = None  # policies isolating the shard pods' egress; None: not looked up
    inventory_nodes: Mapping[str, Sequence[tuple[str, Sequence[str]]]] = dataclasses.field(
        default_factory=dict)  # pool -> its Ready nodes and their addresses (looked up only before planning)
    nodes: Sequence[planning.NodeView] = ()  # the cluster's nodes, read only while the job has no plan yet


@dataclasses.dataclass
class Actions:
    """What reconcile decided: a status merge patch, pods to create or delete, Events, objects to write."""

    status: dict[str, Any] = dataclasses.field(default_factory=dict)
    create: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    delete: list[str] = dataclasses.field(default_factory=list)
    force_delete: list[str] = dataclasses.field(default_factory=list)  # pods on lost nodes: no kubelet will confirm
    events: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)
    results_configmap: dict[str, Any] | None = None  # a ConfigMap manifest (spilled results)
    network_policy: dict[str, Any] | None = None
    delete_job: bool = False
    shard_retries: int = 0  # attempts that failed and will be retried (a metric)
    shard_failures: int = 0  # shards that failed for good (a metric)
    needs_egress_check: bool = False  # every probe came back silent: look up the namespace's egress policies
    needs_slots: bool = False  # a shard is due to start: count the namespace's active shard pods, then decide again


class Run:
    """The state of one reconciliation of one ScanJob."""

    def __init__(self, observed: Observed, config: settings.OperatorSettings) -> None:
        self.observed = observed
        self.config = config
        self.now = observed.now
        self.meta = observed.body["metadata"]
        self.generation = self.meta.get("generation")
        self.status = statuses.ScanJobStatus.model_validate(observed.body.get("status") or {})
        self.actions = Actions()
        self.shard_patch: dict[str, dict[str, Any]] = {}
        self.new_plan = False

    def condition(self, kind: str, value: bool, reason: str, message: str = "") -> None:
        """Set one condition (its transition time kept when its status did not change)."""
        self.status.conditions = builders.set_condition(
            self.status.conditions, kind, value, reason, message, self.generation, self.now
        )

    def event(self, kind: str, reason: str, message: str) -> None:
        """Queue an Event for the step to send."""
        self.actions.events.append((kind, reason, message))

    def touch(self, shard_id: str, **fields: Any) -> None:
        """Change fields of one shard's entry, in the model and in the patch (only touched keys are sent)."""
        entry = self.status.shards.setdefault(shard_id, statuses.ShardStatus())
        for key, value in fields.items():
            setattr(entry, key, value)
        self.shard_patch.setdefault(shard_id, {}).update(fields)

    def finish(self, progress: str | None = None) -> Actions:
        """The status merge patch of this pass (spilling results into a ConfigMap past 3/4 of the budget)."""
        self.status.observed_generation = self.generation
        budget = self.config.status_byte_budget
        if builders.status_size(self.status) > budget * 3 // 4 and self.status.results:
            name = f"{self.meta['name']}-results"
            full = [r.model_dump(by_alias=True, mode="json") for r in self.status.results]
            self.actions.results_configmap = builders.results_configmap(
                self.observed.body, name, codecs.encode_results(full))
            self.status.results_ref = f"configmap/{name}"
            for result in self.status.results:
                result.open_truncated += len(result.open)
                result.open = []
        inventory = self.status.inventory
        while inventory is not None and inventory.listed and builders.status_size(self.status) > budget:
            cut = max(1, len(inventory.listed) // 4)  # the least exposed go first: the list is ordered
            inventory.truncated += cut
            del inventory.listed[-cut:]
        dumped = self.status.model_dump(by_alias=True, mode="json", exclude_none=True)
        patch: dict[str, Any] = {
            key: dumped.get(key)
            for key in ("phase", "observedGeneration", "conditions", "results", "resultsRef", "expectations", "inventory",
                        "summary", "openPorts", "startTime", "completionTime")
        }
        if progress is not None:
            patch["progress"] = progress
        if self.new_plan:  # the step writes it as ScanShard objects, then the count into the job
            patch["plan"] = dumped["plan"]
            patch["shardCount"] = len(self.status.plan)
        if self.shard_patch:
            patch["shards"] = {
                shard_id: {
                    pydantic.alias_generators.to_camel(key): (value.value if hasattr(value, "value") else value)
                    for key, value in fields.items()
                }
                for shard_id, fields in self.shard_patch.items()
            }
        self.actions.status = {key: value for key, value in patch.items() if value is not None}
        return self.actions

