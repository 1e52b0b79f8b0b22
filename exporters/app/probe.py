"""One synthetic HTTP(S) probe with its latency phases, on asyncio sockets.

Phases (seconds): dns (name resolution; ~0 for an IP literal), connect (TCP handshake),
tls (TLS handshake, 0 for http), first_byte (request sent -> first response byte), total
(start -> last byte, or -> the deadline). The whole probe runs under one deadline
(``asyncio.timeout_at``), shared by every probe of a scrape: a probe never outlives it,
and a probe cut off by it reports ``timed_out``. Many probes run on one event loop
(exporters.app.collector), so a probe waiting on a silent target costs a socket, not a thread.
"""
from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import urlsplit

MAX_BODY = 1024 * 1024
USER_AGENT = "opsstack-prober/1"
PHASES = ("dns", "connect", "tls", "first_byte", "total")
NO_SLOT = "timeout: no probe slot came free before the deadline (exporters.app.max_concurrency)"


@dataclass
class ProbeResult:
    up: bool = False
    status: int = 0
    phases: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    cert_not_after: float | None = None  # unix time, https only
    timed_out: bool = False  # the deadline came before the answer (or before a probe slot)

    @property
    def responded(self) -> bool:
        return self.status > 0


def tls_context(ca_file: str | None = None, insecure: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca_file)
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class _Response(asyncio.Protocol):
    """Sends the request, collects the response until Content-Length, a chunked end or EOF."""

    def __init__(self, request: bytes, done: asyncio.Future):
        self.request = request
        self.done = done
        self.buf = bytearray()
        self.first_byte: float | None = None
        self.ended: float | None = None
        self.error: BaseException | None = None
        self._body_at = -1           # offset of the body once the head is in
        self._length: int | None = None
        self._chunked = False

    def connection_made(self, transport):
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if self.first_byte is None:
            self.first_byte = time.perf_counter()
        self.buf += data
        if self._complete():
            self._finish(None)

    def eof_received(self):
        self._finish(None)
        return False

    def connection_lost(self, exc) -> None:
        self._finish(exc)

    def _finish(self, exc) -> None:
        if self.ended is None:
            self.ended = time.perf_counter()
            self.error = exc
        if not self.done.done():
            self.done.set_result(None)

    def _complete(self) -> bool:
        if len(self.buf) >= MAX_BODY:
            return True
        if self._body_at < 0:
            i = self.buf.find(b"\r\n\r\n")
            if i < 0:
                return False
            self._body_at = i + 4
            for line in bytes(self.buf[:i]).decode("latin-1").lower().split("\r\n")[1:]:
                k, _, v = line.partition(":")
                k, v = k.strip(), v.strip()
                if k == "content-length" and v.isdigit():
                    self._length = int(v)
                elif k == "transfer-encoding" and "chunked" in v:
                    self._chunked = True
        if self._length is not None:
            return len(self.buf) - self._body_at >= self._length
        if self._chunked:
            return self.buf.endswith(b"0\r\n\r\n")
        return False  # no length: read until the server closes (we sent Connection: close)


def _address(host: str, port: int):
    """(family, sockaddr) of an IP literal, or None when ``host`` is a name to resolve."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return (socket.AF_INET, (host, port)) if ip.version == 4 else (socket.AF_INET6, (host, port, 0, 0))


async def probe_async(url: str, deadline: float, *, tls: ssl.SSLContext | None = None,
                      valid_status=range(200, 300), slots: asyncio.Semaphore | None = None) -> ProbeResult:
    """Probe ``url`` (GET) until the running loop's time ``deadline`` at the latest.

    ``slots`` bounds how many probes hold a socket at once; a probe that gets no slot before
    the deadline reports timed_out with the NO_SLOT error.
    """
    loop = asyncio.get_running_loop()
    res = ProbeResult()
    called = time.perf_counter()
    t0 = None
    marks: dict[str, float] = {}
    sock = transport = proto = None
    acquired = False
    try:
        async with asyncio.timeout_at(deadline):
            if slots is not None:
                await slots.acquire()
                acquired = True
            t0 = time.perf_counter()
            u = urlsplit(url)
            if u.scheme not in ("http", "https") or not u.hostname:
                raise ValueError(f"not an http(s) URL: {url!r}")
            https = u.scheme == "https"
            port = u.port or (443 if https else 80)
            path = (u.path or "/") + (f"?{u.query}" if u.query else "")
            addr = _address(u.hostname, port)
            if addr is None:
                infos = await loop.getaddrinfo(u.hostname, port, type=socket.SOCK_STREAM)
                addr = (infos[0][0], infos[0][4])
            marks["dns"] = time.perf_counter()
            sock = socket.socket(addr[0], socket.SOCK_STREAM)
            sock.setblocking(False)
            await loop.sock_connect(sock, addr[1])
            marks["connect"] = time.perf_counter()
            host_header = u.hostname if u.port is None else f"{u.hostname}:{u.port}"
            if ":" in u.hostname:
                host_header = f"[{u.hostname}]" + (f":{u.port}" if u.port else "")
            req = (f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: {USER_AGENT}\r\n"
                   "Accept: */*\r\nConnection: close\r\n\r\n").encode()
            proto = _Response(req, loop.create_future())
            if https:
                transport, _ = await loop.create_connection(
                    lambda: proto, sock=sock, ssl=tls or tls_context(), server_hostname=u.hostname,
                    ssl_handshake_timeout=max(deadline - loop.time(), 0.001))
                sock = None  # the transport owns it now
                der = transport.get_extra_info("ssl_object").getpeercert(binary_form=True)
                if der:
                    res.cert_not_after = cert_not_after(der)
                marks["tls"] = time.perf_counter()
            else:
                transport, _ = await loop.create_connection(lambda: proto, sock=sock)
                sock = None
                marks["tls"] = marks["connect"]  # no TLS phase for http
            await proto.done
            if not proto.buf:
                raise ConnectionError(f"connection closed before a response ({proto.error or 'EOF'})")
            marks["first_byte"] = proto.first_byte
            marks["end"] = proto.ended
            res.status = _status(bytes(proto.buf[:1024]))
            res.up = res.status in valid_status
            if not res.up:
                res.error = f"HTTP status {res.status}"
    except ssl.SSLError as exc:
        res.error = f"tls: {exc.reason or exc}"
    except TimeoutError:
        res.timed_out = True
        res.error = "timeout" if acquired or slots is None else NO_SLOT
    except (OSError, ValueError, ConnectionError) as exc:
        res.error = f"{type(exc).__name__}: {exc}"
    finally:
        if transport is not None:
            transport.abort()
        if sock is not None:
            sock.close()
        if acquired:
            slots.release()
    end = marks.get("end") or time.perf_counter()
    if t0 is None:  # never started: the time it waited for a slot
        res.phases["total"] = end - called
        return res
    prev = t0
    for name in ("dns", "connect", "tls", "first_byte"):
        if name in marks:
            res.phases[name] = marks[name] - prev
            prev = marks[name]
    res.phases["total"] = end - t0
    return res


def probe(url: str, timeout: float, *, tls: ssl.SSLContext | None = None,
          valid_status=range(200, 300)) -> ProbeResult:
    """One probe of ``url`` within ``timeout`` seconds, on a loop of its own (scripts, tests)."""

    async def one() -> ProbeResult:
        deadline = asyncio.get_running_loop().time() + timeout
        return await probe_async(url, deadline, tls=tls, valid_status=valid_status)

    return asyncio.run(one())


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
