"""Rendering scan reports: a human table, JSON, JSON Lines and nmap-compatible XML.

Pure functions of a :class:`~portolan.models.results.ScanReport`: no clock
reads, no I/O beyond the stream handed to :func:`write_report`.  The XML
follows nmap's ``-oX`` structure (``nmaprun/host/ports/port/state/service``,
``extraports``, ``runstats``) so tools that read nmap XML read ours.
"""

from __future__ import annotations

import collections
import datetime
import ipaddress
from typing import TextIO

from portolan import errors
from portolan.models import results

FORMATS = ("table", "json", "jsonl", "xml", "junit")


def _port_cell(port: results.PortResult) -> str:
    return f"{port.port}/{port.protocol.value}"


def _service_text(port: results.PortResult) -> tuple[str, str]:
    if port.service is None:
        return "", ""
    info = port.service
    version = " ".join(part for part in (info.product, info.version) if part)
    return info.name, version


def render_table(report: results.ScanReport) -> str:
    """nmap-like plain text: one block per host, then notes and a summary line."""
    lines: list[str] = []
    for host in report.hosts:
        title = f"{host.hostname} ({host.address})" if host.hostname else host.address
        lines.append(f"Scan report for {title}")
        for extra in host.extraports:
            lines.append(
                f"Not shown: {extra.count} {extra.state.value} {extra.protocol.value} ports "
                f"({extra.reason.value})"
            )
        if host.ports:
            rows = [("PORT", "STATE", "SERVICE", "REASON", "VERSION")]
            for port in host.ports:
                name, version = _service_text(port)
                rows.append(
                    (_port_cell(port), port.state.value, name, port.reason.value, version)
                )
            widths = [max(len(row[i]) for row in rows) for i in range(4)]
            for row in rows:
                cells = [row[i].ljust(widths[i]) for i in range(4)] + [row[4]]
                lines.append("  ".join(cells).rstrip())
        lines.append("")
    for note in report.notes:
        where = f" {note.host}" if note.host else ""
        lines.append(f"Note ({note.code}{where}): {note.message}")
    states = ", ".join(f"{count} {state}" for state, count in report.summary.states.items())
    status = "" if report.complete else " (interrupted: partial results)"
    lines.append(
        f"Portolan done: {report.summary.hosts} host(s), {report.summary.probes} probes "
        f"({states}) in {report.summary.duration_seconds:.2f} s{status}"
    )
    return "\n".join(lines) + "\n"


def render_json(report: results.ScanReport) -> str:
    """The whole report as indented JSON."""
    return results.as_json(report, indent=2) + "\n"


def jsonl_line(port: results.PortResult) -> str:
    """One port result as one JSON line."""
    return results.as_json(port)


def render_jsonl(report: results.ScanReport) -> str:
    """One JSON line per listed port."""
    return "".join(jsonl_line(port) + "\n" for host in report.hosts for port in host.ports)


def _timestr(stamp: float) -> str:
    return datetime.datetime.fromtimestamp(stamp, tz=datetime.UTC).strftime("%a %b %d %H:%M:%S %Y")


