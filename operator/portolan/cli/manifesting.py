"""Reading ScanJob manifests from files, strings and the embedded default.

YAML and pydantic errors are mapped here, once, to :class:`ManifestError`
with a message naming the file and the offending field, so the CLI can print
it and exit non-zero instead of showing a traceback.  A manifest is at most
:data:`MAX_BYTES` (``-f /dev/zero`` is refused after 1 MiB, not read until
memory runs out), must be UTF-8, and may nest at most as deep as Python's
recursion allows the YAML parser (deeper is one error, not a RecursionError).
"""

from __future__ import annotations

import importlib.resources
import pathlib

import pydantic
import yaml

from portolan import errors
from portolan.models import problems, scanjobs

DEFAULT_NAME = "default-scanjob.yaml"
MAX_BYTES = 1 << 20


def parse(text: str, source: str = "<manifest>") -> scanjobs.ScanJob:
    """Parse the first ScanJob document of a YAML (or JSON) text."""
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        raise errors.ManifestError(f"{source}: not valid YAML: {problems.yaml_problem(exc)}") from exc
    except RecursionError as exc:
        raise errors.ManifestError(f"{source}: the YAML is nested too deeply") from exc
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
        with pathlib.Path(path).open("rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise errors.ManifestError(f"cannot read manifest {path}: {exc.strerror}") from exc
    if len(data) > MAX_BYTES:
        raise errors.ManifestError(f"manifest {path} is larger than {MAX_BYTES >> 20} MiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise errors.ManifestError(f"manifest {path} is not UTF-8 text (byte {exc.start})") from exc
    return parse(text, path)


def default() -> scanjobs.ScanJob:
    """The embedded default ScanJob."""
    text = importlib.resources.files("portolan.manifests").joinpath(DEFAULT_NAME).read_text()
    return parse(text, f"<embedded {DEFAULT_NAME}>")

