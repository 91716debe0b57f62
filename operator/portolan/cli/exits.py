"""The CLI's exit codes and the one mapping from Portolan errors to them.

* 0 — done (a scan completed, whatever it found)
* 2 — bad input: a malformed target, port, manifest, option or setting (nothing was sent)
* 3 — the work could not run (sockets, permissions, resources, an unreachable API server)
* 4 — the scan completed and found open ports outside ``expect.allowedOpenPorts`` /
  ``--allow-open`` (a CI gate; the report lists them in ``unexpected_open``)
* 130 — interrupted (Ctrl-C / SIGTERM): the partial report is still written

The shard runtime has exit codes of its own (:mod:`portolan.shard.running`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from portolan import errors

OK = 0
USAGE = 2
FAILED = 3
VIOLATIONS = 4
INTERRUPTED = 130


def guarded(program: str, work: Callable[[], int]) -> int:
    """Run ``work``; a Portolan error becomes one line on stderr, prefixed with the program, and its exit code."""
    try:
        return work()
    except errors.SpecError as exc:
        print(f"{program}: error: {exc}", file=sys.stderr)
        return USAGE
    except errors.PortolanError as exc:
        print(f"{program}: failed: {exc}", file=sys.stderr)
        return FAILED
    except PermissionError as exc:
        print(f"{program}: failed: permission denied: {exc}", file=sys.stderr)
        return FAILED
