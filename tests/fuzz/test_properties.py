"""Hypothesis over every input path, in process: each input is either accepted or refused with Portolan's error.

Nothing here sends a packet: option fuzzing stops at the checks that run
before the first probe (parse, options, spec, plan).  What is asserted for
any input is that the only exception is the path's documented one (a
:class:`portolan.errors.SpecError` subclass, i.e. exit 2 from the CLI), and,
where an answer exists, that it is right (targets minus exclusions against a
set-based reference; pcap records round-trip).  Examples are bounded so the
suite stays within CI's minutes.
"""

from __future__ import annotations

import contextlib
import gzip
import ipaddress
import pathlib
import tempfile

import hypothesis
import hypothesis.strategies as st
import pytest
import yaml

from portolan import errors
from portolan.capture import pcapfiles
from portolan.cli import capturing, manifesting, scanning
from portolan.cli import main as cli
from portolan.controller import configuring
from portolan.engine import plans, ports, targets
from portolan.models import settings
from portolan.shard import running

SETTINGS = hypothesis.settings(max_examples=150, deadline=None,
                               suppress_health_check=[hypothesis.HealthCheck.too_slow])
TEXT = st.text(st.characters(codec="utf-8"), max_size=60)
PORTISH = st.text(st.sampled_from("0123456789,- abcdefghijklmnopqrstuvwxyzA\u00b2\u0663"), max_size=20)
TARGETISH = st.text(st.sampled_from("0123456789abcdef.:/-[]% xyz"), max_size=40)


def _no_dns(name: str) -> list[str]:
    raise errors.TargetError(f"cannot resolve target {name!r}: no DNS in this test")


@SETTINGS
@hypothesis.given(st.one_of(PORTISH, TEXT))
def test_any_port_expression_gives_sorted_ports_in_range_or_a_port_error(text: str) -> None:
    try:
        found = ports.parse_ports(text)
    except errors.PortSpecError:
        return
    assert found == sorted(set(found))
    assert all(0 <= port <= ports.MAX_PORT for port in found)


@SETTINGS
@hypothesis.given(st.lists(st.one_of(TARGETISH, TEXT), min_size=1, max_size=4),
                  st.lists(st.one_of(TARGETISH, TEXT), max_size=3))
def test_any_target_expressions_give_bounded_targets_or_a_target_error(
    expressions: list[str], exclude: list[str]
) -> None:
    try:
        found = targets.parse_targets(expressions, exclude, resolve=_no_dns, limit=4096)
    except errors.TargetError:
        return
    assert 0 < len(found) <= 4096
    assert len({t.address for t in found}) == len(found)


@st.composite
def _network(draw: st.DrawFn, version: int) -> str:
    if version == 4:
        base = draw(st.integers(0, (1 << 32) - 1))
        prefix = draw(st.integers(22, 32))
        return f"{ipaddress.IPv4Address(base)}/{prefix}"
    base = draw(st.integers(0, (1 << 128) - 1))
    prefix = draw(st.integers(118, 128))
    return f"{ipaddress.IPv6Address(base)}/{prefix}"


@st.composite
def _spans(draw: st.DrawFn) -> tuple[list[str], list[str]]:
    version = draw(st.sampled_from([4, 6]))
    wanted = draw(st.lists(_network(version), min_size=1, max_size=3))
    exclude: list[str] = []
    for network in draw(st.lists(st.sampled_from(wanted), max_size=3)):
        net = ipaddress.ip_network(network, strict=False)
        first = int(net.network_address) + draw(st.integers(0, net.num_addresses - 1))
        last = draw(st.integers(first, int(net.broadcast_address) + 5))
        last = min(last, (1 << net.max_prefixlen) - 1)
        cls = type(net.network_address)
        exclude.append(f"{cls(first)}-{cls(last)}" if draw(st.booleans()) else str(cls(first)))
    return wanted, exclude


@SETTINGS
@hypothesis.given(_spans())
def test_targets_minus_exclusions_are_exactly_the_set_difference_in_first_seen_order(
    case: tuple[list[str], list[str]],
) -> None:
    wanted, exclude = case
    removed: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for expression in exclude:
        first_text, _, last_text = expression.partition("-")
        first = ipaddress.ip_address(first_text)
        last = ipaddress.ip_address(last_text) if last_text else first
        removed.update(type(first)(v) for v in range(int(first), int(last) + 1))
    expected: list[str] = []
    for network in wanted:
        for address in ipaddress.ip_network(network, strict=False):
            if address not in removed and str(address) not in expected:
                expected.append(str(address))
    try:
        found = [t.address for t in targets.parse_targets(wanted, exclude, resolve=_no_dns, limit=1 << 16)]
    except errors.TargetError as exc:
        assert not expected, exc
        return
    assert found == expected


YAMLISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=20,
)


@st.composite
def _manifest(draw: st.DrawFn) -> str:
    base: dict[str, object] = {"apiVersion": "portolan.dev/v1alpha1", "kind": "ScanJob", "metadata": {"name": "x"},
                               "spec": {"targets": {"addresses": ["127.0.0.1"]}}}
    spec = base["spec"]
    assert isinstance(spec, dict)
    for key in draw(st.lists(st.sampled_from(["ports", "udpPorts", "protocols", "timing", "targets", "technique",
                                              "expect", "sharding", "retries", "capture", "pools"]), max_size=3)):
        spec[key] = draw(YAMLISH)
    return yaml.safe_dump(base)


@SETTINGS
@hypothesis.given(st.one_of(TEXT, _manifest(), YAMLISH.map(yaml.safe_dump)))
def test_any_manifest_text_is_a_scanjob_or_a_manifest_error(text: str) -> None:
    try:
        job = manifesting.parse(text, "<fuzz>")
    except errors.ManifestError:
        return
    with contextlib.suppress(errors.SpecError):
        plans.expand(job.spec, resolve=_no_dns, max_probes=1 << 20)


@SETTINGS
@hypothesis.given(st.binary(max_size=300))
def test_any_manifest_file_bytes_are_a_scanjob_or_a_manifest_error(data: bytes) -> None:
    with tempfile.NamedTemporaryFile(suffix=".yaml") as handle:
        handle.write(data)
        handle.flush()
        with contextlib.suppress(errors.ManifestError):
            manifesting.load(handle.name)


@SETTINGS
@hypothesis.given(st.one_of(TEXT, YAMLISH.map(yaml.safe_dump),
                            st.dictionaries(st.sampled_from(["allowedCidrs", "deniedCidrs", "maxProbesPerJob",
                                                             "metricsPort", "peering", "shardCommand", "x"]),
                                            YAMLISH, max_size=3).map(yaml.safe_dump)))
def test_any_settings_text_is_settings_or_a_spec_error(text: str) -> None:
    try:
        found = configuring.load(None, text)
    except errors.SpecError:
        return
    assert isinstance(found, settings.OperatorSettings)


@SETTINGS
@hypothesis.given(st.binary(max_size=300))
def test_any_settings_file_bytes_are_settings_or_a_spec_error(data: bytes) -> None:
    with tempfile.NamedTemporaryFile(suffix=".yaml") as handle:
        handle.write(data)
        handle.flush()
        with contextlib.suppress(errors.SpecError):
            configuring.load(handle.name)


def _pcap(records: list[tuple[int, bytes]]) -> bytes:
    out = pcapfiles.PcapFormat().header(262144, 1)
    for stamp, data in records:
        out += pcapfiles.PcapFormat().record(pcapfiles.Record(stamp, data, len(data)))
    return out


def _pcapng(records: list[tuple[int, bytes]]) -> bytes:
    out = pcapfiles.PcapngFormat().header(262144, 1)
    for stamp, data in records:
        out += pcapfiles.PcapngFormat().record(pcapfiles.Record(stamp, data, len(data)))
    return out


RECORDS = st.lists(st.tuples(st.integers(0, (1 << 32) * 10**9 - 1), st.binary(max_size=80)), max_size=5)


@SETTINGS
@hypothesis.given(st.one_of(st.binary(max_size=200), RECORDS.map(_pcap), RECORDS.map(_pcapng)),
                  st.integers(0, 400), st.booleans(), st.integers(0, 255), st.integers(-1, 400))
def test_any_capture_file_reads_as_records_or_one_spec_error(
    data: bytes, cut: int, compress: bool, flip_value: int, flip_at: int
) -> None:
    mangled = bytearray(data[: cut] if cut < len(data) else data)
    if 0 <= flip_at < len(mangled):
        mangled[flip_at] = flip_value
    payload = gzip.compress(bytes(mangled)) if compress else bytes(mangled)
    if compress and cut % 3 == 0:
        payload = payload[: max(2, len(payload) - 1 - cut % 7)]  # a truncated gzip stream
    with tempfile.TemporaryDirectory() as folder:
        path = pathlib.Path(folder) / "fuzz.pcap"
        path.write_bytes(payload)
        try:
            for record in pcapfiles.read(path):
                assert len(record.data) <= pcapfiles.MAX_BLOCK
        except errors.SpecError:
            pass


