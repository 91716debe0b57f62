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
from portolan.models import problems, scanjobs

DEFAULT_NAME = "default-scanjob.yaml"


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
                raise errors.ManifestError(f"{source}: invalid ScanJob: {problems.describe(exc)}") from exc
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
