"""The ``portolan`` command line: local scans with the same engine and manifests as the operator.

``portolan scan`` runs a ScanJob on this machine: from a manifest (``-f``),
from targets and options on the command line, or, with neither, the embedded
default manifest.  Command-line options override the manifest's fields.

Exit codes:

* 0 — the scan completed (whatever it found)
* 2 — bad input: a malformed target, port, manifest or option (nothing was sent)
* 3 — the scan could not run (sockets, permissions, resources)
* 4 — the scan completed and found open ports outside ``expect.allowedOpenPorts`` /
  ``--allow-open`` (a CI gate; the report lists them in ``unexpected_open``)
* 130 — interrupted (Ctrl-C / SIGTERM): the partial report is still written
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import types
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

import pydantic

import portolan
from portolan import errors

if TYPE_CHECKING:
    import rich.progress

    from portolan.capture import recording
    from portolan.models import results

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_SCAN = 3
EXIT_VIOLATIONS = 4
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        raise errors.SpecError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="portolan", description="Kubernetes-native network scanner")
    parser.add_argument("--version", action="version", version=f"portolan {portolan.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    scan = commands.add_parser(
        "scan", help="scan from this machine", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    scan.add_argument("targets", nargs="*", help="addresses, CIDRs, ranges or hostnames")
    scan.add_argument("-f", "--file", help="a ScanJob manifest to run")
    scan.add_argument("-p", "--ports", help="ports: 22,80,1000-2000, named sets (common, all, ...)")
    scan.add_argument("--udp-ports", help="ports for UDP if different")
    scan.add_argument("--exclude", action="append", default=None, help="never probe these")
    scan.add_argument("-t", "--tcp", action="store_true", help="TCP connect scan")
    scan.add_argument("-u", "--udp", action="store_true", help="UDP scan with protocol payloads")
    scan.add_argument("--syn", action="store_true",
                      help="TCP SYN scan on raw sockets (needs CAP_NET_RAW; falls back to connect without it)")
    scan.add_argument("-o", "--output", default="table",
                      help="table, json, jsonl, xml (nmap) or junit (a case per open port; --allow-open fails some)")
    scan.add_argument("--output-file", help="write the report here instead of stdout")
    scan.add_argument("--rate", type=int, help="global probes per second")
    scan.add_argument("--host-rate", type=int, help="probes per second per host")
    scan.add_argument("--concurrency", type=int, help="probes in flight")
    scan.add_argument("--retries", type=int, help="retransmissions for silent ports")
    scan.add_argument("--max-rtt-timeout", type=int, help="upper bound of probe timeout, ms")
    scan.add_argument("--initial-rtt-timeout", type=int, help="first probe timeout, ms")
    scan.add_argument("--no-service", action="store_true", help="skip service identification")
    scan.add_argument("--verify", action="store_true", help="probe open ports twice")
    scan.add_argument("--all-ports", action="store_true", help="list every port, none counted")
    scan.add_argument("--workers", type=int, help="processes for the TCP pass (default: auto)")
    scan.add_argument(
        "--udp-budget", type=float, default=60.0,
        help="seconds to spend re-probing ports of hosts that rate-limit ICMP (default 60)",
    )
    scan.add_argument("--allow-open", metavar="PORTS",
                      help="ports that may be open (e.g. 22,443 or web); any other open port exits 4")
    scan.add_argument("--capture-dir", metavar="DIR",
                      help="record the scan's own packets as evidence in DIR (pcapng; needs CAP_NET_RAW)")
    scan.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    capture = commands.add_parser("capture", help="capture, decode and write packets (needs CAP_NET_RAW)")
    capture.add_argument("-i", "--interface", help="the interface to capture on")
    capture.add_argument("-f", "--filter", default="", help="a tcpdump filter expression")
    capture.add_argument("-s", "--snaplen", type=int, default=262144, help="bytes kept per packet")
    capture.add_argument("-p", "--promisc", action="store_true", help="promiscuous mode")
    capture.add_argument("-w", "--write", help="base path of the capture files (rotated: BASE-0001.pcapng, ...)")
    capture.add_argument("--format", default="pcapng", choices=["pcapng", "pcap"])
    capture.add_argument("--rotate-size", type=int, help="start a new file after this many bytes")
    capture.add_argument("--rotate-seconds", type=float, help="start a new file after this many seconds")
    capture.add_argument("--gzip", action="store_true", help="compress the files")
    capture.add_argument("-c", "--count", type=int, help="stop after this many packets")
    capture.add_argument("--duration", type=float, help="stop after this many seconds")
    capture.add_argument("-r", "--read", help="decode a pcap/pcapng file instead of capturing")
    capture.add_argument("-q", "--quiet", action="store_true", help="no line per packet")
    commands.add_parser("crd", help="print the CRDs generated from the models")
    generate = commands.add_parser("generate", help="rewrite crds/ and the chart's generated files")
    generate.add_argument("--root", default=".", help="the repository root")
    commands.add_parser(
        "shard", help="run one shard of a ScanJob (inside a shard pod; configured by environment)"
    )
    operator = commands.add_parser("operator", help="run the operator (kopf)")
    operator.add_argument(
        "--settings", help="operator settings file (YAML); else the YAML in $PORTOLAN_SETTINGS, else defaults"
    )
    operator.add_argument("--namespace", action="append", help="watch only these namespaces")
    operator.add_argument("--standalone", action="store_true", help="no peering (single replica)")
    operator.add_argument("--verbose", action="store_true", help="log every handler call")
    return parser


def _spec_from(args: argparse.Namespace) -> tuple[object, str]:
    from portolan.models import scanjobs

    if args.file:
        from portolan import manifesting  # YAML is loaded only when a manifest is read

        job = manifesting.load(args.file)
    elif args.targets:
        job = scanjobs.ScanJob.model_validate(
            {"apiVersion": "portolan.dev/v1alpha1", "kind": "ScanJob",
             "spec": {"targets": {"addresses": list(args.targets)}}}
        )
    else:
        from portolan import manifesting

        job = manifesting.default()
    spec = job.spec
    updates: dict[str, object] = {}
    targets = spec.targets
    if args.targets and args.file:
        targets = targets.model_copy(update={"addresses": list(args.targets)})
    if args.exclude:
        targets = targets.model_copy(update={"exclude": [*targets.exclude, *args.exclude]})
    updates["targets"] = targets
    if args.ports:
        updates["ports"] = args.ports
    if args.udp_ports:
        updates["udp_ports"] = args.udp_ports
    if args.tcp or args.udp:
        updates["protocols"] = [p for p, on in (("tcp", args.tcp), ("udp", args.udp)) if on]
    timing = {
        "max_rate": args.rate, "max_host_rate": args.host_rate, "concurrency": args.concurrency,
        "retries": args.retries, "max_rtt_timeout_ms": args.max_rtt_timeout,
        "initial_rtt_timeout_ms": args.initial_rtt_timeout,
    }
    timing_updates = {key: value for key, value in timing.items() if value is not None}
    if timing_updates:
        merged = spec.timing.model_dump() | timing_updates
        updates["timing"] = scanjobs.Timing.model_validate(merged)
    if args.no_service:
        updates["service_detection"] = False
    if args.syn:
        updates["technique"] = scanjobs.Technique.SYN
    if args.verify:
        updates["verify_open"] = True
    if args.allow_open is not None:
        updates["expect"] = {"allowed_open_ports": args.allow_open}
    spec = scanjobs.ScanJobSpec.model_validate(spec.model_dump() | updates)
    if spec.expect is not None and spec.expect.allowed_open_ports:
        from portolan.engine import ports

        ports.parse_ports(spec.expect.allowed_open_ports)  # a bad expression exits 2 before anything is sent
    return spec, job.metadata.name


class _Progress:
    """A rich progress bar on a terminal; nothing when stderr is piped."""

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self.bar: rich.progress.Progress | None = None
        self.task: rich.progress.TaskID | None = None
        if enabled and stream.isatty():
            import rich.console  # only on a terminal: rich costs start-up time
            import rich.progress

            self.bar = rich.progress.Progress(
                rich.progress.TextColumn("scanning"),
                rich.progress.BarColumn(),
                rich.progress.MofNCompleteColumn(),
                rich.progress.TextColumn("{task.fields[open]} open"),
                rich.progress.TimeRemainingColumn(),
                console=rich.console.Console(file=stream),
                transient=True,
            )

    def __enter__(self) -> _Progress:
        if self.bar is not None:
            self.bar.start()
            self.task = self.bar.add_task("scan", total=None, open=0)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def update(self, progress: object) -> None:
        if self.bar is not None and self.task is not None:
            done = getattr(progress, "done", 0)
            total = getattr(progress, "total", 0)
            found = getattr(progress, "open", 0)
            self.bar.update(self.task, completed=done, total=total, open=found)


def _scan(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from portolan import rendering
    from portolan.engine import payloads, scanning, services
    from portolan.models import scanjobs

    if args.output not in rendering.FORMATS:
        raise errors.SpecError(
            f"unknown output format {args.output!r}; use one of {', '.join(rendering.FORMATS)}"
        )
    try:
        spec, _name = _spec_from(args)
    except pydantic.ValidationError as exc:  # mapped once, here, for every option
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        )
        raise errors.SpecError(f"invalid option: {problems}") from exc
    assert isinstance(spec, scanjobs.ScanJobSpec)
    plan = scanning.plan(spec)
    stop = threading.Event()

    def interrupt(signum: int, frame: types.FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    stream_jsonl = args.output == "jsonl"
    out: TextIO = sys.stdout
    if args.output_file:
        try:
            out = open(args.output_file, "w", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise errors.SpecError(f"cannot write {args.output_file}: {exc.strerror}") from exc

    def emit(port: object) -> None:
        out.write(rendering.jsonl_line(port) + "\n")  # type: ignore[arg-type]

    recorder: recording.Recorder | None = None
    try:
        recorder = _recorder(args, spec, plan)
        with _Progress(sys.stderr, not args.quiet) as progress:
            report = scanning.run(
                plan,
                on_port=emit if stream_jsonl else None,
                on_progress=progress.update,
                identify=services.identify_services,
                payloads=payloads.payload_bytes,
                identify_reply=payloads.identify_reply,
                workers=args.workers,
                list_all=args.all_ports,
                stop=stop,
                rate_limit_budget=args.udp_budget,
                args="portolan " + " ".join(argv),
            )
        if recorder is not None:
            finishing, recorder = recorder, None
            try:
                evidence = finishing.finish()
            except errors.PortolanError as exc:  # the scan's report matters more than its evidence
                print(f"warning: the evidence is incomplete: {exc}", file=sys.stderr)
            else:
                names = ", ".join(str(path) for path in evidence.files)
                print(f"evidence: {evidence.packets} packets ({evidence.dropped} dropped) in {names}", file=sys.stderr)
        report = _judged(report, spec)
        if not stream_jsonl:
            rendering.write_report(report, args.output, out)
        for port in report.unexpected_open:
            name = f" ({port.service.name})" if port.service else ""
            print(f"unexpected open port: {port.host}:{port.port}/{port.protocol.value}{name} "
                  f"(allowed: {report.allowed_open_ports or 'none'})", file=sys.stderr)
        out.flush()
    finally:
        if recorder is not None:
            with contextlib.suppress(errors.PortolanError):  # never hides the exception on its way out
                recorder.finish()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if out is not sys.stdout:
            out.close()
    if not report.complete:
        return EXIT_INTERRUPTED
    return EXIT_VIOLATIONS if report.unexpected_open else EXIT_OK


def _judged(report: results.ScanReport, spec: object) -> results.ScanReport:
    """The report with the open ports that spec.expect does not allow."""
    from portolan import evaluation
    from portolan.engine import ports
    from portolan.models import results, scanjobs

    assert isinstance(spec, scanjobs.ScanJobSpec)
    if spec.expect is None:
        return report
    text = spec.expect.allowed_open_ports
    allowed = set(ports.parse_ports(text)) if text else set()
    by_key = {(p.host, p.port, p.protocol.value): p for h in report.hosts for p in h.ports
              if p.state == results.PortState.OPEN}
    _, listed = evaluation.unexpected_open(
        allowed, [("local", h, p, proto, None) for h, p, proto in by_key], limit=len(by_key))
    return report.model_copy(update={"allowed_open_ports": text,
                                     "unexpected_open": [by_key[(v[1], v[2], v[3])] for v in listed]})


def _recorder(args: argparse.Namespace, spec: object, plan: object) -> recording.Recorder | None:
    """Start recording evidence when --capture-dir asks; a manifest's capture: settings shape the files."""
    import pathlib
    import time

    from portolan.capture import recording
    from portolan.engine import scanning
    from portolan.models import scanjobs

    assert isinstance(spec, scanjobs.ScanJobSpec) and isinstance(plan, scanning.Plan)
    wanted = spec.capture
    if not args.capture_dir:
        if wanted is not None:
            print(f"note: capture: names the claim {wanted.persistent_volume_claim!r}, which exists only in a "
                  "cluster; pass --capture-dir DIR to record evidence here", file=sys.stderr)
        return None
    wanted = wanted or scanjobs.Capture(persistent_volume_claim="local")
    base = pathlib.Path(args.capture_dir) / time.strftime("portolan-%Y%m%dT%H%M%S")
    return recording.Recorder(
        base, (target.address for target in plan.targets), fmt=wanted.format, snaplen=wanted.snap_length,
        compress=wanted.compress,
        rotate_bytes=None if wanted.rotate_megabytes is None else wanted.rotate_megabytes << 20,
    ).start()


