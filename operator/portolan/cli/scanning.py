"""``portolan scan``: a ScanJob run on this machine, from a manifest, the command line or the embedded default.

Options override the manifest's fields; the report goes to stdout or
``--output-file`` in the format asked; :func:`exit_code` is the exit policy
(130 interrupted, 4 when open ports break ``--allow-open``, else 0).

Output is all or nothing: ``--output-file`` is written to a temporary file
beside it and renamed over it only once the report is complete (so a failed
run never truncates an old report); a write error ends the scan (and every
worker) with one line and exit 3, a broken pipe ends it quietly (exit 141).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, TextIO

from portolan import errors
from portolan.cli import exits

if TYPE_CHECKING:
    import rich.progress

    from portolan.capture import recording
    from portolan.engine import plans
    from portolan.inventory import listening as inventory_listening
    from portolan.models import results, scanjobs


def _spec_from(args: argparse.Namespace) -> tuple[scanjobs.ScanJobSpec, str]:
    from portolan.models import scanjobs

    if args.file:
        from portolan.cli import manifesting  # YAML is loaded only when a manifest is read

        job = manifesting.load(args.file)
    elif args.targets:
        job = scanjobs.ScanJob.model_validate(
            {"apiVersion": "portolan.dev/v1alpha1", "kind": "ScanJob",
             "spec": {"targets": {"addresses": list(args.targets)}}}
        )
    else:
        from portolan.cli import manifesting

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
        updates["ports"] = args.ports.lower()  # named sets are case-blind, as the parser is
    if args.udp_ports:
        updates["udp_ports"] = args.udp_ports.lower()
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
        updates["expect"] = {"allowed_open_ports": args.allow_open.lower()}
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


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Run ``portolan scan`` with parsed options; returns the exit code."""
    from portolan.cli import rendering
    from portolan.engine import stopping

    if args.output not in rendering.FORMATS:
        raise errors.SpecError(
            f"unknown output format {args.output!r}; use one of {', '.join(rendering.FORMATS)}"
        )
    listening = getattr(args, "listeners", False)
    if listening and args.output not in ("table", "json", "jsonl"):
        raise errors.SpecError(f"--listeners works with table, json and jsonl output, not {args.output!r}")
    _check_options(args)
    plan, spec = _planned(args)
    with stopping.on_signals(threading.Event()) as stop, _output(args.output_file) as out:
        inside = _Inside.taken() if listening else None  # before the scan: its own UDP sockets are not listeners
        report = _judged(_scanned(args, argv, spec, plan, out, stop, inside), spec)
        with _writing(args.output_file):
            if inside is not None:
                inside.write(report, args.output, out)
            elif args.output != "jsonl":  # JSONL was streamed while scanning
                rendering.write_report(report, args.output, out)
            out.flush()
        for port in report.unexpected_open:
            name = f" ({port.service.name})" if port.service else ""
            print(f"unexpected open port: {port.host}:{port.port}/{port.protocol.value}{name} "
                  f"(allowed: {report.allowed_open_ports or 'none'})", file=sys.stderr)
    return exit_code(report)


DEFAULT_MAX_PROBES = 1 << 21  # 2,097,152 probes (32 hosts x every port); --max-probes raises it


def _check_options(args: argparse.Namespace) -> None:
    """Options the models do not check, refused before anything is sent."""
    from portolan.engine import workers

    budget = args.udp_budget
    if not math.isfinite(budget) or budget < 0:
        raise errors.SpecError(f"--udp-budget must be a finite number of seconds >= 0, not {budget}")
    if args.workers is not None and not 1 <= args.workers <= workers.MAX_WORKERS:
        raise errors.SpecError(f"--workers must be between 1 and {workers.MAX_WORKERS}, not {args.workers}")
    if args.max_probes is not None and args.max_probes < 1:
        raise errors.SpecError(f"--max-probes must be at least 1, not {args.max_probes}")


@contextlib.contextmanager
def _writing(path: str | None) -> Iterator[None]:
    """Map a failed write of the report to OutputError (OutputClosed for a broken pipe)."""
    try:
        yield
    except BrokenPipeError as exc:
        raise errors.OutputClosed("the reader of the report went away") from exc
    except OSError as exc:
        where = path or "standard output"
        raise errors.OutputError(f"cannot write the report to {where}: {exc.strerror or exc}") from exc


