"""Reading ScanJob manifests from files, strings and the embedded default.

YAML and pydantic errors are mapped here, once, to :class:`ManifestError`
with a message naming the file and the offending field, so the CLI can print
it and exit non-zero instead of showing a traceback.
"""

from __future__ import annotations

import importlib.resources
import pathlib

import pydantic
import yaml

from portolan import errors
from portolan.models import scanjobs

DEFAULT_NAME = "default-scanjob.yaml"


def _describe(exc: pydantic.ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(item) for item in error["loc"]) or "(root)"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def parse(text: str, source: str = "<manifest>") -> scanjobs.ScanJob:
    """Parse the first ScanJob document of a YAML (or JSON) text."""
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        raise errors.ManifestError(f"{source}: not valid YAML: {exc}") from exc
    for document in documents:
        if isinstance(document, dict) and document.get("kind") == scanjobs.KIND:
            try:
                return scanjobs.ScanJob.model_validate(document)
            except pydantic.ValidationError as exc:
                raise errors.ManifestError(f"{source}: invalid ScanJob: {_describe(exc)}") from exc
    raise errors.ManifestError(f"{source}: no document with kind: ScanJob")


def load(path: str) -> scanjobs.ScanJob:
    """Read a manifest file (``-`` is not supported; give a path)."""
    try:
        text = pathlib.Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise errors.ManifestError(f"cannot read manifest {path}: {exc.strerror}") from exc
    return parse(text, path)


def default() -> scanjobs.ScanJob:
    """The embedded default ScanJob."""
    text = importlib.resources.files("portolan.manifests").joinpath(DEFAULT_NAME).read_text()
    return parse(text, f"<embedded {DEFAULT_NAME}>")
