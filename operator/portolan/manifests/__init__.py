"""Manifests shipped inside the package (the embedded default ScanJob)."""