def _planned(args: argparse.Namespace) -> tuple[plans.Plan, scanjobs.ScanJobSpec | None]:
    """The scan's plan, and its spec when the options needed the models to build one."""
    from portolan.engine import plans

    max_probes = DEFAULT_MAX_PROBES if args.max_probes is None else args.max_probes
    fast = _fast_plan(args, max_probes)
    if fast is not None:
        return fast, None
    spec = _validated_spec(args)
    return plans.expand(spec, max_probes=max_probes), spec


_TIMING_OPTIONS = ("rate", "host_rate", "concurrency", "retries", "max_rtt_timeout", "initial_rtt_timeout")


def _fast_plan(args: argparse.Namespace, max_probes: int) -> plans.Plan | None:
    """The plan of a command-line scan that needs no model validation, built without pydantic; else None.

    Targets and ports on the command line, with the options that only pick defaults' alternatives
    (``-p``, ``--udp-ports``, ``--exclude``, ``-t``/``-u``, ``--syn``, ``--no-service``,
    ``--verify``): their values are checked against the same limits as the models
    (:mod:`portolan.models.rules`, :mod:`portolan.models.defaults`), and anything that would fail
    there returns None, so the models give their usual message.  A manifest, timing options or
    ``--allow-open`` take the models' path.  This saves pydantic's import and model building
    (~60 ms, a third of a small scan's wall time); a test checks both paths plan alike.
    """
    if args.file or not args.targets or args.allow_open is not None:
        return None
    if any(getattr(args, name) is not None for name in _TIMING_OPTIONS):
        return None
    import re

    from portolan.engine import plans
    from portolan.models import defaults, rules

    exclude = list(args.exclude or [])
    for expressions in (args.targets, exclude):
        if len(expressions) > rules.TARGETS_MAX_ITEMS or any(
                len(text) > rules.TARGET_MAX_LENGTH for text in expressions):
            return None
    ports = args.ports.lower() if args.ports else defaults.PORTS
    udp_ports = args.udp_ports.lower() if args.udp_ports else None
    for text in (ports, udp_ports):
        if text is not None and (len(text) > rules.PORTS_MAX_LENGTH or not re.fullmatch(defaults.PORTS_PATTERN, text)):
            return None
    protocols = [p for p, on in (("tcp", args.tcp), ("udp", args.udp)) if on] or list(defaults.PROTOCOLS)
    return plans.expand_fields(
        list(args.targets), exclude, ports=ports, udp_ports=udp_ports, protocols=protocols,
        service_detection=defaults.SERVICE_DETECTION and not args.no_service,
        verify_open=True if args.verify else defaults.VERIFY_OPEN,
        technique=defaults.Technique.SYN if args.syn else defaults.Technique.CONNECT,
        max_probes=max_probes,
    )


def exit_code(report: results.ScanReport) -> int:
    """The exit policy: interrupted (130) before violations (4) before success (0)."""
    if not report.complete:
        return exits.INTERRUPTED
    return exits.VIOLATIONS if report.unexpected_open else exits.OK


def _validated_spec(args: argparse.Namespace) -> scanjobs.ScanJobSpec:
    """The ScanJob spec the options describe; invalid options raise SpecError (nothing is sent)."""
    import pydantic

    try:
        spec, _name = _spec_from(args)
    except pydantic.ValidationError as exc:  # mapped once, here, for every option
        from portolan.models import problems

        raise errors.SpecError(f"invalid option: {problems.describe(exc)}") from exc
    return spec


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[TextIO]:
    """Where the report goes: stdout, or ``--output-file`` (via a temporary file renamed into place on success).

    A path that exists and is not a regular file (``/dev/null``, ``/dev/stdout``, a FIFO) is written
    directly: renaming over a device would replace it.
    """
    if not path:
        if sys.stdout is None:
            raise errors.OutputError("standard output is closed; give --output-file")
        yield sys.stdout
        return
    import stat

    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise errors.SpecError(f"cannot write {path}: {exc.strerror}") from exc
    if mode is not None and not stat.S_ISREG(mode):
        try:
            out = open(path, "w", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise errors.SpecError(f"cannot write {path}: {exc.strerror}") from exc
        with contextlib.ExitStack() as closing:
            closing.callback(_closed, out, path)
            yield out
        return
    import tempfile  # only --output-file loads it (with shutil, random, bz2...)

    folder, name = os.path.split(os.path.abspath(path))
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise errors.SpecError(f"cannot write {path}: {exc.strerror}") from exc
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, stat.S_IMODE(mode) if mode is not None else 0o666 & ~umask)
        with open(fd, "w", encoding="utf-8") as out:
            yield out
            with _writing(path):
                out.flush()
                os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _closed(out: TextIO, path: str) -> None:
    with _writing(path):
        out.close()


