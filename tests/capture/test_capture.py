"""Capture: decoding a known exchange, TLS SNI, rotation without loss, files tcpdump reads, bad input."""

from __future__ import annotations

import pathlib
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness import labs
from portolan import launching as cli
from portolan.capture import capturing, decoding, filters, pcapfiles
from portolan.cli import exits


def _capture_while(lab: labs.Lab, expression: str, action, writer: pcapfiles.RotatingWriter | None = None,
                   count: int | None = None) -> tuple[list[decoding.Decoded], capturing.CaptureStats]:  # type: ignore[no-untyped-def]
    seen: list[decoding.Decoded] = []
    stop = threading.Event()
    ready = threading.Event()
    box: dict[str, capturing.CaptureStats] = {}

    def run() -> None:
        with lab.inside():
            session = capturing.Capture("eth0", expression=expression, writer=writer, on_packet=seen.append, stop=stop)
            ready.set()
            box["stats"] = session.run(count=count, seconds=30)

    thread = threading.Thread(target=run)
    thread.start()
    ready.wait(10)
    with lab.inside():
        action()
    time.sleep(0.5)
    stop.set()
    thread.join(30)
    return seen, box["stats"]


@pytest.mark.lab
def test_a_captured_http_exchange_decodes_every_layer_and_names_the_protocol(lab: labs.Lab) -> None:
    host = lab.hosts["services"].address

    def fetch() -> None:
        with socket.create_connection((host, 80), timeout=5) as conn:
            conn.sendall(b"GET /probe HTTP/1.0\r\nHost: lab\r\n\r\n")
            conn.recv(4096)

    seen, stats = _capture_while(lab, f"host {host} and tcp port 80", fetch)
    assert all(d.layers[:3] == ["eth", "ipv4", "tcp"] for d in seen)
    requests = [d for d in seen if d.application == "http" and d.detail == "GET /probe HTTP/1.0"]
    responses = [d for d in seen if d.application == "http" and d.detail == "HTTP/1.0 200 OK"]
    assert len(requests) == 1 and len(responses) == 1
    assert (requests[0].source, requests[0].destination, requests[0].dport) == (lab.scanner_address, host, 80)
    assert stats.kernel_drops == 0 and stats.packets == len(seen)


@pytest.mark.lab
def test_a_tls_client_hello_is_recognised_with_its_server_name(lab: labs.Lab) -> None:
    host = lab.hosts["services"].address

    def handshake() -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with socket.create_connection((host, 443), timeout=5) as raw, context.wrap_socket(raw, server_hostname="scan.example.test"):
            pass

    seen, _ = _capture_while(lab, f"host {host} and tcp port 443", handshake)
    assert [d.detail for d in seen if d.application == "tls" and d.detail and d.detail.startswith("sni=")] == ["sni=scan.example.test"]


@pytest.mark.lab
def test_size_rotation_loses_no_packet_at_file_boundaries(lab: labs.Lab, tmp_path: pathlib.Path) -> None:
    host = lab.hosts["services"].address
    sent = 300
    writer = pcapfiles.RotatingWriter(tmp_path / "udp", fmt="pcapng", rotate_bytes=4096, clock=time.monotonic)

    def blast() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for number in range(sent):
                sock.sendto(f"seq={number:05d}".encode(), (host, 7777))
                time.sleep(0.001)

    _capture_while(lab, f"udp and dst host {host} and dst port 7777", blast, writer=writer)
    assert len(writer.files) > 3
    numbers = []
    for path in writer.files:
        for record in pcapfiles.read(path):
            payload = record.data[14 + 20 + 8:]
            numbers.append(int(payload.decode().split("=")[1]))
    assert numbers == list(range(sent))
    assert sum(writer.counts) == sent


