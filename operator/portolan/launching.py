"""The ``portolan`` entry point: parse the command line, then hand over to one of the three programs.

The only module above the programs: ``portolan operator`` goes to
:mod:`portolan.controller`; ``portolan shard``, ``probe`` and ``canary`` (what
runs inside the pods the operator creates) to :mod:`portolan.shard`; every
other command to :mod:`portolan.cli`.  Each program is imported only when its
command runs, so a local scan never loads kopf or the kubernetes client.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from portolan import errors
from portolan.cli import exits
from portolan.cli import main as cli


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``portolan`` with these arguments (default: sys.argv); returns the exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        args = cli.parse(arguments)
    except errors.SpecError as exc:
        print(f"portolan: error: {exc}", file=sys.stderr)
        return exits.USAGE
    if args.command == "operator":
        def operate() -> int:
            import os

            from portolan.controller import handlers

            return handlers.run(args.settings, args.namespace or [], standalone=args.standalone,
                                verbose=args.verbose, settings_text=os.environ.get("PORTOLAN_SETTINGS"))

        return exits.guarded("portolan operator", operate)
    if args.command == "shard":
        from portolan.shard import running

        return exits.guarded("portolan shard", running.main)
    if args.command == "probe":
        from portolan.shard import probing

        return exits.guarded("portolan probe", probing.main)
    if args.command == "canary":
        from portolan.shard import echoing

        return exits.guarded("portolan canary", lambda: echoing.main(args.tcp, args.udp))
    return cli.run(args, arguments)
