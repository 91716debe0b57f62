"""The committed CRDs are exactly what the models generate, and they are structural."""

from __future__ import annotations

import pathlib
import re

import hypothesis
import hypothesis.strategies
import pytest
import yaml

from portolan import errors
from portolan.engine import ports
from portolan.kube import definitions

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_committed_crds_chart_values_and_schema_match_the_models() -> None:
    for path, text in definitions.generated_files().items():
        assert (ROOT / path).read_text() == text, f"{path} is stale: run `portolan generate`"


def test_the_chart_carries_the_same_crds_as_crds_dir() -> None:
    for filename in definitions.render_all():
        assert (ROOT / "crds" / filename).read_bytes() == (ROOT / "charts/portolan/crds" / filename).read_bytes()
        assert yaml.safe_load((ROOT / "crds" / filename).read_text())["kind"] == "CustomResourceDefinition"


def _walk(node: object, path: str = "") -> list[str]:
    problems = []
    if isinstance(node, dict):
        for key in ("$ref", "anyOf", "oneOf", "allOf", "title", "$defs", "const"):
            if key in node:
                problems.append(f"{path}/{key}")
        if "properties" in node and "additionalProperties" in node:
            problems.append(f"{path}: properties beside additionalProperties")
        if path != "/properties/metadata" and node.get("type") == "object" and not any(
            k in node for k in ("properties", "additionalProperties", "x-kubernetes-preserve-unknown-fields")
        ):
            problems.append(f"{path}: object without fields")
        for key, value in node.items():
            problems += _walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            problems += _walk(value, f"{path}[{index}]")
    return problems


def test_the_scanjob_schema_is_structural() -> None:
    schema = definitions.scanjob_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert _walk(schema) == []


def test_the_timing_cel_rule_and_printer_columns_are_present() -> None:
    version = definitions.scanjob_crd()["spec"]["versions"][0]
    timing = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["timing"]
    assert "minRttTimeoutMs <= self.maxRttTimeoutMs" in timing["x-kubernetes-validations"][0]["rule"]
    assert [c["name"] for c in version["additionalPrinterColumns"]] == ["Phase", "Shards", "Open", "Progress", "Age"]
    assert version["subresources"] == {"status": {}}


def _ports_pattern() -> str:
    rule = definitions.scanjob_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "properties"]["ports"]["x-kubernetes-validations"][0]["rule"]
    return str(rule.removeprefix("self.matches('").removesuffix("')"))


@hypothesis.settings(max_examples=400, deadline=None)
@hypothesis.given(hypothesis.strategies.text(alphabet="0123456789-, abcdeklmnorstw", max_size=24))
def test_the_crd_port_rule_accepts_every_expression_the_engine_accepts(expression: str) -> None:
    try:
        ports.parse_ports(expression)
    except errors.PortSpecError:
        return
    assert re.fullmatch(_ports_pattern(), expression), expression


@pytest.mark.parametrize("expression", ["70000", "65536", "1-70000", "22,,23", "webs", "", "22 23", "-1-5"])
def test_the_crd_port_rule_refuses_what_the_engine_refuses(expression: str) -> None:
    with pytest.raises(errors.PortSpecError):
        ports.parse_ports(expression)
    assert not re.fullmatch(_ports_pattern(), expression)
