"""The ScanJob controller: :mod:`.planning` splits a job into shards, :mod:`.reconciling` drives it."""
