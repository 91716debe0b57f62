"""CEL validation rules for the generated CRDs: what the API server checks at ``kubectl apply``.

Everything that needs no cluster state is checked here a first time: port
expression syntax and range, named sets, target syntax (the API server's CEL
``isIP``/``isCIDR`` libraries).  The rules accept a superset of what the
engine's parsers accept (never the reverse), so the operator's own checks stay
the second line: a range that ends before it starts, an IPv6 range across
families or a name that does not resolve still become ``Accepted=False``.
Only strings live here; the models attach them with ``json_schema_extra``.
"""

from __future__ import annotations

from typing import Any

NAMED_PORT_SETS = ("all", "common", "databases", "kubernetes", "mail", "remote", "web", "well-known")

PORTS_MAX_LENGTH = 4096
TARGET_MAX_LENGTH = 256
TARGETS_MAX_ITEMS = 1024

_HOSTNAME = (r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"
             r"(\\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)*\\.?$")


# 0-65535, leading zeros allowed (the engine reads "0022" as 22).
_PORT = r"0*(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
_ITEM = f" *({'|'.join(NAMED_PORT_SETS)}|{_PORT}|({_PORT})?-({_PORT})?) *"
# One regular expression (linear cost) rather than a split: the API server's cost estimate of a
# split over a 4 KiB string is far over budget.  A range that ends before it starts passes here
# and is the operator's to refuse.
PORTS_RULE = f"self.matches('^{_ITEM}(,{_ITEM})*$')"
PORTS_MESSAGE = (
    "'port expression \"' + self + '\": every comma-separated item must be a port 0-65535, a range "
    "first-last within 0-65535, or a named set "
    f"({', '.join(NAMED_PORT_SETS)})'"
)


def ports_schema(*, empty_allowed: bool) -> dict[str, Any]:
    """Schema extras for a port expression field."""
    rule = f"self.trim() == '' || {PORTS_RULE}" if empty_allowed else PORTS_RULE
    return {"x-kubernetes-validations": [
        {"rule": rule, "messageExpression": PORTS_MESSAGE, "reason": "FieldValueInvalid"}]}


def _target(t: str) -> str:
    first = f"{t}.split('-')[0]"
    last = f"{t}.split('-')[1]"
    return (
        f"isIP({t}) || isCIDR({t})"
        f" || ({t}.startsWith('[') && {t}.endsWith(']') && isIP({t}.substring(1, {t}.size() - 1)))"
        f" || ({t}.matches('^[0-9A-Fa-f:.]+-[0-9A-Fa-f:.]+$') && isIP({first})"
        f" && ((isIP({last}) && ip({first}).family() == ip({last}).family())"
        f" || (ip({first}).family() == 4 && {last}.matches('^[0-9]{{1,3}}$') && int({last}) <= 255)))"
        f" || (!{t}.matches('^[0-9.-]+$') && {t}.matches('{_HOSTNAME}'))"
    )


TARGET_RULE = _target("self.trim()")
TARGET_MESSAGE = (
    "'target \"' + self + '\" is not an IP address, a CIDR (198.18.0.0/24), a range "
    "(198.18.0.1-198.18.0.9 or 198.18.0.1-9) or a hostname'"
)


def target_schema() -> dict[str, Any]:
    """Schema extras for one target expression (an item of ``addresses`` or ``exclude``)."""
    return {"x-kubernetes-validations": [
        {"rule": TARGET_RULE, "messageExpression": TARGET_MESSAGE, "reason": "FieldValueInvalid"}]}
