"""Small protocol servers for the engine's lab, run inside a host namespace.

``python -m harness.servers '<json spec>'`` starts one thread per entry of a
list like ``[{"proto": "tcp", "port": 22, "kind": "ssh"}, ...]`` and prints
``ready`` once every socket listens.  Kinds: ssh, http, smtp, ftp, redis,
postgresql, mysql, https (HTTP inside TLS with a self-signed certificate made
at start-up), silent (TCP: accepts, says nothing), dns (UDP: answers any query
with the same ID), echo (UDP).  Written by us from the protocols' specs.
"""

from __future__ import annotations

import datetime
import json
import pathlib
import socket
import ssl
import struct
import sys
import tempfile
import threading

BANNERS = {
    "ssh": b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n",
    "smtp": b"220 lab.example ESMTP Postfix\r\n",
    "ftp": b"220 (vsFTPd 3.0.3)\r\n",
    "mysql": (
        lambda body: struct.pack("<I", len(body))[:3] + b"\x00" + body
    )(b"\x0a" + b"8.0.36\x00" + struct.pack("<I", 7) + b"abcdefgh\x00" + b"\xff\xf7" + b"\x21"
      + b"\x02\x00" + b"\xff\xc1" + b"\x15" + b"\x00" * 10 + b"ijklmnopqrst\x00"
      + b"mysql_native_password\x00"),
}


def _answer(kind: str, data: bytes) -> bytes | None:
    if kind == "http" and data.startswith(b"GET"):
        return b"HTTP/1.0 200 OK\r\nServer: lab-httpd/1.0\r\nContent-Length: 2\r\n\r\nok"
    if kind == "redis" and data.upper().startswith(b"PING"):
        return b"+PONG\r\n"
    if kind == "postgresql" and data == b"\x00\x00\x00\x08\x04\xd2\x16\x2f":
        return b"N"
    return None


def _serve_client(conn: socket.socket, kind: str) -> None:
    with conn:
        conn.settimeout(3.0)
        try:
            banner = BANNERS.get(kind)
            if banner is not None:
                conn.sendall(banner)
            while True:
                data = conn.recv(4096)
                if not data:
                    return
                reply = _answer(kind, data)
                if reply is not None:
                    conn.sendall(reply)
                    if kind == "http":
                        return
        except OSError:
            return


def _tls_context() -> ssl.SSLContext:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lab.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256())
    )
    folder = pathlib.Path(tempfile.mkdtemp(prefix="lab-tls-"))
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return context


def _serve_tls(conn: socket.socket, context: ssl.SSLContext) -> None:
    try:
        conn.settimeout(3.0)
        wrapped = context.wrap_socket(conn, server_side=True)
    except (ssl.SSLError, OSError):
        conn.close()
        return
    _serve_client(wrapped, "http")


def _tcp(port: int, kind: str, ready: threading.Barrier) -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", port))
    server.listen(128)
    context = _tls_context() if kind == "https" else None
    ready.wait()
    while True:
        conn, _ = server.accept()
        if context is not None:
            threading.Thread(target=_serve_tls, args=(conn, context), daemon=True).start()
        else:
            threading.Thread(target=_serve_client, args=(conn, kind), daemon=True).start()


def _dns_reply(query: bytes) -> bytes:
    ident = query[:2]
    question = query[12:]
    header = ident + struct.pack("!HHHHH", 0x8180, 1, 1, 0, 0)
    answer = b"\xc0\x0c" + struct.pack("!HHIH", 16, 3, 0, 8) + b"\x07lab-dns"
    return header + question + answer


def _ntp_reply(request: bytes) -> bytes | None:
    """A server (mode 4) answer to a client (mode 3) request, echoing its transmit time as origin."""
    if len(request) < 48 or request[0] & 0x07 != 3:
        return None
    return bytes([0x24, 2, 6, 0xEC]) + bytes(20) + request[40:48] + bytes(16)


def _tlv(tag: int, body: bytes) -> bytes:
    return bytes([tag, len(body)]) + body


def _tlvs(data: bytes) -> list[tuple[int, bytes]]:
    """Short-form BER elements in sequence (enough for the small requests scanners send)."""
    found, at = [], 0
    while at + 2 <= len(data):
        tag, size = data[at], data[at + 1]
        found.append((tag, data[at + 2: at + 2 + size]))
        at += 2 + size
    return found


SYSDESCR = bytes([0x2B, 6, 1, 2, 1, 1, 1, 0])
SNMP_DESCRIPTION = b"Linux lab-snmp 6.1"


def _snmp_reply(request: bytes) -> bytes | None:
    """A v2c GetResponse carrying sysDescr, for a GetRequest with any community."""
    try:
        (outer_tag, message), = _tlvs(request)
        (_, version), (_, community), (pdu_tag, pdu) = _tlvs(message)
        request_id = _tlvs(pdu)[0][1]
    except ValueError:
        return None
    if outer_tag != 0x30 or pdu_tag != 0xA0:
        return None
    varbind = _tlv(0x30, _tlv(0x06, SYSDESCR) + _tlv(0x04, SNMP_DESCRIPTION))
    response = _tlv(0xA2, _tlv(0x02, request_id) + _tlv(0x02, b"\x00") + _tlv(0x02, b"\x00") + _tlv(0x30, varbind))
    return _tlv(0x30, _tlv(0x02, version) + _tlv(0x04, community) + response)


def _udp(port: int, kind: str, ready: threading.Barrier) -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("0.0.0.0", port))
    ready.wait()
    while True:
        data, peer = server.recvfrom(4096)
        if kind == "dns" and len(data) >= 12:
            server.sendto(_dns_reply(data), peer)
        elif kind == "echo":
            server.sendto(b"echo:" + data, peer)
        elif kind in ("ntp", "snmp"):
            answer = _ntp_reply(data) if kind == "ntp" else _snmp_reply(data)
            if answer is not None:
                server.sendto(answer, peer)


def main(spec_text: str) -> None:
    spec = json.loads(spec_text)
    ready = threading.Barrier(len(spec) + 1)
    for entry in spec:
        target = _tcp if entry["proto"] == "tcp" else _udp
        threading.Thread(target=target, args=(entry["port"], entry["kind"], ready),
                         daemon=True).start()
    ready.wait()
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main(sys.argv[1])
