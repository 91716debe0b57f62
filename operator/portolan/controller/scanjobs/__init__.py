"""The ScanJob controller.

:mod:`.planning` splits a job into shards; :mod:`.reconciling` is the pure
``reconcile(Observed) -> Actions`` and the ``step`` that does the I/O around
it; the phases it goes through live in :mod:`.runs` (the state of one pass),
:mod:`.driving` (shard pods: create, retry, fail, suspend, deadline) and
:mod:`.concluding` (phase, conditions, expectations, TTL).
"""
