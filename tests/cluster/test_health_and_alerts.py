"""What GitOps and monitoring users see of a real operator run: Argo CD health and Prometheus alerts.

One operator runs one story on the control plane, in stages: jobs that complete (one breaking
its expectations), are rejected, suspended or never seen; a job whose shard is killed six times;
a job that runs out of time; a schedule whose second target run finds a newly opened port.
After each stage the operator's /metrics is scraped, as Prometheus would.

- Argo CD: the chart's Lua health scripts (charts/portolan/argocd) judge the live objects
  under lua5.1, and the golden objects in tests/golden/argocd (which the fast test in
  tests/unit/test_argocd_health.py uses) must still look like what the operator writes.
  ``PORTOLAN_UPDATE_GOLDEN=1`` rewrites them from this run.
- Prometheus: the chart's rendered PrometheusRule passes ``promtool check rules``, and
  ``promtool test rules`` replays the scrapes as series, each stage two hours apart: every
  alert fires right after the stage that should raise it, and is silent at every other point.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from prometheus_client import parser

from harness import argocd, clusters, netns, operators

pytestmark = pytest.mark.cluster

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests/golden/argocd"
NAMESPACE = "scans-observed"
UNWATCHED = "scans-unwatched"  # no operator watches it: what Argo CD sees before the operator acts
STAGE_MINUTES = 120
HOST = "198.18.64.101"  # 22 and 80 open
SILENT = "198.18.64.103"  # drops everything: shards take seconds, long enough to kill
DRIFT_HOST = "198.18.64.102"  # 80 open; the story opens 8080 between two schedule runs


def _job(name: str, namespace: str = NAMESPACE, *, slow: bool = False, **extra: Any) -> dict[str, Any]:
    timing = ({"retries": 1, "initialRttTimeoutMs": 2000, "maxRttTimeoutMs": 2000, "concurrency": 20} if slow
              else {"retries": 0, "initialRttTimeoutMs": 300, "maxRttTimeoutMs": 300})
    spec = {"targets": {"addresses": [HOST, SILENT] if slow else [HOST]}, "ports": "1-40,80" if slow else "22,80",
            "sharding": {"shards": 1}, "timing": timing, "backoffSeconds": 0, **extra}
    return {"apiVersion": "portolan.dev/v1alpha1", "kind": "ScanJob",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def _schedule(name: str, namespace: str = NAMESPACE, **extra: Any) -> dict[str, Any]:
    spec = {"schedule": "@every 10s", "successfulJobsHistoryLimit": 2, **extra,
            "jobTemplate": {"spec": {"targets": {"addresses": [DRIFT_HOST]}, "ports": "22,80,8080", "retries": 0,
                                     "timing": {"retries": 0, "initialRttTimeoutMs": 300, "maxRttTimeoutMs": 300}}}}
    return {"apiVersion": "portolan.dev/v1alpha1", "kind": "ScanSchedule",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


@dataclasses.dataclass
class Story:
    objects: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # case -> live object
    scrapes: list[str] = dataclasses.field(default_factory=list)  # /metrics after each stage
    stages: list[str] = dataclasses.field(default_factory=list)


class Teller:
    def __init__(self, cluster: clusters.Cluster, operator: operators.Operator) -> None:
        self.cluster = cluster
        self.operator = operator
        self.story = Story()

    def apply(self, *objects: dict[str, Any]) -> None:
        self.cluster.plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))

    def get(self, kind: str, name: str, namespace: str = NAMESPACE) -> dict[str, Any]:
        out = self.cluster.plane.kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout
        return json.loads(out)  # type: ignore[no-any-return]

    def status(self, kind: str, name: str) -> dict[str, Any]:
        return self.get(kind, name).get("status") or {}

    def until(self, what: str, kind: str, name: str, check: Any, timeout: float = 120) -> dict[str, Any]:
        try:
            self.cluster.wait(what, lambda: bool(check(self.status(kind, name))), timeout=timeout)
        except AssertionError as exc:
            events = self.cluster.core().list_namespaced_event(NAMESPACE, field_selector=f"involvedObject.name={name}")
            story = "\n".join(f"{e.reason}: {e.message}" for e in events.items)
            raise AssertionError(f"{exc}\nstatus: {json.dumps(self.status(kind, name))[:3000]}\nevents:\n{story}") from exc
        return self.get(kind, name)

    def keep(self, case: str, obj: dict[str, Any]) -> None:
        obj.get("metadata", {}).pop("managedFields", None)
        self.story.objects[case] = obj

    def scrape(self, stage: str) -> None:
        self.story.stages.append(stage)
        self.story.scrapes.append(self.operator.metrics())

    def shard_pod(self, job: str) -> str | None:
        pods = self.cluster.core().list_namespaced_pod(NAMESPACE, label_selector=f"portolan.dev/job={job}").items
        running = [p for p in pods if p.status.phase == "Running"]
        return running[0].metadata.name if running else None


def _tell(teller: Teller, cluster: clusters.Cluster) -> None:
    phase = lambda *wanted: lambda s: s.get("phase") in wanted  # noqa: E731
    teller.scrape("start")

    # Stage 1: expectations. Jobs that complete (one finds 80 open where only 22 is allowed), one
    # with a bad spec, one suspended, one and a schedule nobody watches, and a schedule that cannot parse.
    teller.apply(_job("complete", expect={"allowedOpenPorts": "22,80"}), _job("violated", expect={"allowedOpenPorts": "22"}),
                 _job("rejected", ports="90-80"), _job("suspended", suspend=True), _job("unseen", UNWATCHED),
                 _schedule("unseen-schedule", UNWATCHED), _schedule("invalid-schedule", schedule="@every 1s"))
    teller.keep("scanjob-complete", teller.until("complete to complete", "scanjob", "complete", phase("Complete")))
    teller.keep("scanjob-complete-violated", teller.until("violated to complete", "scanjob", "violated", phase("Complete")))
    teller.keep("scanjob-rejected", teller.until("the rejection", "scanjob", "rejected", phase("Rejected")))
    teller.keep("scanjob-suspended", teller.until("suspension", "scanjob", "suspended", phase("Suspended")))
    teller.keep("scanschedule-invalid", teller.until("the schedule's rejection", "scanschedule", "invalid-schedule",
                                                     lambda s: s.get("observedGeneration")))
    teller.keep("scanjob-unseen", teller.get("scanjob", "unseen", UNWATCHED))
    teller.keep("scanschedule-unseen", teller.get("scanschedule", "unseen-schedule", UNWATCHED))
    teller.scrape("expectations violated")

    # Stage 2: retries. The one shard is killed six times; the seventh attempt completes.
    teller.apply(_job("retried", slow=True, retries=6))
    for attempt in range(1, 7):
        cluster.wait(f"attempt {attempt}", lambda n=attempt: (teller.shard_pod("retried") or "").endswith(f"-{n}"), timeout=60)
        if attempt == 1:
            teller.keep("scanjob-running", teller.until("Running", "scanjob", "retried", phase("Running")))
        pod = teller.shard_pod("retried")
        assert pod is not None
        cluster.agent.kill_pod(NAMESPACE, pod)
    done = teller.until("the retried job to complete", "scanjob", "retried", phase("Complete", "Failed"), timeout=180)
    shards = teller.cluster.plane.scanjob(NAMESPACE, "retried")["status"]["shards"]
    assert done["status"]["phase"] == "Complete" and shards["default-0"]["attempt"] == 7
    teller.scrape("shards retrying")

    # Stage 3: a job that runs out of time fails.
    teller.apply(_job("late", slow=True, retries=0, activeDeadlineSeconds=2))
    teller.keep("scanjob-failed", teller.until("the late job to fail", "scanjob", "late", phase("Failed", "Complete")))
    assert teller.story.objects["scanjob-failed"]["status"]["phase"] == "Failed"
    teller.scrape("job failed")

    # Stage 4: drift. Two runs see the same ports, then 8080 opens on the target.
    teller.apply(_schedule("drift"))
    schedule = teller.until("two completed runs", "scanschedule", "drift", lambda s: s.get("drift"), timeout=90)
    teller.keep("scanschedule-healthy", schedule)
    host_ns = f"{cluster.agent.prefix}-t1"  # DRIFT_HOST, built by the targets fixture
    env = dict(os.environ, PYTHONPATH=str(ROOT / "tests"))
    server = netns.popen(host_ns, [sys.executable, "-m", "harness.servers",
                                   json.dumps([{"proto": "tcp", "port": 8080, "kind": "http"}])], stdout=subprocess.PIPE, env=env)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == b"ready"
        drifted = teller.until("drift showing 8080 opened", "scanschedule", "drift",
                               lambda s: any(c["port"] == 8080 for c in (s.get("drift") or {}).get("opened", [])))
        teller.keep("scanschedule-drifted", drifted)
        cluster.plane.kubectl("patch", "scanschedule", "drift", "-n", NAMESPACE, "--type=merge", "-p", '{"spec": {"suspend": true}}')
        generation = teller.get("scanschedule", "drift")["metadata"]["generation"]
        teller.keep("scanschedule-suspended", teller.until("the suspension", "scanschedule", "drift",
                                                            lambda s: s.get("observedGeneration") == generation))
    finally:
        server.kill()
        server.wait()
        if server.stdout is not None:
            server.stdout.close()
    teller.scrape("drift")


@pytest.fixture(scope="module")
def story(cluster: clusters.Cluster, targets: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    operators.prepare(cluster, NAMESPACE)
    cluster.plane.kubectl("create", "namespace", UNWATCHED, check=False)
    running = operators.Operator(cluster, tmp_path_factory.mktemp("operator"), NAMESPACE, image=operators.pod_image())
    running.start()
    teller = Teller(cluster, running)
    try:
        cluster.wait("the operator's /metrics", lambda: _serving(running), timeout=60)
        _tell(teller, cluster)
        yield teller.story
    finally:
        running.stop()
        cluster.plane.kubectl("delete", "scanschedules,scanjobs", "--all", "-n", NAMESPACE, "--wait=false", check=False)
        cluster.plane.kubectl("delete", "scanschedules,scanjobs", "--all", "-n", UNWATCHED, "--wait=false", check=False)


def _serving(operator: operators.Operator) -> bool:
    try:
        operator.metrics()
    except OSError:
        return False
    return True


# -- Argo CD -----------------------------------------------------------------------------------


def test_argo_cd_judges_each_live_scanjob_and_scanschedule_as_the_issue_table_says(story: Story) -> None:
    assert set(story.objects) == set(argocd.EXPECTED)
    for case, (kind, status, words) in argocd.EXPECTED.items():
        judged = argocd.health(kind, story.objects[case])
        assert judged.status == status, (case, judged)
        assert words in judged.message, (case, judged)


def _shape(obj: dict[str, Any]) -> dict[str, Any]:
    """What the health scripts read, without times and counts: phase, generations, conditions, suspend."""
    status = obj.get("status") or {}
    return {
        "kind": obj["kind"], "phase": status.get("phase"), "suspend": (obj.get("spec") or {}).get("suspend"),
        "observed": status.get("observedGeneration") == obj["metadata"].get("generation"),
        "conditions": sorted((c["type"], c["status"], c["reason"]) for c in status.get("conditions", [])),
    }


def test_the_golden_objects_still_look_like_what_the_operator_writes(story: Story) -> None:
    if os.environ.get("PORTOLAN_UPDATE_GOLDEN") == "1":
        FIXTURES.mkdir(parents=True, exist_ok=True)
        for case, obj in story.objects.items():
            (FIXTURES / f"{case}.json").write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
    recorded = {path.stem: json.loads(path.read_text()) for path in FIXTURES.glob("*.json")}
    assert set(recorded) == set(story.objects)
    for case, obj in story.objects.items():
        assert _shape(recorded[case]) == _shape(obj), f"{case}: re-record with PORTOLAN_UPDATE_GOLDEN=1"


# -- Prometheus --------------------------------------------------------------------------------

ALERTS = {  # alert -> (the stage that should raise it, the labels its series carry)
    "PortolanExpectationsViolated": ("expectations violated", {"namespace": NAMESPACE, "scanjob": "violated"}),
    "PortolanShardsRetrying": ("shards retrying", {}),
    "PortolanScanJobFailed": ("job failed", {"result": "failed"}),
    "PortolanDriftDetected": ("drift", {"namespace": NAMESPACE, "scanschedule": "drift"}),
    "PortolanStatusWritesFailing": (None, {}),  # nothing in the story breaks status writes
    # No ReachabilityAudit in this story: silent throughout (their firing: the test after the next one).
    "PortolanUnexpectedlyReachable": (None, {}),
    "PortolanUnexpectedlyBlocked": (None, {}),
}


def _promtool() -> str:
    """promtool, built by tools/promtool/build.sh (tools/test.sh runs it; cached by hash)."""
    tool = ROOT / "tools/promtool/bin/promtool"
    if not tool.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("promtool missing: tools/promtool/build.sh builds it")
        pytest.skip("promtool missing: run tools/promtool/build.sh")
    return str(tool)


@pytest.fixture(scope="module")
def rules(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """The chart's PrometheusRule as helm renders it, its spec as a Prometheus rule file."""
    done = subprocess.run([str(clusters.BIN / "helm"), "template", "portolan", str(ROOT / "charts/portolan"),
                           "--set", "monitoring.prometheusRule=true", "--show-only", "templates/monitoring.yaml"],
                          capture_output=True, text=True, check=True, timeout=120)
    rule = next(o for o in yaml.safe_load_all(done.stdout) if o and o["kind"] == "PrometheusRule")
    path = tmp_path_factory.mktemp("rules") / "portolan.rules.yaml"
    path.write_text(yaml.safe_dump(rule["spec"]))
    return path


