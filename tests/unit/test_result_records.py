"""Scan records (``models.results``): their one JSON form is the one pydantic's models wrote."""

from __future__ import annotations

import json

from portolan.models import results


def _report() -> results.ScanReport:
    port = results.PortResult(
        host="198.18.0.1", port=22, protocol=results.Protocol.TCP, state=results.PortState.OPEN,
        reason=results.Reason.SYN_ACK, rtt_ms=0.5,
        service=results.ServiceInfo(name="ssh", product="OpenSSH", banner="SSH-2.0-OpenSSH_9.2 \u00e9\u2028"),
    )
    return results.ScanReport(
        version="0.1.0", started=1, finished=2,
        hosts=[results.HostResult(address="198.18.0.1", ports=[port], extraports=[
            results.ExtraPorts(protocol=results.Protocol.TCP, state=results.PortState.CLOSED,
                               reason=results.Reason.CONN_REFUSED, count=30)])],
        summary=results.ScanSummary(hosts=1, probes=31, states={"closed": 30, "open": 1}, duration_seconds=float("inf")),
        notes=[results.ScanNote(code="IcmpRateLimited", message="m")],
    )


def test_a_report_is_written_with_fields_in_order_none_left_out_and_enums_as_values() -> None:
    data = json.loads(results.as_json(_report()))
    assert list(data) == ["scanner", "version", "args", "started", "finished", "complete", "hosts", "summary", "notes",
                          "unexpected_open"]
    assert list(data["hosts"][0]["ports"][0]) == ["host", "port", "protocol", "state", "reason", "rtt_ms", "tries", "service"]
    assert data["hosts"][0]["extraports"] == [{"protocol": "tcp", "state": "closed", "reason": "conn-refused", "count": 30}]
    assert data["notes"] == [{"code": "IcmpRateLimited", "message": "m"}]


def test_floats_are_written_as_pydantic_wrote_them_and_text_is_not_escaped() -> None:
    text = results.as_json(_report())
    assert '"started":1.0,"finished":2.0' in text  # times given as ints are floats
    assert '"duration_seconds":null' in text  # not finite: null, never Infinity
    assert "OpenSSH_9.2 \u00e9\u2028" in text


def test_indented_json_uses_two_spaces_and_a_space_after_colons() -> None:
    assert results.as_json(results.Progress(done=1, total=2), indent=2) == '{\n  "done": 1,\n  "total": 2,\n  "open": 0\n}'