class _Inside:
    """``--listeners``: this host's listeners, taken before the scan, judged by every verdict it streams."""

    def __init__(self, inventory: inventory_listening.Inventory) -> None:
        self.inventory = inventory
        self.verdicts: dict[tuple[str, int, str], results.PortResult] = {}

    @classmethod
    def taken(cls) -> _Inside:
        from portolan.inventory import listening

        return cls(listening.take())

    def record(self, port: results.PortResult) -> None:
        self.verdicts[(port.host, port.port, port.protocol.value)] = port

    def write(self, report: results.ScanReport, fmt: str, out: TextIO) -> None:
        from portolan.cli import inventorying, rendering
        from portolan.inventory import exposure

        judged = exposure.classify(self.inventory.listeners, self.verdicts)
        if fmt == "json":
            out.write(inventorying.merge_json(rendering.render_json(report), judged))
            return
        if fmt == "table":
            rendering.write_report(report, fmt, out)
        inventorying.render_exposures(judged, fmt, out)


def _scanned(args: argparse.Namespace, argv: Sequence[str], spec: scanjobs.ScanJobSpec | None, plan: plans.Plan,
             out: TextIO, stop: threading.Event, inside: _Inside | None = None) -> results.ScanReport:
    """Run the engine (with a progress bar and, if asked, evidence); JSONL lines are streamed to ``out``."""
    from portolan.cli import rendering
    from portolan.engine import payloads, scanning, services

    jsonl = args.output == "jsonl"

    def emit(port: results.PortResult) -> None:
        if inside is not None:
            inside.record(port)
        if jsonl:
            with _writing(args.output_file):
                out.write(rendering.jsonl_line(port) + "\n")

    recorder = _recorder(args, spec, plan)
    try:
        with _Progress(sys.stderr, not args.quiet) as progress:
            report = scanning.run(
                plan,
                on_port=emit if jsonl or inside is not None else None,
                on_progress=progress.update,
                identify=services.Session,
                payloads=payloads.payload_bytes,
                identify_reply=payloads.identify_reply,
                workers=args.workers,
                list_all=args.all_ports,
                stop=stop,
                rate_limit_budget=args.udp_budget,
                tcp_reason_budget=args.tcp_reason_budget,
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
        return report
    finally:
        if recorder is not None:
            with contextlib.suppress(errors.PortolanError):  # never hides the exception on its way out
                recorder.finish()


def _judged(report: results.ScanReport, spec: scanjobs.ScanJobSpec | None) -> results.ScanReport:
    """The report with the open ports that spec.expect does not allow."""
    if spec is None or spec.expect is None:
        return report
    from portolan import evaluation
    from portolan.engine import ports
    from portolan.models import results

    text = spec.expect.allowed_open_ports
    allowed = set(ports.parse_ports(text)) if text else set()
    by_key = {(p.host, p.port, p.protocol.value): p for h in report.hosts for p in h.ports
              if p.state == results.PortState.OPEN}
    _, listed = evaluation.unexpected_open(
        allowed, [("local", h, p, proto, None) for h, p, proto in by_key], limit=len(by_key))
    report.allowed_open_ports = text
    report.unexpected_open = [by_key[(v[1], v[2], v[3])] for v in listed]
    return report


def _recorder(args: argparse.Namespace, spec: scanjobs.ScanJobSpec | None,
              plan: plans.Plan) -> recording.Recorder | None:
    """Start recording evidence when --capture-dir asks; a manifest's capture: settings shape the files."""
    wanted = spec.capture if spec is not None else None
    if not args.capture_dir:
        if wanted is not None:
            print(f"note: capture: names the claim {wanted.persistent_volume_claim!r}, which exists only in a "
                  "cluster; pass --capture-dir DIR to record evidence here", file=sys.stderr)
        return None
    import pathlib
    import time

    from portolan.capture import recording  # only scans that record evidence load capture
    from portolan.models import scanjobs

    wanted = wanted or scanjobs.Capture(persistent_volume_claim="local")
    base = pathlib.Path(args.capture_dir) / time.strftime("portolan-%Y%m%dT%H%M%S")
    return recording.Recorder(
        base, (target.address for target in plan.targets), fmt=wanted.format, snaplen=wanted.snap_length,
        compress=wanted.compress,
        rotate_bytes=None if wanted.rotate_megabytes is None else wanted.rotate_megabytes << 20,
    ).start()


