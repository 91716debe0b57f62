"""Port expressions: lists, ranges and named sets.

Grammar: a comma-separated list of items, each one of

* a number ``0``-``65535``
* a range ``1000-2000``, open ranges ``-1024`` (from 1) and ``60000-`` (to 65535)
* a named set (below); ``all`` is every port 1-65535

The named sets are ours, written by hand from the IANA registry and common
practice; they are not nmap's frequency tables (which are NPSL-licensed).
"""

from __future__ import annotations

from portolan import errors

WEB = (80, 81, 443, 591, 3000, 4443, 5000, 8000, 8008, 8080, 8081, 8088, 8443, 8888, 9000, 9443)
DATABASES = (
    1433, 1521, 2379, 2380, 3306, 5432, 5984, 6379, 7000, 7001, 8086, 9042, 9200, 9300,
    11211, 26257, 27017, 27018, 28015,
)
KUBERNETES = (
    179, 2379, 2380, 4194, 6443, 9099, 9100, 10249, 10250, 10255, 10256, 10257, 10259, 30000,
)
MAIL = (25, 110, 143, 465, 587, 993, 995)
REMOTE = (22, 23, 2222, 3389, 5900, 5901, 5985, 5986)
INFRA = (
    21, 53, 69, 88, 111, 123, 135, 137, 139, 161, 389, 445, 514, 515, 631, 636, 873, 1080,
    1194, 1723, 1883, 2049, 3128, 5060, 5353, 5672, 8883, 9090, 9092, 15672,
)

NAMED_SETS: dict[str, tuple[int, ...]] = {
    "web": WEB,
    "databases": DATABASES,
    "kubernetes": KUBERNETES,
    "mail": MAIL,
    "remote": REMOTE,
    "common": tuple(sorted(set(WEB + DATABASES + KUBERNETES + MAIL + REMOTE + INFRA))),
    "well-known": tuple(range(1, 1024)),
    "all": tuple(range(1, 65536)),
}

MAX_PORT = 65535


def _number(text: str, expression: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise errors.PortSpecError(f"malformed port {text!r} in {expression!r}")
    if len(text.lstrip("0")) > len(str(MAX_PORT)):
        raise errors.PortSpecError(f"port {text[:12]}... is out of range 0-{MAX_PORT}")
    value = int(text)
    if value > MAX_PORT:
        raise errors.PortSpecError(f"port {value} is out of range 0-{MAX_PORT} in {expression!r}")
    return value


def parse_ports(expression: str) -> list[int]:
    """Expand a port expression into a sorted list of unique ports."""
    ports: set[int] = set()
    items = [item.strip() for item in expression.split(",")]
    if not expression.strip():
        raise errors.PortSpecError("empty port expression")
    for item in items:
        if not item:
            raise errors.PortSpecError(f"empty item in port expression {expression!r}")
        named = NAMED_SETS.get(item.lower())
        if item == "-":
            raise errors.PortSpecError(
                f"port item '-' in {expression!r} is ambiguous; say 'all' (or 1-65535) for every port"
            )
        if named is not None:
            ports.update(named)
        elif "-" in item:
            first_text, _, last_text = item.partition("-")
            first = _number(first_text, expression) if first_text else 1
            last = _number(last_text, expression) if last_text else MAX_PORT
            if last < first:
                raise errors.PortSpecError(f"port range {item!r} ends before it starts")
            ports.update(range(first, last + 1))
        elif item.isascii() and item.isdigit():
            ports.add(_number(item, expression))
        else:
            known = ", ".join(sorted(NAMED_SETS))
            raise errors.PortSpecError(
                f"unknown port item {item!r} in {expression!r} (named sets: {known})"
            )
    return sorted(ports)
