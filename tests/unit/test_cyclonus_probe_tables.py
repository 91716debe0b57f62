"""Reading cyclonus's probe-mode output: each probe's Combined table, matched to the probe logged for it."""

from __future__ import annotations

import pytest

from harness import cyclonusprobe

TABLE = """Ingress:
+-----+-----+-----+
|     | X/A | Y/B |
+-----+-----+-----+
| x/a | {ia} | .   |
| y/b | X   | .   |
+-----+-----+-----+

Egress:
+-----+-----+-----+
|     | X/A | Y/B |
+-----+-----+-----+
| x/a | .   | .   |
| y/b | .   | .   |
+-----+-----+-----+

Combined:
+-----+-----+-----+
|     | X/A | Y/B |
+-----+-----+-----+
| x/a | {ca} | .   |
| y/b | X   | {cb} |
+-----+-----+-----+


"""
LOG = ('time="t" level=info msg="log level set to \'info\'"\n'
       'time="t" level=info msg="probe on port 80, protocol TCP"\n'
       'time="t" level=info msg="probe on port 53, protocol UDP"\n')


def test_each_probes_combined_table_is_read_under_the_probe_logged_for_it() -> None:
    stdout = "probe:\n" + TABLE.format(ia=".", ca=".", cb=".") + TABLE.format(ia="X", ca="X", cb="N")
    stdout += TABLE.format(ia=".", ca=".", cb=".").replace("| x/a", "| q/q")  # the live cluster's, not a probe
    found = cyclonusprobe.parse(stdout, LOG)
    assert found == {
        ("x/a", "x/a", "tcp/80"): True, ("x/a", "y/b", "tcp/80"): True,
        ("y/b", "x/a", "tcp/80"): False, ("y/b", "y/b", "tcp/80"): True,
        ("x/a", "x/a", "udp/53"): False, ("x/a", "y/b", "udp/53"): True,
        ("y/b", "x/a", "udp/53"): False,  # N (no such port on y/b) is no verdict
    }


def test_output_without_tables_is_an_error_not_an_empty_matrix() -> None:
    with pytest.raises(RuntimeError, match="no probe tables"):
        cyclonusprobe.parse("probe:\n", LOG)
