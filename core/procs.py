"""Small process helpers shared by the launcher, the tests and the benches."""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

# Debian's package names for the real parts, and where each binary lives.
BINARIES = {
    "prometheus": "prometheus",
    "promtool": "promtool",
    "alertmanager": "prometheus-alertmanager",
    "amtool": "amtool",
    "node_exporter": "prometheus-node-exporter",
    "blackbox_exporter": "prometheus-blackbox-exporter",
    "postgres_exporter": "prometheus-postgres-exporter",
}


class MissingBinary(RuntimeError):
    pass


UNIX_PATH_MAX = 107  # sun_path is 108 bytes on Linux, with the final NUL


def unix_socket_path(path: str | os.PathLike, reserve: int = 0) -> Path:
    """``path`` when it (plus ``reserve`` bytes a server appends, e.g. PostgreSQL's
    "/.s.PGSQL.<port>") fits a Unix socket address; otherwise a short path in the temporary
    folder named after it, the same on every call, so a deep checkout or run_dir does not make
    the server fail to bind ("could not create any Unix-domain sockets", "AF_UNIX path too long")."""
    p = Path(path).absolute()
    if len(os.fsencode(str(p))) + reserve <= UNIX_PATH_MAX:
        return p
    tag = hashlib.sha256(os.fsencode(str(p))).hexdigest()[:16]
    return Path(os.environ.get("TMPDIR") or "/tmp") / f"opsstack-{tag}-{p.name[:24]}"


def binary(name: str) -> str:
    """Absolute path of a real binary, or MissingBinary with the apt package to install."""
    exe = BINARIES.get(name, name)
    found = shutil.which(exe) or (f"/usr/bin/{exe}" if os.path.exists(f"/usr/bin/{exe}") else None)
    if not found:
        pkg = {"prometheus": "prometheus", "promtool": "prometheus", "alertmanager": "prometheus-alertmanager",
               "amtool": "prometheus-alertmanager", "node_exporter": "prometheus-node-exporter",
               "blackbox_exporter": "prometheus-blackbox-exporter",
               "postgres_exporter": "prometheus-postgres-exporter"}.get(name, exe)
        raise MissingBinary(f"{exe} not found: install it with `apt-get install {pkg}` (or run `make up`)")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on host."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_ok(url: str, timeout: float = 2.0, headers: dict | None = None) -> bool:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return 200 <= r.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_http(url: str, timeout: float = 30.0, interval: float = 0.2, proc=None) -> None:
    """Wait until url answers 2xx; raise TimeoutError (or RuntimeError if proc died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} was ready")
        if http_ok(url, timeout=min(2.0, interval * 10)):
            return
        time.sleep(interval)
    raise TimeoutError(f"{url} not ready after {timeout:.0f}s")


def tail(path: str | Path, lines: int = 20) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop_process(proc, timeout: float = 10.0) -> None:
    """SIGTERM a child process and wait; SIGKILL it when it has not ended within ``timeout``."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