def test_pcap_and_gzip_pcapng_round_trip_and_tcpdump_reads_both(tmp_path: pathlib.Path) -> None:
    frame = bytes(12) + b"\x08\x00" + bytes.fromhex("450000280001000040060000c6120001c612000a") + bytes(20)
    for fmt, compress in (("pcap", False), ("pcapng", True), ("pcapng", False)):
        writer = pcapfiles.RotatingWriter(tmp_path / f"{fmt}{compress}", fmt=fmt, compress=compress, clock=time.monotonic)
        writer.write(pcapfiles.Record(1_795_000_000_123_456_789, frame, len(frame)))
        writer.write(pcapfiles.Record(1_795_000_001_000_000_001, frame, len(frame) + 10))
        writer.close()
        records = list(pcapfiles.read(writer.files[0]))
        assert [(r.timestamp_ns, r.data, r.original_length) for r in records] == [
            (1_795_000_000_123_456_789, frame, len(frame)), (1_795_000_001_000_000_001, frame, len(frame) + 10)]
        if not compress and shutil.which("tcpdump"):
            shown = subprocess.run(["tcpdump", "-nn", "-r", str(writer.files[0])], capture_output=True, text=True)
            assert shown.stdout.count("IP 198.18.0.1.0 > 198.18.0.10.0") == 2, shown.stderr


def test_a_bad_filter_is_a_clear_error_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(filters.FilterError, match="syntax error"):
        filters.compile_filter("tcp prot 80")
    assert cli.main(["capture", "-i", "lo", "-f", "tcp prot 80"]) == exits.USAGE
    assert "bad capture filter" in capsys.readouterr().err


