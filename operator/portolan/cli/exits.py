"""The CLI's exit codes and the one mapping from Portolan errors to them.

* 0 — done (a scan completed, whatever it found)
* 2 — bad input: a malformed target, port, manifest, option or setting (nothing was sent)
* 3 — the work could not run (sockets, permissions, resources, an unreachable API server)
* 4 — the scan completed and found open ports outside ``expect.allowedOpenPorts`` /
  ``--allow-open`` (a CI gate; the report lists them in ``unexpected_open``)
* 130 — interrupted (Ctrl-C / SIGTERM): the partial report is still written
* 141 — the reader of stdout went away (``| head``): nothing is printed, as a
  Unix tool killed by SIGPIPE (128 + 13) would end

Every failure is one line on stderr, never a traceback: Portolan's own errors
are mapped here, and so are the few the platform raises outside them (memory,
recursion, permissions, an unexpected OSError).

The shard runtime has exit codes of its own (:mod:`portolan.shard.running`).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable

from portolan import errors

OK = 0
USAGE = 2
FAILED = 3
VIOLATIONS = 4
INTERRUPTED = 130
BROKEN_PIPE = 141


def guarded(program: str, work: Callable[[], int]) -> int:
    """Run ``work``; a Portolan error becomes one line on stderr, prefixed with the program, and its exit code."""
    try:
        return work()
    except (errors.OutputClosed, BrokenPipeError):
        quiet_stdout()
        return BROKEN_PIPE
    except errors.SpecError as exc:
        say(f"{program}: error: {exc}")
        return USAGE
    except errors.PortolanError as exc:
        say(f"{program}: failed: {exc}")
        return FAILED
    except PermissionError as exc:
        say(f"{program}: failed: permission denied: {exc}")
        return FAILED
    except MemoryError:
        say(f"{program}: failed: out of memory")
        return FAILED
    except RecursionError:
        say(f"{program}: error: the input is nested too deeply")
        return USAGE
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        say(f"{program}: failed: {exc.strerror or exc}{where}")
        return FAILED
    except KeyboardInterrupt:
        return INTERRUPTED


def say(line: str) -> None:
    """One line on stderr (a multi-line message is folded), if there is a stderr."""
    line = " ".join(part.strip() for part in line.splitlines() if part.strip())
    if sys.stderr is not None:
        with contextlib.suppress(OSError):
            print(line, file=sys.stderr, flush=True)


def quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's last flush cannot complain about a broken pipe."""
    try:
        if sys.stdout is not None:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
    except (OSError, ValueError):
        pass
