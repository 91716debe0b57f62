"""Pod programs for the network tests: a server that names itself and a prober of many targets.

``python -m harness.netprobe serve '[["tcp", 80], ["udp", 53]]'`` listens on every
(protocol, port) of the list and answers each TCP connection or UDP datagram with the pod's
name (``$HOSTNAME``), so a client knows which pod answered.

``python -m harness.netprobe probe TIMEOUT '[["198.19.1.2", "tcp", 80], ...]'`` tries every
target at once and prints one JSON list of outcomes, in order: ``"ok <name>"`` (connected and
answered; ``"ok "`` for a TCP server that stays silent), ``"refused"`` (TCP reset or ICMP unreachable/prohibited), ``"timeout"``.  Run inside
a pod's namespace (``ip netns exec``) it is a real connection from that pod.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import socket
import sys
import threading


def _serve_tcp(port: int, name: bytes) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", port))
    listener.listen(128)
    while True:
        conn, _ = listener.accept()
        try:
            conn.sendall(name)
        except OSError:
            pass
        finally:
            conn.close()


def _serve_udp(port: int, name: bytes) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", port))
    while True:
        _, peer = sock.recvfrom(2048)
        sock.sendto(name, peer)


def serve(spec: list[tuple[str, int]]) -> None:
    name = os.environ.get("HOSTNAME", "unknown").encode()
    threads = [threading.Thread(target=_serve_tcp if proto == "tcp" else _serve_udp, args=(port, name), daemon=True)
               for proto, port in spec]
    for thread in threads:
        thread.start()
    print("ready", flush=True)
    for thread in threads:
        thread.join()


def probe_one(address: str, proto: str, port: int, timeout: float) -> str:
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect((address, port))
            if proto == "udp":
                sock.send(b"probe")
            try:
                reply = sock.recv(256)
            except TimeoutError:
                if proto == "udp":
                    raise
                reply = b""  # connected to a server that waits for the client to speak
        except (ConnectionRefusedError, ConnectionResetError):
            return "refused"
        except TimeoutError:
            return "timeout"
        except OSError as exc:  # EHOSTUNREACH, EACCES (ICMP admin-prohibited) ...
            return "refused" if exc.errno is not None else "timeout"
    return f"ok {reply.decode(errors='replace')}"


def probe(timeout: float, targets: list[tuple[str, str, int]]) -> list[str]:
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(64, max(1, len(targets)))) as pool:
        return list(pool.map(lambda t: probe_one(t[0], t[1], int(t[2]), timeout), targets))


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve"] and len(argv) == 2:
        serve([(str(p), int(n)) for p, n in json.loads(argv[1])])
        return 0
    if argv[:1] == ["probe"] and len(argv) == 3:
        print(json.dumps(probe(float(argv[1]), json.loads(argv[2]))), flush=True)
        return 0
    print("usage: netprobe serve SPEC | netprobe probe TIMEOUT TARGETS", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
