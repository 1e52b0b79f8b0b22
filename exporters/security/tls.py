"""TLS handshake probes of configured endpoints, on asyncio sockets, under one deadline.

Each probe connects, runs a verifying TLS handshake (the configured CA bundle, SNI and
hostname check with ``server_name``) and reads:

- the leaf certificate's notAfter;
- the **verified chain's** earliest notAfter: over the chain OpenSSL built and verified
  against the CA bundle (leaf, intermediates, trust anchor), not over every certificate the
  server presented. With a cross-signed root the server may present a cross certificate that
  expires soon while the verified path ends at the (long-lived) self-signed root of the
  bundle: "earliest over what was presented" would alarm for nothing and flap as servers
  change what they send; this does not;
- the negotiated protocol version (TLSv1.2, TLSv1.3...);
- the handshake time.

A failed handshake has one reason from REASONS: expired, not_yet_valid, unknown_ca,
hostname_mismatch, verify_other (another verification error), handshake (a TLS alert or
protocol mismatch), refused, timeout, network (another socket error). After a verification
failure a second, non-verifying handshake in the same deadline still reads the leaf (so an
expired or wrongly named certificate still shows its notAfter); the verified chain is then
unknown (absent).

All probes of a scrape share one deadline (the style of exporters/app/probe.py): a silent
endpoint costs a socket until then, never a thread.
"""
from __future__ import annotations

import asyncio
import socket
import ssl
import time
from dataclasses import dataclass

from exporters.app.probe import cert_not_after

REASONS = ("expired", "not_yet_valid", "unknown_ca", "hostname_mismatch", "verify_other", "handshake",
           "refused", "timeout", "network")

# OpenSSL X509_V_ERR_* codes (x509_vfy.h)
_VERIFY_REASONS = {
    9: "not_yet_valid",        # CERT_NOT_YET_VALID
    10: "expired",             # CERT_HAS_EXPIRED
    2: "unknown_ca",           # UNABLE_TO_GET_ISSUER_CERT
    18: "unknown_ca",          # DEPTH_ZERO_SELF_SIGNED_CERT
    19: "unknown_ca",          # SELF_SIGNED_CERT_IN_CHAIN
    20: "unknown_ca",          # UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    21: "unknown_ca",          # UNABLE_TO_VERIFY_LEAF_SIGNATURE
    62: "hostname_mismatch",   # HOSTNAME_MISMATCH
    64: "hostname_mismatch",   # IP_ADDRESS_MISMATCH
}
_DER = 2  # _ssl.ENCODING_DER


@dataclass
class TlsResult:
    ok: bool = False                     # handshake done and the chain verified
    reason: str | None = None            # one of REASONS when not ok
    error: str | None = None             # the error text, for the log
    protocol: str | None = None          # "TLSv1.3"...
    leaf_not_after: float | None = None
    chain_not_after: float | None = None  # earliest notAfter of the verified chain
    chain_length: int = 0                # certificates in the verified chain
    presented: int = 0                   # certificates the server sent
    handshake_seconds: float | None = None


def verify_context(ca_file: str | None) -> ssl.SSLContext:
    """Verifying client context: ``ca_file`` (PEM bundle), or the system's trust store."""
    return ssl.create_default_context(cafile=ca_file)


def insecure_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _chain(obj, verified: bool) -> list[bytes]:
    """DER certificates of the verified (or presented) chain of an SSLObject/SSLSocket.
    Python 3.13 has get_verified_chain()/get_unverified_chain(); 3.10-3.12 have them on the
    underlying _ssl object only."""
    name = "get_verified_chain" if verified else "get_unverified_chain"
    fn = getattr(obj, name, None) or getattr(getattr(obj, "_sslobj", None), name, None)
    if fn is None:
        return []
    out = []
    for c in fn() or []:
        out.append(c if isinstance(c, bytes) else c.public_bytes(_DER))
    return out


def classify(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _VERIFY_REASONS.get(getattr(exc, "verify_code", None), "verify_other")
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return "timeout"
    if isinstance(exc, ssl.SSLError):
        return "handshake"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    return "network"


async def _handshake(host: str, port: int, server_name: str, ctx: ssl.SSLContext, deadline: float):
    """(ssl object, transport, seconds) of one handshake; raises on failure."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, (host, port))
        t0 = time.perf_counter()
        transport, _ = await loop.create_connection(
            asyncio.Protocol, sock=sock, ssl=ctx, server_hostname=server_name,
            ssl_handshake_timeout=max(deadline - loop.time(), 0) + 1.0)  # the deadline cuts it first
    except BaseException:
        sock.close()
        raise
    return transport.get_extra_info("ssl_object"), transport, time.perf_counter() - t0


async def probe_tls(host: str, port: int, server_name: str, deadline: float, *, verify: ssl.SSLContext,
                    insecure: ssl.SSLContext | None = None, slots: asyncio.Semaphore | None = None) -> TlsResult:
    """Probe ``host:port`` (SNI and hostname check: ``server_name``) by the loop time ``deadline``."""
    res = TlsResult()
    acquired = False
    try:
        async with asyncio.timeout_at(deadline):
            if slots is not None:
                await slots.acquire()
                acquired = True
            try:
                obj, transport, secs = await _handshake(host, port, server_name, verify, deadline)
            except ssl.SSLCertVerificationError as exc:
                res.reason, res.error = classify(exc), f"{exc.verify_message or exc}"
                # read the leaf all the same, without verifying
                obj, transport, secs = await _handshake(host, port, server_name, insecure or insecure_context(),
                                                        deadline)
                _read(obj, res, verified=False)
                res.handshake_seconds = secs
                transport.abort()
                return res
            try:
                _read(obj, res, verified=True)
                res.ok = True
                res.handshake_seconds = secs
            finally:
                transport.abort()
    except BaseException as exc:  # noqa: BLE001 - every failure is a reason, never an exception
        if isinstance(exc, asyncio.CancelledError) and not isinstance(exc, TimeoutError):
            raise
        if res.reason is None:
            res.reason = classify(exc)
            res.error = f"{type(exc).__name__}: {exc}"
    finally:
        if acquired:
            slots.release()
    return res


def _read(obj, res: TlsResult, verified: bool) -> None:
    res.protocol = obj.version()
    leaf = obj.getpeercert(binary_form=True)
    if leaf:
        res.leaf_not_after = cert_not_after(leaf)
    presented = _chain(obj, verified=False)
    res.presented = len(presented) or (1 if leaf else 0)
    if verified:
        chain = _chain(obj, verified=True)
        res.chain_length = len(chain)
        if chain:
            res.chain_not_after = min(cert_not_after(c) for c in chain)


def parse_address(address: str) -> tuple[str, int]:
    """"host:port" or "[v6]:port" -> (host, port)."""
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        return host, int(rest.lstrip(":"))
    host, _, port = address.rpartition(":")
    return host, int(port)
