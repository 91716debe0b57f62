"""Names and timestamps of Portolan's Kubernetes objects, without the models.

Pure functions shared by the builders (:mod:`portolan.kube.builders`, which re-export
them) and the shard program, which must not load pydantic to name its ScanShard or
stamp a heartbeat.  Limits: strings only; nothing here reads or writes the API.
"""

from __future__ import annotations

import datetime


def timestamp(now: datetime.datetime) -> str:
    """An RFC 3339 UTC timestamp, to the second, as Kubernetes writes them."""
    return now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def bounded_name(text: str, limit: int = 63) -> str:
    """``text`` if it is at most ``limit`` characters, else a prefix and a hash of the whole (a label value, a DNS label).

    Label values and DNS labels stop at 63 characters; a cut alone would make two long
    names that share a prefix one, so the hash of the whole keeps them apart.
    """
    if len(text) <= limit:
        return text
    import hashlib  # OpenSSL's bindings cost ~8 ms to load: only long names pay it

    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{text[:limit - 9].rstrip('-._')}-{digest}"


def scan_shard_name(job: str, shard_id: str) -> str:
    """The name of a job's ScanShard object for one shard (a DNS subdomain; hashed when too long)."""
    return bounded_name(f"{job}-{shard_id}", 253)
