"""The ``portolan`` command line (a program): local scans, capture, generated files, and the launchers.

Modules: :mod:`~portolan.cli.main` (argument parsing, exit codes, dispatch),
:mod:`~portolan.cli.scanning` (``portolan scan``), :mod:`~portolan.cli.capturing`
(``portolan capture``), :mod:`~portolan.cli.manifesting` (reading ScanJob
manifests) and :mod:`~portolan.cli.rendering` (table, JSON, JSONL, nmap XML and
JUnit reports).  ``portolan operator`` and ``portolan shard`` only hand over to
the other programs; the CLI imports neither (they are loaded by name at run time).
"""
