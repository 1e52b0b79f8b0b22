"""One synthetic HTTP(S) probe with its latency phases, on raw sockets.

Phases (seconds): dns (name resolution), connect (TCP handshake), tls (TLS handshake,
0 for http), first_byte (request sent -> first response byte), total (start -> last
byte). Every step uses what is left of one deadline, so a probe never outlives it.
"""
from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import urlsplit

MAX_BODY = 1024 * 1024
USER_AGENT = "opsstack-prober/1"
PHASES = ("dns", "connect", "tls", "first_byte", "total")


@dataclass
class ProbeResult:
    up: bool = False
    status: int = 0
    phases: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    cert_not_after: float | None = None  # unix time, https only

    @property
    def responded(self) -> bool:
        return self.status > 0


class _Deadline:
    def __init__(self, at: float):
        self.at = at

    def left(self) -> float:
        left = self.at - time.perf_counter()
        if left <= 0:
            raise TimeoutError("probe timeout")
        return left


def tls_context(ca_file: str | None = None, insecure: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca_file)
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def probe(url: str, timeout: float, *, deadline: float | None = None,
          tls: ssl.SSLContext | None = None, valid_status=range(200, 300)) -> ProbeResult:
    """Probe ``url`` (GET) within ``timeout`` seconds (and before perf_counter ``deadline``)."""
    t0 = time.perf_counter()
    dl = _Deadline(min(t0 + timeout, deadline) if deadline is not None else t0 + timeout)
    res = ProbeResult()
    marks = {"start": t0}
    sock = None
    try:
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        https = u.scheme == "https"
        port = u.port or (443 if https else 80)
        path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        infos = socket.getaddrinfo(u.hostname, port, type=socket.SOCK_STREAM)
        marks["dns"] = time.perf_counter()
        family, stype, proto, _, addr = infos[0]
        sock = socket.socket(family, stype, proto)
        sock.settimeout(dl.left())
        sock.connect(addr)
        marks["connect"] = time.perf_counter()
        if https:
            ctx = tls or tls_context()
            sock = ctx.wrap_socket(sock, server_hostname=u.hostname, do_handshake_on_connect=False)
            sock.settimeout(dl.left())
            sock.do_handshake()
            der = sock.getpeercert(binary_form=True)
            if der:
                res.cert_not_after = cert_not_after(der)
            marks["tls"] = time.perf_counter()
        else:
            marks["tls"] = marks["connect"]  # no TLS phase for http
        host_header = u.hostname if u.port is None else f"{u.hostname}:{u.port}"
        if ":" in u.hostname and not u.hostname.startswith("["):
            host_header = f"[{u.hostname}]" + (f":{u.port}" if u.port else "")
        req = (f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: {USER_AGENT}\r\n"
               "Accept: */*\r\nConnection: close\r\n\r\n").encode()
        sock.settimeout(dl.left())
        sock.sendall(req)
        data = _recv(sock, dl)
        if not data:
            raise ConnectionError("connection closed before a response")
        marks["first_byte"] = time.perf_counter()
        data = _read_rest(sock, dl, data)
        marks["end"] = time.perf_counter()
        res.status = _status(data)
        res.up = res.status in valid_status
        if not res.up:
            res.error = f"HTTP status {res.status}"
    except ssl.SSLError as exc:
        res.error = f"tls: {exc.reason or exc}"
    except (TimeoutError, socket.timeout):
        res.error = "timeout"
    except (OSError, ValueError, ConnectionError) as exc:
        res.error = f"{type(exc).__name__}: {exc}"
    finally:
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
    end = marks.get("end", time.perf_counter())
    prev = t0
    for name in ("dns", "connect", "tls", "first_byte"):
        if name in marks:
            res.phases[name] = marks[name] - prev
            prev = marks[name]
    res.phases["total"] = end - t0
    return res


def _recv(sock, dl: _Deadline) -> bytes:
    sock.settimeout(dl.left())
    return sock.recv(65536)


def _read_rest(sock, dl: _Deadline, data: bytes) -> bytes:
    """Read the rest of the response: Content-Length, chunked end or EOF (bounded)."""
    while len(data) < MAX_BODY:
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0:
            head = data[:head_end].decode("latin-1").lower()
            body = data[head_end + 4:]
            length = None
            for line in head.split("\r\n")[1:]:
                k, _, v = line.partition(":")
                if k.strip() == "content-length" and v.strip().isdigit():
                    length = int(v.strip())
            if length is not None and len(body) >= length:
                return data
            if "transfer-encoding: chunked" in head and body.endswith(b"0\r\n\r\n"):
                return data
        chunk = _recv(sock, dl)
        if not chunk:
            return data
        data += chunk
    return data


def _status(data: bytes) -> int:
    line = data.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split()
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP response: {line[:60]!r}")
    return int(parts[1])


# --------------------------------------------------------------------- certificate
def _der(buf: bytes, i: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER element at ``i``."""
    tag, ln = buf[i], buf[i + 1]
    if ln & 0x80:
        n = ln & 0x7F
        ln = int.from_bytes(buf[i + 2:i + 2 + n], "big")
        start = i + 2 + n
    else:
        start = i + 2
    return tag, start, start + ln


def cert_not_after(der: bytes) -> float:
    """notAfter of a DER X.509 certificate as unix time (no third-party parser needed)."""
    _, s, _ = _der(der, 0)            # Certificate
    _, s, _ = _der(der, s)            # tbsCertificate
    i = s
    tag, _, e = _der(der, i)
    if tag == 0xA0:                   # [0] version
        i = e
    for _ in range(4):                # serialNumber, signature, issuer -> validity
        tag, cs, e = _der(der, i)
        if _ == 3:
            break
        i = e
    validity_start = cs
    _, _, e = _der(der, validity_start)  # notBefore
    tag, cs, ce = _der(der, e)           # notAfter
    text = der[cs:ce].decode("ascii")
    fmt = "%y%m%d%H%M%SZ" if tag == 0x17 else "%Y%m%d%H%M%SZ"
    return datetime.strptime(text, fmt).replace(tzinfo=timezone.utc).timestamp()