def _capture(args: argparse.Namespace) -> int:
    import pathlib
    import time

    from portolan.capture import capturing, decoding, pcapfiles

    if args.read:
        for record in pcapfiles.read(pathlib.Path(args.read)):
            decoded = decoding.decode_ethernet(record.data) if record.linktype == 1 else decoding.decode_ip(record.data)
            if not args.quiet:
                print(f"{record.timestamp_ns / 1e9:.6f} {decoded.summary()}")
        return EXIT_OK
    if not args.interface:
        raise errors.SpecError("capture needs -i INTERFACE (or -r FILE to read one)")
    writer = None
    if args.write:
        writer = pcapfiles.RotatingWriter(
            pathlib.Path(args.write), fmt=args.format, snaplen=args.snaplen, rotate_bytes=args.rotate_size,
            rotate_seconds=args.rotate_seconds, compress=args.gzip, clock=time.monotonic,
        )
    stop = threading.Event()

    def interrupt(signum: int, frame: types.FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, interrupt)

    def show(decoded: object) -> None:
        print(decoded.summary(), flush=True)  # type: ignore[attr-defined]

    try:
        session = capturing.Capture(args.interface, expression=args.filter, snaplen=args.snaplen,
                                    promiscuous=args.promisc, writer=writer,
                                    on_packet=None if args.quiet else show, stop=stop)
    except OSError as exc:
        raise errors.ScanError(f"cannot capture on {args.interface}: {exc.strerror or exc}") from exc
    # Like tcpdump: once this line is out, the filter is attached and nothing matching is missed.
    print(f"listening on {args.interface}, filter {args.filter or '(none)'!r}, snapshot length {args.snaplen} bytes",
          file=sys.stderr, flush=True)
    stats = session.run(count=args.count, seconds=args.duration)
    print(stats.summary(), file=sys.stderr)
    if writer is not None:
        for path, count in zip(writer.files, writer.counts, strict=True):
            print(f"wrote {path} ({count} packets)", file=sys.stderr)
    return EXIT_OK


