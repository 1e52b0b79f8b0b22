"""A private PKI and real TLS servers on loopback for the TLS probe tests (and the bench).

``Pki(tmp)`` makes CAs and leaves with the `cryptography` package (EC P-256, fast) and writes
PEM files; ``TlsServers`` runs Python ssl listeners (one asyncio loop in a thread) that answer
each connection with a tiny HTTP response, and a "silent" listener that accepts TCP and never
speaks TLS (handshake timeout).
"""
from __future__ import annotations

import asyncio
import datetime as dt
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


@dataclass
class Cert:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def not_after(self) -> float:
        return self.cert.not_valid_after_utc.timestamp()

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_cert(cn: str, *, issuer: Cert | None = None, key=None, ca: bool = False, days: float = 365,
              not_before_days: float = -1, dns: tuple[str, ...] = ()) -> Cert:
    """A certificate for ``cn`` signed by ``issuer`` (None: self-signed), valid from now +
    ``not_before_days`` to now + ``days``; ``key`` reuses a key (a cross-signed CA)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    b = (x509.CertificateBuilder()
         .subject_name(_name(cn))
         .issuer_name(issuer.cert.subject if issuer else _name(cn))
         .public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(NOW + dt.timedelta(days=not_before_days))
         .not_valid_after(NOW + dt.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if issuer is not None:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
                            critical=False)
    if ca:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                          content_commitment=False, key_encipherment=False,
                                          data_encipherment=False, key_agreement=False, encipher_only=False,
                                          decipher_only=False), critical=True)
    else:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in (dns or (cn,))]),
                            critical=False)
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    cert = b.sign((issuer.key if issuer else key), hashes.SHA256())
    return Cert(cert, key)


def write_chain(path: Path, leaf: Cert, *chain: Cert) -> tuple[Path, Path]:
    """(cert file with the leaf then ``chain``, key file) for a server."""
    certfile, keyfile = path.with_suffix(".crt"), path.with_suffix(".key")
    certfile.write_bytes(leaf.pem() + b"".join(c.pem() for c in chain))
    keyfile.write_bytes(leaf.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return certfile, keyfile


class TlsServers:
    """TLS listeners on 127.0.0.1, each with its own certificate chain; ``add`` returns the port."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.servers = []
        self.silent: list[socket.socket] = []

    def add(self, certfile: Path, keyfile: Path, max_version: ssl.TLSVersion | None = None) -> int:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(certfile, keyfile)
        if max_version is not None:
            ctx.maximum_version = max_version

        async def handle(reader, writer):
            try:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                await writer.drain()
            except (ConnectionError, ssl.SSLError):
                pass
            finally:
                writer.close()

        async def start():
            return await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx, ssl_handshake_timeout=10)

        srv = asyncio.run_coroutine_threadsafe(start(), self.loop).result(30)
        self.servers.append(srv)
        return srv.sockets[0].getsockname()[1]

    def add_silent(self) -> int:
        """A TCP listener that never answers (its backlog accepts the connection)."""
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        self.silent.append(s)
        return s.getsockname()[1]

    def close(self) -> None:
        async def stop():
            for s in self.servers:
                s.close()
                await s.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        for s in self.silent:
            s.close()


def refused_port() -> int:
    """A loopback port with nothing listening."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class DemoPki:
    """The endpoints the tests (and the bench) probe, under one CA bundle (``bundle``):

    good (leaf 60 d, intermediate 40 d: the verified chain ends before the leaf), soon (leaf
    5 d), expired, wronghost (a leaf for another name), unknown (another CA), cross (the
    server also presents a cross certificate of the root signed by an old root, expiring in
    3 d: the verified chain ends at the bundle's root and ignores it), tls12 (TLS 1.2 at most).
    """

    def __init__(self, tmp: Path):
        tmp.mkdir(parents=True, exist_ok=True)
        self.root = make_cert("opsstack test root", ca=True, days=3650)
        self.old_root = make_cert("opsstack old root", ca=True, days=3650)
        self.cross = make_cert("opsstack test root", issuer=self.old_root, key=self.root.key, ca=True, days=3)
        self.inter = make_cert("opsstack test intermediate", issuer=self.root, ca=True, days=40)
        self.other_root = make_cert("someone else's root", ca=True, days=3650)
        self.bundle = tmp / "ca.pem"
        self.bundle.write_bytes(self.root.pem())
        self.leaves = {
            "good": (make_cert("good.test", issuer=self.inter, days=60), (self.inter,)),
            "soon": (make_cert("soon.test", issuer=self.inter, days=5), (self.inter,)),
            "expired": (make_cert("expired.test", issuer=self.inter, days=-1, not_before_days=-30), (self.inter,)),
            "wronghost": (make_cert("other.test", issuer=self.inter, days=60), (self.inter,)),
            "unknown": (make_cert("unknown.test", issuer=self.other_root, days=60), ()),
            "cross": (make_cert("cross.test", issuer=self.inter, days=60), (self.inter, self.cross)),
            "tls12": (make_cert("tls12.test", issuer=self.inter, days=60), (self.inter,)),
        }
        self.files = {name: write_chain(tmp / name, leaf, *chain) for name, (leaf, chain) in self.leaves.items()}

    def server_name(self, name: str) -> str:
        return "wrong.test" if name == "wronghost" else f"{name}.test"

    def start(self, servers: TlsServers) -> dict[str, int]:
        """Start a listener per leaf (plus "silent" and "refused"); name -> port."""
        ports = {name: servers.add(*files, max_version=ssl.TLSVersion.TLSv1_2 if name == "tls12" else None)
                 for name, files in self.files.items()}
        ports["silent"] = servers.add_silent()
        ports["refused"] = refused_port()
        return ports
