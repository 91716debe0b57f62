"""A table of hostile inputs, each run as a real ``portolan`` process under a memory and time bound.

Every row is a command line (plus files and environment) a hostile or careless
user might give.  Each runs in a subprocess inside a fresh network namespace
(loopback only) with ``ulimit -v`` (:data:`MEMORY_LIMIT`) and a timeout
(:data:`TIME_LIMIT`), and must end with

* the documented exit code (2 bad input, 3 could not run, 141 broken pipe);
* exactly one line on stderr naming the program and ``error:``/``failed:`` (an
  argparse usage block may precede it), and never ``Traceback``;
* for ``scan``, an existing ``--output-file`` left byte for byte as it was.

Paths cover CLI options, targets/ports/exclusions, manifests (including
resource bombs), operator settings and their environment, pcap/pcapng readers
(compressed too), capture options and the shard environment.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import pathlib
import resource
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from harness import labs, netns

pytestmark = pytest.mark.lab

MEMORY_LIMIT = 1 << 30  # ulimit -v for every input: 1 GiB of address space
TIME_LIMIT = 20.0  # seconds for every input
SENTINEL = '{"an": "old report"}\n'
USAGE, FAILED, BROKEN_PIPE = 2, 3, 141


@dataclasses.dataclass(frozen=True)
class Hostile:
    """One hostile input: the arguments after ``portolan`` ({dir} is a scratch folder), the code it must exit with."""

    name: str
    argv: tuple[str, ...]
    code: int
    env: tuple[tuple[str, str], ...] = ()
    shell_suffix: str = ""  # e.g. "| head -1": the command runs under sh -c


def _pcap_header(linktype: int = 1) -> bytes:
    return struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, linktype)


def _files(folder: pathlib.Path) -> None:
    """The scratch files rows refer to."""
    (folder / "deep.yaml").write_text("[" * 5000 + "]" * 5000)
    (folder / "deep-map.yaml").write_text("a: " * 3000 + "1")
    (folder / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    (folder / "latin1.yaml").write_bytes(
        "apiVersion: portolan.dev/v1alpha1\nkind: ScanJob\nmetadata: {name: caf\xe9}\n".encode("latin-1"))
    (folder / "big.yaml").write_text("# padding\n" * 120_000)
    laughs = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    laughs += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 12)]
    (folder / "laughs.yaml").write_text(
        "\n".join(laughs) + "\napiVersion: portolan.dev/v1alpha1\nkind: ScanJob\nmetadata: {name: x}\n"
        "spec: {targets: {addresses: *a11}}\n")
    (folder / "list.yaml").write_text("- a\n- b\n")
    (folder / "bad.yaml").write_text("a: [\n")
    (folder / "notjob.yaml").write_text("kind: Pod\n")
    (folder / "udpports.yaml").write_text(
        "apiVersion: portolan.dev/v1alpha1\nkind: ScanJob\nmetadata: {name: x}\n"
        "spec: {targets: {addresses: [127.0.0.1]}, udpPorts: '\u00b2', protocols: [udp]}\n")
    (folder / "hugecidr.yaml").write_text(
        "apiVersion: portolan.dev/v1alpha1\nkind: ScanJob\nmetadata: {name: x}\n"
        "spec: {targets: {addresses: ['::/0']}, ports: all}\n")
    (folder / "settings-cidr.yaml").write_text("allowedCidrs: [notacidr]\n")
    (folder / "settings-unknown.yaml").write_text("nope: 1\n")
    (folder / "settings-type.yaml").write_text("maxProbesPerJob: lots\n")
    (folder / "kubeconfig-bad").write_text("a: [\n")
    (folder / "kubeconfig-unreachable").write_text(
        "apiVersion: v1\nkind: Config\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1', insecure-skip-tls-verify: true}}]\n"
        "users: [{name: u, user: {token: x}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n")
    (folder / "four.pcap").write_bytes(_pcap_header()[:4])
    (folder / "short.pcap").write_bytes(_pcap_header()[:23])
    (folder / "magic.pcap").write_bytes(b"\x00" * 64)
    (folder / "corrupt.pcap.gz").write_bytes(b"\x1f\x8b" + bytes(range(200)))
    record = struct.pack("<IIII", 1, 2, 60, 60) + bytes(60)
    packed = gzip.compress(_pcap_header() + record * 200)
    (folder / "truncated.pcap.gz").write_bytes(packed[: len(packed) // 2])
    (folder / "giant-record.pcap").write_bytes(_pcap_header() + struct.pack("<IIII", 1, 2, 0xFFFFFFF0, 60))
    (folder / "giant-block.pcapng").write_bytes(struct.pack("<II", 0x0A0D0D0A, 0xFFFFFFF0) + bytes(64))
    (folder / "afile").write_text("not a folder")
    (folder / "emptydir").mkdir()


def _shard_env(**override: str) -> tuple[tuple[str, str], ...]:
    env = {"PORTOLAN_JOB_NAMESPACE": "ns", "PORTOLAN_JOB_NAME": "job", "PORTOLAN_SHARD_ID": "s0",
           "PORTOLAN_ATTEMPT": "1", "KUBECONFIG": "{dir}/kubeconfig-unreachable"}
    env.update(override)
    return tuple((k, v) for k, v in env.items() if v != "<unset>")


HOSTILE: tuple[Hostile, ...] = (
    # CLI options
    Hostile("unknown option", ("scan", "127.0.0.1", "--frobnicate"), USAGE),
    Hostile("rate not a number", ("scan", "127.0.0.1", "--rate", "fast"), USAGE),
    Hostile("rate zero", ("scan", "127.0.0.1", "--rate", "0"), USAGE),
    Hostile("rate negative", ("scan", "127.0.0.1", "--rate", "-5"), USAGE),
    Hostile("host rate zero", ("scan", "127.0.0.1", "--host-rate", "0"), USAGE),
    Hostile("concurrency zero", ("scan", "127.0.0.1", "--concurrency", "0"), USAGE),
    Hostile("retries negative", ("scan", "127.0.0.1", "--retries", "-1"), USAGE),
    Hostile("max rtt below min", ("scan", "127.0.0.1", "--max-rtt-timeout", "50"), USAGE),
    Hostile("initial rtt zero", ("scan", "127.0.0.1", "--initial-rtt-timeout", "0"), USAGE),
    Hostile("udp budget nan", ("scan", "127.0.0.1", "-u", "--udp-budget", "nan"), USAGE),
    Hostile("udp budget inf", ("scan", "127.0.0.1", "-u", "--udp-budget", "inf"), USAGE),
    Hostile("udp budget negative", ("scan", "127.0.0.1", "-u", "--udp-budget", "-1"), USAGE),
    Hostile("workers zero", ("scan", "127.0.0.1", "--workers", "0"), USAGE),
    Hostile("workers negative", ("scan", "127.0.0.1", "--workers", "-5"), USAGE),
    Hostile("workers 2000", ("scan", "127.0.0.1", "-p", "80", "--workers", "2000"), USAGE),
    Hostile("max probes zero", ("scan", "127.0.0.1", "--max-probes", "0"), USAGE),
    Hostile("output format", ("scan", "127.0.0.1", "-o", "yaml"), USAGE),
    Hostile("output folder missing", ("scan", "127.0.0.1", "--output-file", "{dir}/missing/report.json"), USAGE),
    Hostile("output is a folder", ("scan", "127.0.0.1", "--output-file", "{dir}/emptydir"), USAGE),
    Hostile("allow-open garbage", ("scan", "127.0.0.1", "--allow-open", "ssh;rm"), USAGE),
    Hostile("capture dir is a file", ("scan", "127.0.0.1", "-p", "1", "--capture-dir", "{dir}/afile"), FAILED),
    Hostile("no command", (), USAGE),
    Hostile("nul in target", ("scan", "127.0.0.1\x01"), USAGE),
    # targets, ports and exclusions
    Hostile("malformed address", ("scan", "300.1.1.1"), USAGE),
    Hostile("malformed cidr", ("scan", "127.0.0.0/33"), USAGE),
    Hostile("backwards range", ("scan", "127.0.0.9-1"), USAGE),
    Hostile("mixed range", ("scan", "127.0.0.1-::1"), USAGE),
    Hostile("every address of IPv4", ("scan", "0.0.0.0/0", "-p", "80"), USAGE),
    Hostile("IPv4 minus half", ("scan", "0.0.0.0/0", "-p", "80", "--exclude", "0.0.0.0/1"), USAGE),
    Hostile("every address of IPv6", ("scan", "::/0", "-p", "80"), USAGE),
    Hostile("huge IPv6 exclusion", ("scan", "::1", "-p", "80", "--exclude", "::-::ffff:ffff:ffff"), USAGE),
    Hostile("all excluded", ("scan", "127.0.0.1", "--exclude", "127.0.0.0/8"), USAGE),
    Hostile("probe cap", ("scan", "127.0.0.0/16", "-p", "all"), USAGE),
    Hostile("probe cap lowered", ("scan", "127.0.0.1", "-p", "1-100", "--max-probes", "10"), USAGE),
    Hostile("ports dash", ("scan", "127.0.0.1", "-p", "-"), USAGE),
    Hostile("ports superscript", ("scan", "127.0.0.1", "-p", "\u00b2"), USAGE),
    Hostile("udp ports superscript", ("scan", "127.0.0.1", "-u", "--udp-ports", "\u00b2"), USAGE),
    Hostile("ports out of range", ("scan", "127.0.0.1", "-p", "65536"), USAGE),
    Hostile("ports backwards", ("scan", "127.0.0.1", "-p", "90-80"), USAGE),
    Hostile("ports unknown set", ("scan", "127.0.0.1", "-p", "webz"), USAGE),
    Hostile("ports empty item", ("scan", "127.0.0.1", "-p", "80,,81"), USAGE),
    Hostile("ports huge number", ("scan", "127.0.0.1", "-p", "9" * 5000), USAGE),
    Hostile("exclusion malformed", ("scan", "127.0.0.1", "--exclude", "1.2.3.4/99"), USAGE),
    Hostile("hostname unresolvable", ("scan", "no-such-host.invalid"), USAGE),
    # manifests, including resource bombs
    Hostile("manifest missing", ("scan", "-f", "{dir}/missing.yaml"), USAGE),
    Hostile("manifest is a folder", ("scan", "-f", "{dir}/emptydir"), USAGE),
    Hostile("manifest /dev/zero", ("scan", "-f", "/dev/zero"), USAGE),
    Hostile("manifest bigger than 1 MiB", ("scan", "-f", "{dir}/big.yaml"), USAGE),
    Hostile("manifest binary", ("scan", "-f", "{dir}/binary.yaml"), USAGE),
    Hostile("manifest latin-1", ("scan", "-f", "{dir}/latin1.yaml"), USAGE),
    Hostile("manifest nested 5000 deep", ("scan", "-f", "{dir}/deep.yaml"), USAGE),
    Hostile("manifest mapping nested 3000 deep", ("scan", "-f", "{dir}/deep-map.yaml"), USAGE),
    Hostile("manifest billion laughs", ("scan", "-f", "{dir}/laughs.yaml"), USAGE),
    Hostile("manifest a list", ("scan", "-f", "{dir}/list.yaml"), USAGE),
    Hostile("manifest bad yaml", ("scan", "-f", "{dir}/bad.yaml"), USAGE),
    Hostile("manifest not a ScanJob", ("scan", "-f", "{dir}/notjob.yaml"), USAGE),
    Hostile("manifest udpPorts superscript", ("scan", "-f", "{dir}/udpports.yaml"), USAGE),
    Hostile("manifest every IPv6 address", ("scan", "-f", "{dir}/hugecidr.yaml"), USAGE),
    # settings and environment
    Hostile("settings missing", ("operator", "--settings", "{dir}/missing.yaml"), USAGE),
    Hostile("settings folder", ("operator", "--settings", "{dir}/emptydir"), USAGE),
    Hostile("settings binary", ("operator", "--settings", "{dir}/binary.yaml"), USAGE),
    Hostile("settings /dev/zero", ("operator", "--settings", "/dev/zero"), USAGE),
    Hostile("settings bad yaml", ("operator", "--settings", "{dir}/bad.yaml"), USAGE),
    Hostile("settings nested", ("operator", "--settings", "{dir}/deep.yaml"), USAGE),
    Hostile("settings bad cidr", ("operator", "--settings", "{dir}/settings-cidr.yaml"), USAGE),
    Hostile("settings a list", ("operator", "--settings", "{dir}/list.yaml"), USAGE),
    Hostile("settings unknown key", ("operator", "--settings", "{dir}/settings-unknown.yaml"), USAGE),
    Hostile("settings wrong type", ("operator", "--settings", "{dir}/settings-type.yaml"), USAGE),
    Hostile("PORTOLAN_SETTINGS bad cidr", ("operator",), USAGE, env=(("PORTOLAN_SETTINGS", "allowedCidrs: [x]"),)),
    Hostile("PORTOLAN_SETTINGS a list", ("operator",), USAGE, env=(("PORTOLAN_SETTINGS", "[1, 2]"),)),
    Hostile("PORTOLAN_SETTINGS bad yaml", ("operator",), USAGE, env=(("PORTOLAN_SETTINGS", "a: ["),)),
    Hostile("PORTOLAN_SETTINGS unknown key", ("operator",), USAGE, env=(("PORTOLAN_SETTINGS", "nope: 1"),)),
    Hostile("KUBECONFIG bad yaml", ("operator",), FAILED, env=(("KUBECONFIG", "{dir}/kubeconfig-bad"),)),
    Hostile("KUBECONFIG missing", ("operator",), FAILED, env=(("KUBECONFIG", "{dir}/missing"),)),
    Hostile("API server unreachable", ("operator", "--standalone"), FAILED,
            env=(("KUBECONFIG", "{dir}/kubeconfig-unreachable"),)),
    # pcap and pcapng readers, compressed too
    Hostile("read missing", ("capture", "-r", "{dir}/missing.pcap"), USAGE),
    Hostile("read folder", ("capture", "-r", "{dir}/emptydir"), USAGE),
    Hostile("read 4 bytes", ("capture", "-r", "{dir}/four.pcap"), USAGE),
    Hostile("read 23 bytes", ("capture", "-r", "{dir}/short.pcap"), USAGE),
    Hostile("read bad magic", ("capture", "-r", "{dir}/magic.pcap"), USAGE),
    Hostile("read corrupt gzip", ("capture", "-r", "{dir}/corrupt.pcap.gz"), USAGE),
    Hostile("read truncated gzip", ("capture", "-q", "-r", "{dir}/truncated.pcap.gz"), USAGE),
    Hostile("read record of 4 GiB", ("capture", "-r", "{dir}/giant-record.pcap"), USAGE),
    Hostile("read block of 4 GiB", ("capture", "-r", "{dir}/giant-block.pcapng"), USAGE),
    Hostile("read /dev/zero", ("capture", "-r", "/dev/zero"), USAGE),
    # capture options
    Hostile("capture no interface", ("capture",), USAGE),
    Hostile("capture negative snaplen", ("capture", "-i", "lo", "-s", "-5", "-w", "{dir}/neg"), USAGE),
    Hostile("capture huge snaplen", ("capture", "-i", "lo", "-s", "999999999"), USAGE),
    Hostile("capture count zero", ("capture", "-i", "lo", "-c", "0"), USAGE),
    Hostile("capture duration nan", ("capture", "-i", "lo", "--duration", "nan"), USAGE),
    Hostile("capture rotate negative", ("capture", "-i", "lo", "--rotate-size", "-1"), USAGE),
    Hostile("capture rotate seconds inf", ("capture", "-i", "lo", "--rotate-seconds", "inf"), USAGE),
    Hostile("capture into a missing folder", ("capture", "-i", "lo", "-w", "{dir}/missing/cap", "--duration", "5"),
            USAGE),
    Hostile("capture bad filter", ("capture", "-i", "lo", "-f", "tcp port banana", "--duration", "5"), USAGE),
    Hostile("capture bad format", ("capture", "-i", "lo", "--format", "erf"), USAGE),
    Hostile("capture no such interface", ("capture", "-i", "nosuch0", "--duration", "5"), FAILED),
    # the shard environment
    Hostile("shard nothing set", ("shard",), USAGE, env=_shard_env(PORTOLAN_JOB_NAMESPACE="<unset>")),
    Hostile("shard attempt not a number", ("shard",), USAGE, env=_shard_env(PORTOLAN_ATTEMPT="x")),
    Hostile("shard attempt negative", ("shard",), USAGE, env=_shard_env(PORTOLAN_ATTEMPT="-1")),
    Hostile("shard heartbeat nan", ("shard",), USAGE, env=_shard_env(PORTOLAN_HEARTBEAT_SECONDS="nan")),
    Hostile("shard open cap negative", ("shard",), USAGE, env=_shard_env(PORTOLAN_OPEN_CAP="-3")),
    Hostile("shard API server unreachable", ("shard",), FAILED, env=_shard_env()),
    Hostile("shard KUBECONFIG bad", ("shard",), FAILED, env=_shard_env(KUBECONFIG="{dir}/kubeconfig-bad")),
    # output streams
    Hostile("stdout is /dev/full", ("scan", "127.0.0.1", "-p", "1-2000", "-o", "jsonl", "--all-ports"), FAILED,
            shell_suffix="> /dev/full"),
    Hostile("stdout closed", ("scan", "127.0.0.1", "-p", "1-20"), FAILED, shell_suffix=">&-"),
    Hostile("output file /dev/full", ("scan", "127.0.0.1", "-p", "1-20", "--output-file", "/dev/full"), FAILED),
)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    folder = tmp_path_factory.mktemp("hostile")
    _files(folder)
    return folder


@pytest.fixture(scope="module")
def namespace() -> Iterator[str]:
    labs.require_lab()
    name = f"{labs.PREFIX}{os.getpid() % 100000}-fz{os.urandom(2).hex()}"
    netns.add(name)
    try:
        yield name
    finally:
        netns.delete(name)


def _bounded() -> Callable[[], None]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    return limit


def run_bounded(namespace: str, argv: list[str], env: dict[str, str], shell_suffix: str = "",
                ) -> subprocess.CompletedProcess[str]:
    """``portolan ARGV`` in the namespace under ``ulimit -v`` and a timeout (a hang fails the test)."""
    command = ["ip", "netns", "exec", namespace, sys.executable, "-m", "portolan", *argv]
    if shell_suffix:
        import shlex

        command = ["sh", "-c", " ".join(shlex.quote(part) for part in command) + " " + shell_suffix]
    return subprocess.run(command, capture_output=True, text=True, errors="replace", env=env,
                          timeout=TIME_LIMIT, preexec_fn=_bounded(), stdin=subprocess.DEVNULL, check=False)


def error_lines(stderr: str) -> list[str]:
    """stderr without argparse's usage block."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    if lines and lines[0].startswith("usage:"):
        lines = [line for line in lines[1:] if not line.startswith(" ")]
    return lines