def render_nmap_xml(report: results.ScanReport) -> str:
    """nmap ``-oX``-compatible XML."""
    import xml.etree.ElementTree as ElementTree  # only XML reports load it

    root = ElementTree.Element(
        "nmaprun",
        scanner="portolan",
        args=report.args,
        start=str(int(report.started)),
        startstr=_timestr(report.started),
        version=report.version,
        xmloutputversion="1.05",
    )
    protocols: dict[str, set[int]] = collections.defaultdict(set)
    for host in report.hosts:
        for port in host.ports:
            protocols[port.protocol.value].add(port.port)
    for protocol, ports in sorted(protocols.items()):
        ElementTree.SubElement(
            root, "scaninfo", type="connect" if protocol == "tcp" else "udp", protocol=protocol,
            numservices=str(len(ports)), services=",".join(str(p) for p in sorted(ports)),
        )
    for host in report.hosts:
        node = ElementTree.SubElement(root, "host")
        ElementTree.SubElement(node, "status", state="up", reason="user-set", reason_ttl="0")
        family = "ipv6" if ipaddress.ip_address(host.address).version == 6 else "ipv4"
        ElementTree.SubElement(node, "address", addr=host.address, addrtype=family)
        if host.hostname:
            names = ElementTree.SubElement(node, "hostnames")
            ElementTree.SubElement(names, "hostname", name=host.hostname, type="user")
        ports_node = ElementTree.SubElement(node, "ports")
        for extra in host.extraports:
            group = ElementTree.SubElement(
                ports_node, "extraports", state=extra.state.value, count=str(extra.count)
            )
            ElementTree.SubElement(
                group, "extrareasons", reason=extra.reason.value, count=str(extra.count),
                proto=extra.protocol.value,
            )
        for port in host.ports:
            port_node = ElementTree.SubElement(
                ports_node, "port", protocol=port.protocol.value, portid=str(port.port)
            )
            ElementTree.SubElement(
                port_node, "state", state=port.state.value, reason=port.reason.value,
                reason_ttl=str(port.reason_ttl or 0),
            )
            if port.service is not None:
                attributes = {"name": port.service.name}
                if port.service.product:
                    attributes["product"] = port.service.product
                if port.service.version:
                    attributes["version"] = port.service.version
                if port.service.tls:
                    attributes["tunnel"] = "ssl"
                probed = port.service.method != "port"
                attributes["method"] = "probed" if probed else "table"
                attributes["conf"] = "10" if probed else "3"
                ElementTree.SubElement(port_node, "service", attributes)
    stats = ElementTree.SubElement(root, "runstats")
    ElementTree.SubElement(
        stats, "finished", time=str(int(report.finished)), timestr=_timestr(report.finished),
        elapsed=f"{report.summary.duration_seconds:.2f}",
        exit="success" if report.complete else "error",
    )
    count = str(len(report.hosts))
    ElementTree.SubElement(stats, "hosts", up=count, down="0", total=count)
    ElementTree.indent(root)
    body = ElementTree.tostring(root, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE nmaprun>\n' + body + "\n"


def render_junit(report: results.ScanReport) -> str:
    """JUnit XML for CI: a suite per host, a test case per open port; unexpected ones fail."""
    import xml.etree.ElementTree as ElementTree  # only XML reports load it

    unexpected = {(p.host, p.port, p.protocol) for p in report.unexpected_open}
    allowed = report.allowed_open_ports
    root = ElementTree.Element("testsuites", name="portolan", time=f"{report.summary.duration_seconds:.3f}")
    total = failures = 0
    for host in report.hosts:
        suite = ElementTree.SubElement(root, "testsuite", name=host.address)
        cases = fails = 0
        for port in host.ports:
            if port.state != results.PortState.OPEN:
                continue
            name, version = _service_text(port)
            label = f"{_port_cell(port)} open" + (f" ({' '.join(x for x in (name, version) if x)})" if name else "")
            case = ElementTree.SubElement(suite, "testcase", classname=f"portolan.{host.address}", name=label)
            cases += 1
            if (port.host, port.port, port.protocol) in unexpected:
                fails += 1
                ElementTree.SubElement(case, "failure", type="UnexpectedOpenPort",
                                       message=f"{_port_cell(port)} is open; allowed: {allowed or 'none'}")
        if not cases:
            ElementTree.SubElement(suite, "testcase", classname=f"portolan.{host.address}", name="no open ports")
            cases = 1
        suite.set("tests", str(cases))
        suite.set("failures", str(fails))
        total += cases
        failures += fails
    root.set("tests", str(total))
    root.set("failures", str(failures))
    if report.notes:
        ElementTree.SubElement(root, "system-out").text = "\n".join(f"{n.code}: {n.message}" for n in report.notes)
    ElementTree.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(root, encoding="unicode") + "\n"


def write_report(report: results.ScanReport, fmt: str, stream: TextIO) -> None:
    """Write a report in one of :data:`FORMATS`."""
    renderers = {
        "table": render_table,
        "json": render_json,
        "jsonl": render_jsonl,
        "xml": render_nmap_xml,
        "junit": render_junit,
    }
    renderer = renderers.get(fmt)
    if renderer is None:
        raise errors.SpecError(f"unknown output format {fmt!r}; use one of {', '.join(FORMATS)}")
    stream.write(renderer(report))


def column_letter(index: int) -> str:
    """a..z, then a1..z1, ...: a column's name in a truth table's header (its last character) and legend."""
    return chr(ord("a") + index % 26) + (str(index // 26) if index >= 26 else "")
