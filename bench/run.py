"""Benchmarks: Portolan side by side with nmap, in fresh network namespaces, in one run.

    sudo .venv/bin/python bench/run.py [--quick] [--write bench/RESULTS.md]

1. all 65,535 TCP ports on a namespace's loopback (three listeners): Portolan's connect scan
   vs ``nmap -sT -p-`` and ``nmap -sS -p-``;
2. a host that silently drops everything, 1,000 TCP ports: Portolan vs ``nmap -T4 -sT``,
   and Portolan against its model  timeout x (retries+1) x ceil(ports/concurrency);
3. 200 UDP ports on a Linux host with the default ICMP rate limit (two UDP services):
   Portolan vs ``nmap -sU``;
4. (``--only-syn``) a SYN scan of 10,000 ports: Portolan vs masscan and ``nmap -sS``, wall
   time and SYNs per second on the wire;
5. (``--only-mixed``) a mixed network, issue 13's three hosts (tests/harness/labs.py: an
   ordinary host, an edge firewall, 200 silent open ports), ports 1-1300,2222,5432,6379,8443:
   Portolan with defaults and without service identification vs ``nmap -sT -T4`` and
   ``nmap -sT -sV -T4``, states and services checked against the lab's construction.

Every tool's wall time (median of the repetitions, process start to exit) is reported with
its accuracy: the share of ports whose state agrees with the lab's construction.  Traffic
stays on loopback and on 198.18.0.0/15 hosts inside namespaces this script creates.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from harness import netns  # noqa: E402

PORTOLAN = [sys.executable, "-m", "portolan"]


def timed(ns: str, argv: list[str], timeout: float = 900) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {done.stderr[-500:]}")
    return elapsed, done.stdout


def nmap_states(xml_text: str, ports: list[int]) -> dict[int, str]:
    root = ElementTree.fromstring(xml_text)
    listed: dict[int, str] = {}
    default = "?"
    for node in root.iter("port"):
        state = node.find("state")
        listed[int(node.get("portid", "0"))] = state.get("state", "?") if state is not None else "?"
    for extra in root.iter("extraports"):
        default = extra.get("state", "?")
    return {port: listed.get(port, default) for port in ports}


def portolan_states(json_text: str, ports: list[int]) -> dict[int, str]:
    report = json.loads(json_text)
    host = report["hosts"][0]
    listed = {p["port"]: p["state"] for p in host["ports"]}
    default = host["extraports"][0]["state"] if host.get("extraports") else "?"
    return {port: listed.get(port, default) for port in ports}


def accuracy(found: dict[int, str], expected: dict[int, str]) -> float:
    agree = sum(1 for port, state in expected.items() if found.get(port) == state)
    return agree / len(expected)


def run_tool(ns: str, argv: list[str], reader, ports: list[int], expected: dict[int, str], repeat: int) -> dict[str, object]:
    times = []
    accuracies = []
    engine = []
    for _ in range(repeat):
        elapsed, out = timed(ns, argv)
        times.append(elapsed)
        accuracies.append(accuracy(reader(out, ports), expected))
        if reader is portolan_states:
            engine.append(float(json.loads(out)["summary"]["duration_seconds"]))
    row: dict[str, object] = {"median_s": statistics.median(times), "runs": times, "accuracy": min(accuracies)}
    if engine:
        row["engine_s"] = statistics.median(engine)
    return row


def loopback_bench(repeat: int) -> dict[str, dict[str, object]]:
    ns = f"pbench-lo-{os.getpid()}"
    netns.add(ns)
    listeners = [22, 8080, 50000]
    servers = [
        netns.popen(ns, [sys.executable, "-c", f"import socket,time\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(('127.0.0.1',{p}));s.listen(512);time.sleep(3600)"])
        for p in listeners
    ]
    time.sleep(0.5)
    ports = list(range(1, 65536))
    expected = {p: ("open" if p in listeners else "closed") for p in ports}
    try:
        results = {
            "portolan": run_tool(ns, [*PORTOLAN, "scan", "127.0.0.1", "-p", "1-65535", "-o", "json", "--no-service", "-q"], portolan_states, ports, expected, repeat),
            "nmap -sT": run_tool(ns, ["nmap", "-sT", "-Pn", "-n", "-p-", "-oX", "-", "127.0.0.1"], nmap_states, ports, expected, repeat),
            "nmap -sS": run_tool(ns, ["nmap", "-sS", "-Pn", "-n", "-p-", "-oX", "-", "127.0.0.1"], nmap_states, ports, expected, repeat),
        }
    finally:
        for server in servers:
            server.kill()
            server.wait()
        netns.delete(ns)
    return results


class TwoHosts:
    """A scanner and one target host on a veth pair, 198.18.200.0/24."""

    def __init__(self, tag: str) -> None:
        self.scanner = f"pbench-{tag}-s{os.getpid()}"
        self.host = f"pbench-{tag}-h{os.getpid()}"
        self.address = "198.18.200.2"
        netns.add(self.scanner)
        netns.add(self.host)
        netns.ip("link", "add", f"pb{tag}a", "netns", self.scanner, "type", "veth", "peer", "name", f"pb{tag}b", "netns", self.host)
        netns.run(self.scanner, ["ip", "addr", "add", "198.18.200.1/24", "dev", f"pb{tag}a"])
        netns.run(self.host, ["ip", "addr", "add", f"{self.address}/24", "dev", f"pb{tag}b"])
        netns.run(self.scanner, ["ip", "link", "set", f"pb{tag}a", "up"])
        netns.run(self.host, ["ip", "link", "set", f"pb{tag}b", "up"])

    def close(self) -> None:
        netns.delete(self.scanner)
        netns.delete(self.host)


def dropping_bench(repeat: int) -> tuple[dict[str, dict[str, object]], float]:
    lab = TwoHosts("d")
    subprocess.run(["ip", "netns", "exec", lab.host, "nft", "-f", "-"], input="table ip lab {\n chain input {\n  type filter hook input priority 0; policy accept;\n  meta l4proto { tcp, udp } drop\n }\n}\n", text=True, check=True)
    ports = list(range(1, 1001))
    expected = {p: "filtered" for p in ports}
    timeout_s, retries, concurrency = 0.5, 1, 4096
    model = timeout_s * (retries + 1) * math.ceil(len(ports) / concurrency)
    try:
        results = {
            "portolan": run_tool(lab.scanner, [*PORTOLAN, "scan", lab.address, "-p", "1-1000", "-o", "json", "--no-service", "-q"], portolan_states, ports, expected, repeat),
            "nmap -T4 -sT": run_tool(lab.scanner, ["nmap", "-T4", "-sT", "-Pn", "-n", "-p", "1-1000", "-oX", "-", lab.address], nmap_states, ports, expected, repeat),
            "nmap -T4 -sS": run_tool(lab.scanner, ["nmap", "-T4", "-sS", "-Pn", "-n", "-p", "1-1000", "-oX", "-", lab.address], nmap_states, ports, expected, repeat),
        }
    finally:
        lab.close()
    return results, model


def udp_bench(repeat: int) -> dict[str, dict[str, object]]:
    lab = TwoHosts("u")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "tests"))
    spec = json.dumps([{"proto": "udp", "port": 53, "kind": "dns"}, {"proto": "udp", "port": 123, "kind": "echo"}])
    server = netns.popen(lab.host, [sys.executable, "-m", "harness.servers", spec], stdout=subprocess.PIPE, env=env)
    assert server.stdout is not None
    server.stdout.readline()
    ports = list(range(1, 201))
    expected = {p: ("open" if p in (53, 123) else "closed") for p in ports}
    try:
        results = {
            "portolan": run_tool(lab.scanner, [*PORTOLAN, "scan", lab.address, "-u", "-p", "1-200", "-o", "json", "--no-service", "-q", "--udp-budget", "600"], portolan_states, ports, expected, repeat),
            "nmap -sU": run_tool(lab.scanner, ["nmap", "-sU", "-Pn", "-n", "-p", "1-200", "-oX", "-", lab.address], nmap_states, ports, expected, 1),
        }
    finally:
        server.kill()
        server.wait()
        if server.stdout is not None:
            server.stdout.close()
        lab.close()
    return results


MIXED_PORTS = "1-1300,2222,5432,6379,8443"


def _nmap_service(node: ElementTree.Element) -> str | None:
    service = node.find("service")
    if service is None:
        return None
    name = service.get("name", "")
    return "https" if service.get("tunnel") == "ssl" and name == "http" else name


def mixed_nmap(xml_text: str) -> dict[tuple[str, int], tuple[str, str | None]]:
    """(address, port) -> (state, service name) for every port nmap listed or counted."""
    found: dict[tuple[str, int], tuple[str, str | None]] = {}
    for host in ElementTree.fromstring(xml_text).iter("host"):
        address = host.find("address").get("addr", "")  # type: ignore[union-attr]
        default = "?"
        for extra in host.iter("extraports"):
            default = extra.get("state", "?")
        found[(address, -1)] = (default, None)
        for node in host.iter("port"):
            state = node.find("state")
            found[(address, int(node.get("portid", "0")))] = (state.get("state", "?") if state is not None else "?",
                                                              _nmap_service(node))
    return found


def mixed_portolan(json_text: str) -> dict[tuple[str, int], tuple[str, str | None]]:
    found: dict[tuple[str, int], tuple[str, str | None]] = {}
    for host in json.loads(json_text)["hosts"]:
        default = host["extraports"][0]["state"] if host.get("extraports") else "?"
        found[(host["address"], -1)] = (default, None)
        for port in host["ports"]:
            found[(host["address"], port["port"])] = (port["state"], (port.get("service") or {}).get("name"))
    return found


def mixed_bench(repeat: int) -> tuple[dict[str, dict[str, object]], int, int]:
    """Issue 13's mixed network, built from the engine lab's construction; (rows, ports, services)."""
    from harness import labs

    specs = tuple(spec for spec in labs.CONSTRUCTION if spec.name in ("services", "firewalled", "quiet"))
    lab = labs.Lab(f"pbmix{os.getpid() % 10000}", specs)
    otherwise = {"services": "closed", "firewalled": "filtered", "quiet": "closed"}
    ports = [*range(1, 1301), 2222, 5432, 6379, 8443]
    expected: dict[tuple[str, int], str] = {}
    names: dict[tuple[str, int], str] = {}
    for host in lab.hosts.values():
        for port in ports:
            built = lab.expected.get((host.address, port, "tcp"))
            expected[(host.address, port)] = built[0] if built else otherwise[host.name]
        for (address, port, protocol), name in lab.expected_services.items():
            if protocol == "tcp" and address == host.address and port in ports:
                names[(address, port)] = name
    addresses = [host.address for host in lab.hosts.values()]
    argvs = {
        "portolan": [*PORTOLAN, "scan", *addresses, "-p", MIXED_PORTS, "-o", "json", "-q"],
        "portolan --no-service": [*PORTOLAN, "scan", *addresses, "-p", MIXED_PORTS, "-o", "json", "-q", "--no-service"],
        "nmap -sT -T4": ["nmap", "-sT", "-T4", "-Pn", "-n", "-p", MIXED_PORTS, "-oX", "-", *addresses],
        "nmap -sT -sV -T4": ["nmap", "-sT", "-sV", "-T4", "-Pn", "-n", "-p", MIXED_PORTS, "-oX", "-", *addresses],
    }
    results: dict[str, dict[str, object]] = {}
    try:
        lab.build()
        for name, argv in argvs.items():
            reader = mixed_portolan if name.startswith("portolan") else mixed_nmap
            times, state_acc, service_acc, engine = [], [], [], []
            for _ in range(1 if "-sV" in argv else repeat):  # nmap -sV takes minutes: one run
                elapsed, out = timed(lab.scanner_ns, argv)
                found = reader(out)
                times.append(elapsed)
                state_acc.append(sum(1 for key, state in expected.items()
                                     if found.get(key, found.get((key[0], -1), ("?", None)))[0] == state) / len(expected))
                service_acc.append(sum(1 for key, want in names.items() if found.get(key, ("?", None))[1] == want) / len(names))
                if reader is mixed_portolan:
                    engine.append(float(json.loads(out)["summary"]["duration_seconds"]))
            row: dict[str, object] = {"median_s": statistics.median(times), "runs": times, "accuracy": min(state_acc),
                                      "services": min(service_acc)}
            if engine:
                row["engine_s"] = statistics.median(engine)
            results[name] = row
    finally:
        lab.teardown()
    return results, len(expected), len(names)


def masscan_states(text: str, ports: list[int]) -> dict[int, str]:
    """masscan -oL lists open ports only; every other port counts as not open (closed)."""
    opened = {int(line.split()[2]) for line in text.splitlines() if line.startswith("open tcp")}
    return {port: ("open" if port in opened else "closed") for port in ports}


def syn_bench(repeat: int) -> tuple[dict[str, dict[str, object]], dict[str, float]]:
    lab = TwoHosts("y")
    listeners = [22, 80, 443, 8080]
    servers = [
        netns.popen(lab.host, [sys.executable, "-c", f"import socket,time\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(('0.0.0.0',{p}));s.listen(512);time.sleep(3600)"])
        for p in listeners
    ]
    time.sleep(0.5)
    mac = subprocess.run(["ip", "-n", lab.host, "link", "show", "pbyb"], capture_output=True, text=True).stdout.split("ether")[1].split()[0]
    ports = list(range(1, 10001))
    expected = {p: ("open" if p in listeners else "closed") for p in ports}
    rates: dict[str, float] = {}
    try:
        argvs = {
            "portolan --syn": [*PORTOLAN, "scan", lab.address, "--syn", "-p", "1-10000", "-o", "json", "--no-service", "-q"],
            "masscan --rate 100000": ["masscan", lab.address, "-p1-10000", "--rate", "100000", "--router-mac", mac,
                                      "--adapter", "pbya", "--adapter-ip", "198.18.200.50", "--wait", "1", "-oL", "/dev/stdout"],
            "nmap -sS": ["nmap", "-sS", "-Pn", "-n", "-p", "1-10000", "-oX", "-", lab.address],
        }
        readers = {"portolan --syn": portolan_states, "masscan --rate 100000": masscan_states, "nmap -sS": nmap_states}
        results = {name: run_tool(lab.scanner, argv, readers[name], ports, expected, repeat) for name, argv in argvs.items()}
        for name, row in results.items():
            rates[name] = len(ports) / float(row["median_s"])  # type: ignore[arg-type]
        for name, argv in argvs.items():  # the median of WIRE_RUNS runs by rate (one run is at the mercy of noise)
            runs = sorted((wire_syns(lab, "pbyb", argv) for _ in range(WIRE_RUNS)),
                          key=lambda found: found[0] / found[1] if found[1] else 0.0)
            syns, span = runs[len(runs) // 2]
            results[name]["wire_syns"] = syns
            results[name]["wire_span_s"] = span
            results[name]["wire_rates"] = [found[0] / found[1] if found[1] else 0.0 for found in runs]
    finally:
        for server in servers:
            server.kill()
            server.wait()
        lab.close()
    return results, rates


WIRE_RUNS = 5


def wire_syns(lab: TwoHosts, interface: str, argv: list[str]) -> tuple[int, float]:
    """Run a scanner once while tcpdump records the SYNs reaching the target: (count, first-to-last seconds)."""
    from portolan.capture import pcapfiles

    with tempfile.TemporaryDirectory() as folder:
        path = pathlib.Path(folder) / "wire.pcap"
        dump = subprocess.Popen(["ip", "netns", "exec", lab.host, "tcpdump", "-i", interface, "-n", "-U", "-B", "32768", "-w", str(path),
                                 "tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn"], stderr=subprocess.PIPE, text=True)
        assert dump.stderr is not None
        dump.stderr.readline()  # "listening on ...": the capture is armed
        try:
            timed(lab.scanner, argv)
            time.sleep(0.3)
        finally:
            dump.send_signal(signal.SIGINT)
            dump.wait(10)
            dump.stderr.close()
        stamps = [record.timestamp_ns for record in pcapfiles.read(path)]
    if len(stamps) < 2:
        return len(stamps), 0.0
    return len(stamps), (max(stamps) - min(stamps)) / 1e9


def table(results: dict[str, dict[str, object]], baseline: str) -> list[str]:
    base = float(results[baseline]["median_s"])  # type: ignore[arg-type]
    lines = ["| tool | median wall time (s) | runs (s) | ratio to " + baseline + " | accuracy | scan time inside the process (s) |",
             "|---|---|---|---|---|---|"]
    for name, row in results.items():
        median = float(row["median_s"])  # type: ignore[arg-type]
        runs = ", ".join(f"{t:.2f}" for t in row["runs"])  # type: ignore[attr-defined]
        engine = f"{float(row['engine_s']):.2f}" if "engine_s" in row else "-"  # type: ignore[arg-type]
        lines.append(f"| {name} | {median:.2f} | {runs} | {median / base:.2f}x | {float(row['accuracy']) * 100:.1f}% | {engine} |")  # type: ignore[arg-type]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--write", type=pathlib.Path)
    parser.add_argument("--skip-udp", action="store_true")
    parser.add_argument("--only-syn", action="store_true")
    parser.add_argument("--only-mixed", action="store_true")
    parser.add_argument("--only-full-range", action="store_true", help="section 1 only")
    args = parser.parse_args()
    # Portolan as installed: this tree's package, byte-compiled once (pip and the image compile
    # every module; without bytecode each run would compile ~50 modules first).
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "operator"), os.environ.get("PYTHONPATH")]))
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "operator")], check=True, stdout=subprocess.DEVNULL)
    nmap_version = subprocess.run(["nmap", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    out = [
        "# Benchmark results",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `bench/run.py` on {os.cpu_count()} cores, "
        f"{platform.python_implementation()} {platform.python_version()}, {nmap_version}. "
        "Wall time is process start to exit (both tools pay their start-up), median of the runs; "
        "accuracy is the share of ports whose state matches the namespace lab's construction.",
        "",
        "## 1. All 65,535 TCP ports on a namespace's loopback (3 listeners)",
        "",
    ]
    if args.only_mixed:
        mixed, count, named = mixed_bench(args.repeat)
        out = [f"## 5. A mixed network: an ordinary host, an edge firewall, 200 silent open ports ({count:,} TCP ports)", "",
               f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `bench/run.py --only-mixed`; ports "
               f"`{MIXED_PORTS}` on each host of tests/harness/labs.py's `services`, `firewalled` and `quiet`.", "",
               *table(mixed, "nmap -sT -T4"), "",
               "| tool | services named as built (of " + str(named) + ") | ratio to nmap -sT -T4 | ratio to nmap -sT -sV -T4 |",
               "|---|---|---|---|"]
        base, base_sv = (float(mixed[k]["median_s"]) for k in ("nmap -sT -T4", "nmap -sT -sV -T4"))  # type: ignore[arg-type]
        for name, row in mixed.items():
            median = float(row["median_s"])  # type: ignore[arg-type]
            out.append(f"| {name} | {float(row['services']) * 100:.0f}% | {median / base:.2f}x | {median / base_sv:.2f}x |")  # type: ignore[arg-type]
        out += ["", "Goals: portolan (defaults, services on) ≤ 0.5× nmap -sT -T4 and ≤ 0.5× nmap -sT -sV, at 100% accuracy.", ""]
        text = "\n".join(out) + "\n"
        print(text)
        if args.write:
            args.write.write_text(text)
        return
    if args.only_syn:
        syn, rates = syn_bench(args.repeat)
        out += ["## 4. SYN scan, 10,000 ports on one host (4 listeners)", "", *table(syn, "masscan --rate 100000")]
        out += ["", "Probes per second (ports / median wall time, start-up included): "
                + ", ".join(f"{k} {v:,.0f}/s" for k, v in rates.items())
                + ". masscan reports open ports only; its accuracy counts every unreported port as closed.", ""]
        wire = {name: (int(row["wire_syns"]), float(row["wire_span_s"])) for name, row in syn.items()}  # type: ignore[call-overload]
        out += [f"SYNs on the wire (tcpdump on the target's interface, {WIRE_RUNS} more runs per tool, the median "
                "run by rate; first to last SYN):", "",
                "| tool | SYNs seen | sending span (s) | SYNs per second | every run, sorted (SYN/s) |", "|---|---|---|---|---|"]
        for name, (count, span) in wire.items():
            every = ", ".join(f"{rate:,.0f}" for rate in syn[name]["wire_rates"])  # type: ignore[attr-defined]
            out.append(f"| {name} | {count:,} | {span:.3f} | {count / span:,.0f} | {every} |" if span
                       else f"| {name} | {count:,} | - | - | {every} |")
        rate = {name: count / span if span else 0.0 for name, (count, span) in wire.items()}
        ours = rate["portolan --syn"]
        masscan_ratio = f"{ours / rate['masscan --rate 100000']:.2f}" if rate["masscan --rate 100000"] else "-"
        nmap_ratio = f"{ours / rate['nmap -sS']:.2f}" if rate["nmap -sS"] else "-"
        out += ["", f"Send rate portolan / masscan = {masscan_ratio} (goal: within 3×, i.e. ≥ 0.33); send rate "
                f"portolan / nmap -sS = {nmap_ratio} (goal ≥ 1); wall time portolan / nmap -sS = "
                f"{float(syn['portolan --syn']['median_s']) / float(syn['nmap -sS']['median_s']):.2f} (goal < 1)."]  # type: ignore[arg-type]
        out.append("")
        text = "\n".join(out) + "\n"
        print(text)
        if args.write:
            args.write.write_text(text)
        return
    loop = loopback_bench(args.repeat)
    out += table(loop, "nmap -sT")
    fastest = min(float(run) for run in loop["nmap -sT"]["runs"])  # type: ignore[attr-defined]
    out += ["", f"Goal: Portolan ≤ 0.5× nmap -sT's fastest run ({fastest:.2f} s here): "
            f"{float(loop['portolan']['median_s']) / fastest:.2f}× (median), "  # type: ignore[arg-type]
            f"{min(float(run) for run in loop['portolan']['runs']) / fastest:.2f}× (fastest).", ""]  # type: ignore[attr-defined]
    if args.only_full_range:
        text = "\n".join(out) + "\n"
        print(text)
        if args.write:
            args.write.write_text(text)
        return
    out += ["## 2. One silently dropping host, 1,000 TCP ports", ""]
    drop, model = dropping_bench(args.repeat)
    out += table(drop, "nmap -T4 -sT")
    portolan_drop = float(drop["portolan"]["median_s"])  # type: ignore[arg-type]
    engine_drop = float(drop["portolan"]["engine_s"])  # type: ignore[arg-type]
    out += ["", f"Model timeout × (retries+1) × ⌈ports/concurrency⌉ = 0.5 s × 2 × 1 = {model:.2f} s; "
            f"Portolan's scan took {engine_drop:.2f} s = {engine_drop / model:.2f}× the model (goal ≤ 1.2×); "
            f"with process start-up and exit, {portolan_drop:.2f} s = {portolan_drop / model:.2f}×.", ""]
    if not args.skip_udp:
        out += ["## 3. 200 UDP ports on a Linux host with the default ICMP rate limit (2 UDP services)", ""]
        udp = udp_bench(1)
        out += table(udp, "nmap -sU")
        out += ["", "Goal: faster than nmap -sU at equal or better accuracy.", ""]
    text = "\n".join(out) + "\n"
    print(text)
    if args.write:
        args.write.write_text(text)


if __name__ == "__main__":
    main()