@pytest.mark.parametrize("row", HOSTILE, ids=[row.name for row in HOSTILE])
def test_each_hostile_input_ends_with_one_line_and_its_exit_code_within_bounds(
    row: Hostile, scratch: pathlib.Path, namespace: str
) -> None:
    argv = [part.replace("{dir}", str(scratch)) for part in row.argv]
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "PORTOLAN_SETTINGS")}
    env["KUBECONFIG"] = str(scratch / "missing-kubeconfig")
    env.update({k: v.replace("{dir}", str(scratch)) for k, v in row.env})
    old = scratch / f"old-{abs(hash(row.name))}.json"
    guarded = argv[:1] == ["scan"] and "--output-file" not in argv and not row.shell_suffix
    if guarded:
        old.write_text(SENTINEL)
        argv += ["--output-file", str(old)]
    done = run_bounded(namespace, argv, env, row.shell_suffix)
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.returncode == row.code, done.stderr[-2000:]
    lines = error_lines(done.stderr)
    assert len(lines) == 1, done.stderr[-2000:]
    assert lines[0].startswith("portolan") and (": error: " in lines[0] or ": failed: " in lines[0]), lines[0]
    if guarded:
        assert old.read_text() == SENTINEL
        assert not list(scratch.glob(f".{old.name}.*")), "a temporary report was left behind"
    if row.name == "capture negative snaplen":
        assert not list(scratch.glob("neg*")), "a refused capture left a file behind"