@SETTINGS
@hypothesis.given(RECORDS, st.sampled_from(["pcap", "pcapng"]), st.booleans())
def test_written_capture_files_read_back_record_for_record(
    records: list[tuple[int, bytes]], fmt: str, compress: bool
) -> None:
    data = _pcap(records) if fmt == "pcap" else _pcapng(records)
    with tempfile.TemporaryDirectory() as folder:
        path = pathlib.Path(folder) / "round.pcap"
        path.write_bytes(gzip.compress(data) if compress else data)
        found = [(r.timestamp_ns, r.data) for r in pcapfiles.read(path)]
    assert found == records


SCAN_FLAGS = ["-p", "--udp-ports", "--exclude", "--rate", "--host-rate", "--concurrency", "--retries",
              "--max-rtt-timeout", "--initial-rtt-timeout", "--workers", "--udp-budget", "--allow-open",
              "--max-probes", "-o"]


@SETTINGS
@hypothesis.given(st.lists(st.tuples(st.sampled_from(SCAN_FLAGS), st.one_of(PORTISH, TARGETISH, TEXT)),
                           max_size=3),
                  st.lists(st.one_of(TARGETISH, st.just("127.0.0.1")), min_size=1, max_size=2))
def test_any_scan_options_are_refused_before_sending_or_make_a_bounded_plan(
    options: list[tuple[str, str]], addresses: list[str]
) -> None:
    argv = ["scan", *addresses]
    for flag, value in options:
        argv += [flag, value]
    try:
        args = cli.parse(argv)
        if args.output not in ("table", "json", "jsonl", "xml", "junit"):
            return
        scanning._check_options(args)
        spec = scanning._validated_spec(args)
        cap = scanning.DEFAULT_MAX_PROBES if args.max_probes is None else args.max_probes
        plan = plans.expand(spec, resolve=_no_dns, max_probes=min(cap, 1 << 22))
    except errors.SpecError:
        return
    assert plan.probe_count <= cap


CAPTURE_FLAGS = ["-s", "-c", "--rotate-size", "--rotate-seconds", "--duration", "--format"]


@SETTINGS
@hypothesis.given(st.lists(st.tuples(st.sampled_from(CAPTURE_FLAGS),
                                     st.one_of(st.integers(-10**12, 10**12).map(str),
                                               st.floats().map(str), TEXT)), max_size=3))
def test_any_capture_options_are_refused_before_a_socket_or_file_exists(options: list[tuple[str, str]]) -> None:
    argv = ["capture", "-i", "lo"]
    for flag, value in options:
        argv += [flag, value]
    try:
        args = cli.parse(argv)
        capturing._check_options(args)
    except errors.SpecError:
        return
    assert 1 <= args.snaplen <= 262144


SHARD_KEYS = ["PORTOLAN_JOB_NAMESPACE", "PORTOLAN_JOB_NAME", "PORTOLAN_SHARD_ID", "PORTOLAN_ATTEMPT",
              "PORTOLAN_OPEN_CAP", "PORTOLAN_HEARTBEAT_SECONDS", "PORTOLAN_POD_NAME", "PORTOLAN_CAPTURE_DIR"]


@SETTINGS
@hypothesis.given(st.dictionaries(st.sampled_from(SHARD_KEYS),
                                  st.one_of(TEXT, st.integers(-5, 10**6).map(str), st.floats().map(str)),
                                  max_size=len(SHARD_KEYS)))
def test_any_shard_environment_is_read_or_refused_naming_the_variable(env: dict[str, str]) -> None:
    try:
        found = running.ShardEnv.from_environment(env)
    except errors.SpecError as exc:
        assert "PORTOLAN_" in str(exc)
        return
    assert found.attempt >= 0 and found.open_cap >= 0 and found.heartbeat_seconds > 0


@pytest.mark.parametrize("depth", [100, 2000, 20000])
def test_deeply_nested_yaml_is_a_manifest_error_not_a_recursion_error(depth: int) -> None:
    with pytest.raises(errors.ManifestError):
        manifesting.parse("[" * depth + "]" * depth)
