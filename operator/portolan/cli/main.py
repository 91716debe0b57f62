"""The ``portolan`` command line: the parser of every command, and the CLI's own commands.

``portolan operator`` and ``portolan shard`` are parsed here too (one ``--help``
for everything), but :mod:`portolan.launching` hands them to their programs.

The ``portolan scan`` help text follows.


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
* 141 — the reader of stdout went away (``| head``): ends quietly, like a Unix tool

Limits: a local scan is capped at 2,097,152 probes (targets x ports) unless
``--max-probes`` raises it; targets expand to at most 1,048,576 addresses;
``--workers`` is 1-64; a manifest is at most 1 MiB.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

import portolan
from portolan import errors
from portolan.cli import exits


def _columns() -> int:
    """The terminal's width, found as ``shutil.get_terminal_size`` finds it ($COLUMNS, stdout's terminal, 80)."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns if sys.__stdout__ is not None else 0
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns if columns > 0 else 80


class _Formatter(argparse.HelpFormatter):
    """argparse's help formatter, sized without importing shutil.

    argparse makes one for every argument added (to check its metavar), and its
    own width lookup imports shutil: 2 ms of every command's start-up, for help
    that is rarely printed.
    """

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position, _columns() - 2 if width is None else width)


class _RawFormatter(_Formatter, argparse.RawDescriptionHelpFormatter):
    """The description as written (the ``scan`` help), sized as :class:`_Formatter`."""


class _Parser(argparse.ArgumentParser):
    def __init__(self, **options: Any) -> None:
        options.setdefault("formatter_class", _Formatter)  # subcommands' parsers too (argparse makes them)
        super().__init__(**options)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        raise errors.SpecError(message)


