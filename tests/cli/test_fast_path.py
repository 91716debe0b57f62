"""``portolan scan`` from the command line without pydantic: the fast path plans exactly as the models do.

A scan whose options need no model validation (targets and ports on the command line)
is planned from :mod:`portolan.models.defaults` and the models' limits, without
importing pydantic; anything the models would refuse, or options only they check,
goes through the models.  These tests hold the two paths to the same plan, and the
fast one to its promise of not loading pydantic.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from portolan.cli import main, scanning
from portolan.engine import plans

_CAP = scanning.DEFAULT_MAX_PROBES


def _both(argv: list[str]) -> tuple[plans.Plan | None, plans.Plan]:
    args = main.parse(["scan", *argv])
    fast = scanning._fast_plan(args, _CAP)
    slow = plans.expand(scanning._validated_spec(args), max_probes=_CAP)
    return fast, slow


@pytest.mark.parametrize(
    "argv",
    [
        ["127.0.0.1"],
        ["127.0.0.1", "-p", "80"],
        ["127.0.0.1", "::1", "-p", "22,80,1000-1010"],
        ["198.18.0.0/30", "--exclude", "198.18.0.1", "-p", "WEB"],
        ["127.0.0.1", "-u", "-p", "53", "--udp-ports", "53,123"],
        ["127.0.0.1", "-t", "-u", "-p", "databases"],
        ["127.0.0.1", "--syn", "--no-service", "--verify", "-p", "all"],
        ["127.0.0.1-127.0.0.3", "-p", "1-1024"],
    ],
)
def test_a_command_line_scan_is_planned_alike_with_and_without_the_models(argv: list[str]) -> None:
    fast, slow = _both(argv)
    assert fast is not None
    assert fast == slow


@pytest.mark.parametrize(
    "argv",
    [
        ["127.0.0.1", "--retries", "3"],
        ["127.0.0.1", "--rate", "100"],
        ["127.0.0.1", "--allow-open", "22"],
        ["127.0.0.1", "-p", "80;81"],
        ["x" * 300],
    ],
)
def test_options_only_the_models_check_take_the_models_path(argv: list[str]) -> None:
    assert scanning._fast_plan(main.parse(["scan", *argv]), _CAP) is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["scan", "127.0.0.1", "-p", "80;81"], "invalid option: ports: '80;81' is not valid here"),
        (["scan", "x" * 300], "invalid option: spec.targets.addresses.0: String should have at most 256 characters"),
    ],
)
def test_input_the_fast_path_refuses_gets_the_models_message(argv: list[str], message: str,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from portolan import launching

    assert launching.main(argv) == 2
    assert message in capsys.readouterr().err


_PROBE = (
    "import sys\n"
    "from portolan import launching\n"
    "code = launching.main(sys.argv[1:])\n"
    "print('pydantic loaded' if 'pydantic' in sys.modules else 'pydantic not loaded', file=sys.stderr)\n"
    "print('dataclasses loaded' if 'dataclasses' in sys.modules else 'dataclasses not loaded', file=sys.stderr)\n"
    "sys.exit(code)\n"
)


@pytest.mark.lab
@pytest.mark.parametrize(
    ("options", "loaded"),
    [
        (["-p", "80", "-q"], False),
        (["-p", "80", "-q", "-o", "json"], False),
        (["-p", "80", "-q", "--retries", "0"], True),
    ],
)
def test_a_command_line_scan_loads_pydantic_only_when_its_options_need_the_models(
    fresh_netns: str, options: list[str], loaded: bool
) -> None:
    done = subprocess.run(
        ["ip", "netns", "exec", fresh_netns, sys.executable, "-c", _PROBE, "scan", "127.0.0.1", *options],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "80/tcp" in done.stdout or '"port": 80' in done.stdout
    assert ("pydantic loaded" if loaded else "pydantic not loaded") in done.stderr
    if not loaded:  # dataclasses (and inspect) would cost the fast path ~25 ms: its records are NamedTuples
        assert "dataclasses not loaded" in done.stderr


def test_the_command_list_names_every_command_the_parser_has() -> None:
    import argparse

    parser = main.build_parser()
    choices = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert list(choices) == list(main.COMMANDS)


@pytest.mark.parametrize(
    ("argv", "field", "value"),
    [
        (["scan", "127.0.0.1", "--udp-budget", "5"], "udp_budget", 5.0),
        (["listeners", "--port", "22"], "port", 22),
        (["free-port", "--count", "3"], "count", 3),
        (["capture", "-r", "x.pcap", "-c", "2"], "count", 2),
        (["audit", "show", "-o", "json"], "output", "json"),
        (["operator", "--standalone"], "standalone", True),
        (["canary", "--tcp", "80"], "tcp", "80"),
    ],
)
def test_a_command_built_alone_parses_its_own_options(argv: list[str], field: str, value: object) -> None:
    assert getattr(main.parse(argv), field) == value


def test_an_unknown_command_is_refused_with_the_list_of_commands() -> None:
    from portolan import errors

    with pytest.raises(errors.SpecError, match="invalid choice"):
        main.parse(["frobnicate"])