def test_a_file_that_is_not_a_capture_is_refused(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello, not a pcap")
    assert cli.main(["capture", "-r", str(path)]) == exits.USAGE
    assert "not a pcap or pcapng file" in capsys.readouterr().err


REAL = (bytes(12) + b"\x08\x00" + bytes.fromhex("4500003c1c4640004006b1e6c6120001c612000a")
        + bytes.fromhex("d4310050a0b1c2d30000000050180200000000") + b"\x00" + b"GET / HTTP/1.1\r\n")


@given(st.binary(max_size=300))
def test_the_decoder_never_raises_on_arbitrary_bytes(data: bytes) -> None:
    decoding.decode_ethernet(data)
    decoding.decode_ip(data)


@given(st.integers(min_value=0, max_value=len(REAL) - 1), st.integers(min_value=0, max_value=255), st.integers(min_value=0, max_value=len(REAL)))
def test_the_decoder_never_raises_on_mutated_or_truncated_real_frames(at: int, value: int, cut: int) -> None:
    mutated = bytearray(REAL)
    mutated[at] = value
    decoding.decode_ethernet(bytes(mutated[:cut]))
    decoding.decode_ethernet(bytes(mutated))
    assert decoding.tls_sni(bytes(mutated)) is None or isinstance(decoding.tls_sni(bytes(mutated)), str)


@pytest.mark.lab
def test_time_rotation_loses_no_packet_at_file_boundaries(lab: labs.Lab, tmp_path: pathlib.Path) -> None:
    host = lab.hosts["services"].address
    sent = 200
    progress = [0]  # fake time: one "second" per 25 packets sent, so files turn over as the sender goes
    writer = pcapfiles.RotatingWriter(tmp_path / "timed", fmt="pcap", rotate_seconds=1.0,
                                      clock=lambda: progress[0] / 25)

    def blast() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for number in range(sent):
                sock.sendto(f"seq={number:05d}".encode(), (host, 7778))
                progress[0] = number + 1
                time.sleep(0.001)

    _capture_while(lab, f"udp and dst host {host} and dst port 7778", blast, writer=writer)
    numbers = [int(record.data[14 + 20 + 8:].decode().split("=")[1])
               for path in writer.files for record in pcapfiles.read(path)]
    assert numbers == list(range(sent))
    assert len(writer.files) >= 4
    assert [path.name for path in writer.files] == [f"timed-{i:04d}.pcap" for i in range(1, len(writer.files) + 1)]


@pytest.mark.lab
def test_a_scan_records_its_own_probes_and_the_answers_and_nothing_else(
        lab: labs.Lab, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    services, rejecting, other = (lab.hosts[name].address for name in ("services", "rejecting", "filtered"))
    stop = threading.Event()

    def chatter() -> None:  # unrelated traffic from the same namespace, during the scan
        with lab.inside(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for _ in range(2000):
                if stop.wait(0.005):
                    return
                sock.sendto(b"noise", (other, 5353))

    noise = threading.Thread(target=chatter)
    noise.start()
    try:
        with lab.inside():
            code = cli.main(["scan", services, rejecting, "-p", "22,23,1001", "--no-service", "-q", "-o", "json",
                             "--capture-dir", str(tmp_path)])
    finally:
        stop.set()
        noise.join(10)
    assert code == 0
    files = sorted(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".pcapng"
    seen = [decoding.decode_ethernet(record.data) for record in pcapfiles.read(files[0])]
    assert f"evidence: {len(seen)} packets (0 dropped) in {files[0]}" in capsys.readouterr().err
    assert not [d for d in seen if other in (d.source, d.destination)]
    scanner = lab.scanner_address
    for host in (services, rejecting):
        for port in (22, 23, 1001):
            probes = [d for d in seen if (d.source, d.destination, d.dport) == (scanner, host, port)]
            assert probes and all(d.transport == "tcp" for d in probes), (host, port)
    answered = {(d.source, d.sport) for d in seen if d.destination == scanner and d.transport == "tcp"}
    assert {(services, 22), (services, 23), (services, 1001), (rejecting, 22), (rejecting, 23)} <= answered
    icmp = [d for d in seen if d.source == rejecting and d.transport in ("icmp", "icmpv4")]
    assert icmp, [d.summary() for d in seen]


def test_a_scan_without_cap_net_raw_asked_to_record_evidence_says_so_and_sends_nothing(
        fresh_netns: str, tmp_path: pathlib.Path) -> None:
    dropped = ["setpriv", "--bounding-set", "-net_raw", "--inh-caps", "-net_raw"]
    done = subprocess.run(["ip", "netns", "exec", fresh_netns, *dropped, sys.executable, "-m", "portolan", "scan",
                           "127.0.0.1", "-p", "1", "--capture-dir", str(tmp_path), "-q"], capture_output=True, text=True)
    assert done.returncode == exits.FAILED
    assert "packet capture needs CAP_NET_RAW" in done.stderr
    assert done.stdout == ""


@pytest.mark.lab
@pytest.mark.parametrize("stop_signal", ["SIGTERM", "SIGINT"])
def test_a_stopped_capture_keeps_every_packet_in_its_last_gzipped_file(
        lab: labs.Lab, tmp_path: pathlib.Path, stop_signal: str) -> None:
    import signal

    host = lab.hosts["services"].address
    base = tmp_path / "live"
    process = lab.popen([sys.executable, "-m", "portolan", "capture", "-i", "eth0", "-q", "--gzip",
                         "-f", f"udp and dst host {host} and dst port 7779", "-w", str(base), "--rotate-size", "3000"],
                        stderr=subprocess.PIPE)
    assert process.stderr is not None
    assert process.stderr.readline().startswith(b"listening on eth0")
    sent = 120
    with lab.inside(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for number in range(sent):
            sock.sendto(f"seq={number:05d}".encode(), (host, 7779))
            time.sleep(0.002)
    time.sleep(0.3)
    process.send_signal(getattr(signal, stop_signal))
    _, errors = process.communicate(timeout=20)
    assert process.returncode == 0, errors
    files = sorted(tmp_path.glob("live-*.pcapng.gz"))
    assert len(files) > 1
    numbers = [int(record.data[14 + 20 + 8:].decode().split("=")[1]) for path in files for record in pcapfiles.read(path)]
    assert numbers == list(range(sent))
    assert f"{sent} packets" in errors.decode()


def test_an_evidence_folder_that_cannot_be_made_is_a_clear_error_before_anything_is_sent(
        fresh_netns: str, tmp_path: pathlib.Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the folder should be")
    done = subprocess.run(["ip", "netns", "exec", fresh_netns, sys.executable, "-m", "portolan", "scan",
                           "127.0.0.1", "-p", "1", "-q", "--capture-dir", str(blocker / "evidence")],
                          capture_output=True, text=True)
    assert done.returncode == exits.FAILED
    assert "cannot create the evidence folder" in done.stderr and done.stdout == ""