COMMANDS = ("scan", "listeners", "free-port", "capture", "audit", "crd", "generate", "shard", "probe", "canary",
            "operator")  # in the order the parser lists them


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every ``portolan`` command (usage errors raise SpecError).

    With ``only`` (the command being run, if it is one) only that command is built: building all
    of them (13 parsers, ~80 arguments, their help translated) is a tenth of a one-port scan's
    start-up.  Without it, or for an unknown command, every command is built (top-level help,
    "invalid choice" errors).
    """

    def wanted(name: str) -> bool:
        return only not in COMMANDS or only == name

    parser = _Parser(prog="portolan", description="Kubernetes-native network scanner")
    parser.add_argument("--version", action="version", version=f"portolan {portolan.__version__}")
    # The metavar lists every command even when only one is built (usage lines of errors).
    commands = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(COMMANDS) + "}")
    if wanted("scan"):
        scan = commands.add_parser(
            "scan", help="scan from this machine", description=__doc__,
            formatter_class=_RawFormatter,
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
        scan.add_argument("--workers", type=int, help="processes for the TCP pass, 1-64 (default: auto)")
        scan.add_argument("--max-probes", type=int, metavar="N",
                          help="refuse scans of more than N probes (targets x ports; default 2097152)")
        scan.add_argument(
            "--udp-budget", type=float, default=60.0,
            help="seconds to spend re-probing silent UDP ports of hosts that rate-limit ICMP (default 60)",
        )
        scan.add_argument(
            "--tcp-reason-budget", type=float, default=0.0, metavar="SECONDS",
            help="seconds to spend re-probing silent TCP ports of hosts that answered others with ICMP "
                 "errors, to tell a rate-limited rejection from a drop (the state is filtered either way; "
                 "default 0: not done)",
        )
        scan.add_argument("--allow-open", metavar="PORTS",
                          help="ports that may be open (e.g. 22,443 or web); any other open port exits 4")
        scan.add_argument("--capture-dir", metavar="DIR",
                          help="record the scan's own packets as evidence in DIR (pcapng; needs CAP_NET_RAW)")
        scan.add_argument("-q", "--quiet", action="store_true", help="no progress display")
        scan.add_argument("--listeners", action="store_true",
                          help="also list this host's listeners, each marked exposed, shielded or local-only "
                               "by the scan (run it against this host's own addresses)")
    if wanted("listeners"):
        listeners = commands.add_parser("listeners", help="who listens here: TCP listeners and bound UDP sockets, "
                                                          "with their processes")
        listeners.add_argument("--port", type=int, help="only this port (who occupies it?)")
        listeners.add_argument("-t", "--tcp", action="store_true", help="TCP only")
        listeners.add_argument("-u", "--udp", action="store_true", help="UDP only")
        listeners.add_argument("-o", "--output", default="table", help="table, json or jsonl")
        listeners.add_argument("--method", default="netlink", choices=["netlink", "proc"],
                               help="read the socket table with sock_diag netlink (default) or /proc/net")
    if wanted("free-port"):
        free_port = commands.add_parser("free-port", help="pick ports that are free now (checked by binding) "
                                                          "and reserve them briefly against parallel calls")
        free_port.add_argument("--range", default="1024-65535", help="LOW-HIGH (default 1024-65535)")
        free_port.add_argument("--count", type=int, default=1, help="how many ports (default 1)")
        free_port.add_argument("--protocol", default="tcp", choices=["tcp", "udp"])
        free_port.add_argument("--allow-ephemeral", action="store_true",
                               help="also pick ports in the kernel's ephemeral range (ip_local_port_range)")
        free_port.add_argument("--lease", type=float, default=60.0,
                               help="seconds other free-port calls will not return these ports (default 60)")
        free_port.add_argument("--runtime-dir", help="where leases are kept (default $PORTOLAN_RUNTIME_DIR, "
                                                     "/run/portolan as root, else $XDG_RUNTIME_DIR or /tmp)")
    if wanted("capture"):
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
    if wanted("audit"):
        audit = commands.add_parser("audit", help="NetworkPolicy reachability: audit results (show), offline (evaluate)")
        audit_commands = audit.add_subparsers(dest="audit_command", required=True)
        show = audit_commands.add_parser("show", help="render an audit's truth tables and mismatches (exit 4 on mismatches)")
        show.add_argument("name", nargs="?", help="the ReachabilityAudit (read from the cluster)")
        show.add_argument("-f", "--file", help="read the audit from this JSON file (- for stdin) instead")
        show.add_argument("-o", "--output", default="table", help="table, json or junit (a failing case per mismatch)")
        evaluate = audit_commands.add_parser(
            "evaluate", help="the expected reachability of a model under NetworkPolicies, offline (like cyclonus analyze)")
        evaluate.add_argument("--policies", required=True, help="a folder (or file) of NetworkPolicy YAML")
        evaluate.add_argument("--model", required=True, help="namespaces, pods, outside addresses and ports (YAML/JSON)")
        evaluate.add_argument("-o", "--output", default="table", help="table or json (with what decided each pair)")
    if wanted("crd"):
        commands.add_parser("crd", help="print the CRDs generated from the models")
    if wanted("generate"):
        generate = commands.add_parser("generate", help="rewrite crds/ and the chart's generated files")
        generate.add_argument("--root", default=".", help="the repository root")
    if wanted("shard"):
        commands.add_parser(
            "shard", help="run one shard of a ScanJob (inside a shard pod; configured by environment)"
        )
    if wanted("probe"):
        commands.add_parser(
            "probe", help="probe the pairs of one ReachabilityAudit source (inside a probe pod; configured by environment)"
        )
    if wanted("canary"):
        canary = commands.add_parser("canary", help="listen as a ReachabilityAudit canary (inside a canary pod)")
        canary.add_argument("--tcp", help="TCP ports to accept on")
        canary.add_argument("--udp", help="UDP ports to echo on")
    if wanted("operator"):
        operator = commands.add_parser("operator", help="run the operator (kopf)")
        operator.add_argument(
            "--settings", help="operator settings file (YAML); else the YAML in $PORTOLAN_SETTINGS, else defaults"
        )
        operator.add_argument("--namespace", action="append", help="watch only these namespaces")
        operator.add_argument("--standalone", action="store_true", help="no peering (single replica)")
        operator.add_argument("--verbose", action="store_true", help="log every handler call")
    return parser


def _crd(root: str | None) -> int:
    import pathlib

    from portolan.kube import definitions

    for path, text in definitions.generated_files().items():
        if root is not None:
            target = pathlib.Path(root) / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        elif path.startswith("crds/"):
            sys.stdout.write("---\n" + text)
    return exits.OK


def run(args: argparse.Namespace, arguments: Sequence[str]) -> int:
    """Run a CLI command (``scan``, ``listeners``, ``free-port``, ``capture``, ``crd``, ``generate``)."""

    def work() -> int:
        if args.command == "scan":
            from portolan.cli import scanning

            return scanning.run(args, arguments)
        if args.command in ("listeners", "free-port"):
            from portolan.cli import inventorying

            return inventorying.run_listeners(args) if args.command == "listeners" else inventorying.run_free_port(args)
        if args.command == "capture":
            from portolan.cli import capturing

            return capturing.run(args)
        if args.command == "audit" and args.audit_command == "evaluate":
            from portolan.cli import evaluating

            return evaluating.run(args)
        if args.command == "audit":
            from portolan.cli import auditing

            return auditing.run(args)
        if args.command in ("crd", "generate"):
            return _crd(args.root if args.command == "generate" else None)
        raise errors.SpecError(f"unknown command {args.command!r}")

    import signal

    # Until a command installs its own handlers (a scan's stop event), SIGTERM ends it as Ctrl-C does:
    # exit 130 with one line at most, not a bare kill.
    signal.signal(signal.SIGTERM, _interrupted)
    return exits.guarded(f"portolan {args.command}", work)


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def parse(arguments: Sequence[str]) -> argparse.Namespace:
    """The parsed command line; a usage error raises :class:`portolan.errors.SpecError`."""
    arguments = list(arguments)
    # Only a command given first is built alone: ``portolan -h scan`` shows every command.
    command = arguments[0] if arguments and not arguments[0].startswith("-") else None
    return build_parser(only=command).parse_args(arguments)
