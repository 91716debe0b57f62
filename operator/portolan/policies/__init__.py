"""NetworkPolicy semantics, pure: what the policies of a cluster say about a connection (:mod:`.evaluating`).

:mod:`.checking` refuses up front what the API server would refuse.  Imports
nothing above :mod:`portolan.models`; the operator feeds it the live policies,
namespaces and pods, the CLI files.  The test bed's enforcer shares no code with
it, and cyclonus judges both.
"""
