"""The API group, version, kinds and plurals of Portolan's resources, without pydantic.

The models (:mod:`portolan.models.scanjobs`, :mod:`~portolan.models.statuses`,
:mod:`~portolan.models.audits`) take their names from here, and so does the shard's
small REST client, which must not load the models to build a path.  Limits: names only.
"""

from __future__ import annotations

API_GROUP = "portolan.dev"
API_VERSION = "v1alpha1"

SCANJOB = "ScanJob"
SCANJOBS = "scanjobs"
SCANSHARD = "ScanShard"
SCANSHARDS = "scanshards"
AUDIT = "ReachabilityAudit"
AUDITS = "reachabilityaudits"