def test_promtool_accepts_the_rendered_rules(rules: pathlib.Path) -> None:
    done = subprocess.run([_promtool(), "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in done.stdout


def _series(scrapes: list[str]) -> dict[str, list[float | None]]:
    """Each sample of each scrape as a series in promtool's notation, in scrape order; None where absent."""
    found: dict[str, list[float | None]] = {}
    for index, text in enumerate(scrapes):
        for family in parser.text_string_to_metric_families(text):
            for sample in family.samples:
                if not sample.name.startswith("portolan_") or sample.name.endswith("_created"):
                    continue
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                found.setdefault(f"{sample.name}{{{labels}}}", [None] * len(scrapes))[index] = sample.value
    return found


def _expanded(annotations: dict[str, str], labels: dict[str, str]) -> dict[str, str]:
    """The annotations as Prometheus renders them for an alert with these labels (``{{ $labels.x }}`` only)."""
    expanded = {}
    for key, text in annotations.items():
        for label, value in labels.items():
            text = text.replace(f"{{{{ $labels.{label} }}}}", value)
        assert "{{" not in text, f"{key}: a template this test does not expand: {text}"
        expanded[key] = text
    return expanded


def test_each_alert_fires_after_the_stage_that_should_raise_it_and_is_silent_otherwise(
        story: Story, rules: pathlib.Path, tmp_path: pathlib.Path) -> None:
    per_stage = STAGE_MINUTES
    series = []
    for name, values in _series(story.scrapes).items():
        # A counter holds its value between scrapes; a series absent from a scrape is '_'.
        notation = " ".join(("_" if v is None else repr(v)) + f"x{per_stage - 1}" for v in values)
        series.append({"series": name, "values": notation})
    groups = yaml.safe_load(rules.read_text())["groups"]
    defined = {r["alert"]: r for g in groups for r in g["rules"]}
    assert set(defined) == set(ALERTS)
    checks = []
    for alert, (stage, labels) in ALERTS.items():
        rule = defined[alert]
        for index, name in enumerate(story.stages):
            for minute in (5, per_stage - 20):  # just after the stage; long after it (every window has passed)
                fires = name == stage and minute == 5
                expected = [{"exp_labels": {**rule.get("labels", {}), **labels},
                             "exp_annotations": _expanded(rule.get("annotations", {}), labels)}] if fires else []
                checks.append({"eval_time": f"{index * per_stage + minute}m", "alertname": alert, "exp_alerts": expected})
    tests = {"rule_files": [str(rules)], "evaluation_interval": "1m",
             "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": checks}]}
    path = tmp_path / "portolan.test.yaml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    done = subprocess.run([_promtool(), "test", "rules", str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr + "\n" + path.read_text()[:4000]


