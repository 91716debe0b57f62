"""The shard runtime (a program): what runs inside one shard pod.

:mod:`~portolan.shard.running` reads the shard's slice of the plan from the
ScanJob, runs the engine and writes the shard's own status entry.
"""