def _crd(root: str | None) -> int:
    import pathlib

    from portolan import definitions

    for path, text in definitions.generated_files().items():
        if root is not None:
            target = pathlib.Path(root) / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        elif path.startswith("crds/"):
            sys.stdout.write("---\n" + text)
    return EXIT_OK


def _shard() -> int:
    import os

    from portolan import kube, sharding

    env = sharding.ShardEnv.from_environment(os.environ)
    stop = threading.Event()

    def interrupt(signum: int, frame: types.FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, interrupt)
    runner = sharding.ShardRunner(kube.Kube(kube.client_from_environment()), env, stop=stop)
    code = runner.run()
    print(f"portolan shard {env.shard} attempt {env.attempt}: exit {code}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(arguments)
        if args.command == "scan":
            return _scan(args, arguments)
        if args.command == "shard":
            return _shard()
        if args.command == "crd":
            return _crd(None)
        if args.command == "capture":
            return _capture(args)
        if args.command == "generate":
            return _crd(args.root)
        if args.command == "operator":
            import os

            import portolan.handlers as handlers

            return handlers.run(args.settings, args.namespace or [], standalone=args.standalone, verbose=args.verbose,
                                settings_text=os.environ.get("PORTOLAN_SETTINGS"))
        raise errors.SpecError(f"unknown command {args.command!r}")
    except errors.SpecError as exc:
        print(f"portolan: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except errors.PortolanError as exc:
        print(f"portolan: scan failed: {exc}", file=sys.stderr)
        return EXIT_SCAN
    except PermissionError as exc:
        print(f"portolan: scan failed: permission denied: {exc}", file=sys.stderr)
        return EXIT_SCAN


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