def test_the_audit_alerts_fire_while_an_audit_reports_mismatches_and_name_it(
        rules: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """The series an audit leaves (portolan_reachability_mismatches, as the operator sets it after each run)."""
    series = [
        {"series": 'portolan_reachability_mismatches{audit="shop-db",kind="UnexpectedlyReachable"}',
         "values": "0x10 3x10 0x10"},
        {"series": 'portolan_reachability_mismatches{audit="shop-db",kind="UnexpectedlyBlocked"}',
         "values": "0x20 2x10"},
    ]
    groups = yaml.safe_load(rules.read_text())["groups"]
    defined = {r["alert"]: r for g in groups for r in g["rules"]}

    def expect(alert: str, minute: int, fires: bool) -> dict[str, Any]:
        rule = defined[alert]
        annotations = {k: v.replace("{{ $labels.audit }}", "shop-db") for k, v in rule.get("annotations", {}).items()}
        found = [{"exp_labels": {**rule.get("labels", {}), "audit": "shop-db"}, "exp_annotations": annotations}]
        return {"eval_time": f"{minute}m", "alertname": alert, "exp_alerts": found if fires else []}

    checks = [expect("PortolanUnexpectedlyReachable", 5, False), expect("PortolanUnexpectedlyReachable", 15, True),
              expect("PortolanUnexpectedlyReachable", 25, False), expect("PortolanUnexpectedlyBlocked", 15, False),
              expect("PortolanUnexpectedlyBlocked", 25, True)]
    tests = {"rule_files": [str(rules)], "evaluation_interval": "1m",
             "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": checks}]}
    path = tmp_path / "audit.test.yaml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    done = subprocess.run([_promtool(), "test", "rules", str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
