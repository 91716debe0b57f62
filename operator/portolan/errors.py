"""The one error hierarchy of Portolan.

Every failure that crosses a module boundary is a :class:`PortolanError`.
Third-party errors are mapped to these once, at the boundary where they are
raised (``raise ... from exc``); kopf's own error types appear only in the
handlers.  Errors carry a CamelCase ``reason`` so the operator can put them
into status conditions and Events unchanged.
"""


class PortolanError(Exception):
    """Base of every error Portolan raises on purpose."""

    reason: str = "Error"


class SpecError(PortolanError, ValueError):
    """The user's input (a manifest, a CLI argument) is invalid.

    The message is meant for humans and names the offending field or value.
    """

    reason = "InvalidSpec"


class TargetError(SpecError):
    """A target (address, CIDR, range, hostname) is malformed or resolves to nothing."""

    reason = "InvalidTarget"


class PortSpecError(SpecError):
    """A port list, range or named set is malformed or empty."""

    reason = "InvalidPorts"


class GuardrailError(SpecError):
    """The spec is well-formed but violates the operator's configured limits."""

    reason = "GuardrailViolated"


class NoInventoryNodesError(SpecError):
    """A pool whose nodes a job asks to inventory has no Ready node."""

    reason = "NoInventoryNodes"


class ScanError(PortolanError):
    """The engine could not carry out a scan (resources, permissions, sockets)."""

    reason = "ScanFailed"


class OutputError(PortolanError):
    """A report or other output cannot be written (a full disk, a closed stream)."""

    reason = "OutputFailed"


class OutputClosed(OutputError):
    """The reader of our output went away (a broken pipe, as with ``| head``): end quietly."""

    reason = "OutputClosed"


class ManifestError(SpecError):
    """A manifest file cannot be read or is not a ScanJob."""

    reason = "InvalidManifest"


class KubeError(PortolanError):
    """A Kubernetes API call failed (``status`` is the HTTP status, None when the server was unreachable).

    Raised only by :mod:`portolan.kube.clients`, which maps the client's errors once.
    """

    reason = "KubernetesApiError"

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
