"""An embedded PostgreSQL cluster: initdb from the installed server binaries into a folder.

Used by `opsstack up` (supervised) and by the tests (started directly). As root the
server runs as the `postgres` user, since PostgreSQL refuses to run as root.
"""
from __future__ import annotations

import glob
import logging
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psycopg

from core.pg import PostgresUnavailable
from core.procs import unix_socket_path

log = logging.getLogger(__name__)


def server_bindir() -> Path:
    """The newest installed server's bin folder (Debian: /usr/lib/postgresql/<major>/bin)."""
    env = os.environ.get("OPSSTACK_PG_BINDIR")
    if env:
        return Path(env)
    cands = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if cands:
        return Path(cands[-1]).parent
    pg = shutil.which("postgres")
    if pg:
        return Path(pg).parent
    raise PostgresUnavailable("no PostgreSQL server binaries found: `apt-get install postgresql` (or run `make up`)")


def socket_dir(datadir: str | os.PathLike) -> Path:
    """The folder for the cluster's Unix socket: `<datadir>.sock` beside the data folder, or a
    short stable one in the temporary folder when a deep run_dir makes that too long for a
    socket address (postgres would refuse to start: "could not create any Unix-domain sockets")."""
    datadir = Path(datadir).resolve()
    return unix_socket_path(datadir.parent / (datadir.name + ".sock"), reserve=len("/.s.PGSQL.65535"))


def _prepare_socket_dir(path: Path, user: str | None) -> None:
    """Create the socket folder; one in a shared temporary folder must be ours (or the server
    user's) and closed to others, since whoever owns it could put a fake server socket there."""
    path.mkdir(parents=True, exist_ok=True)
    if user:
        pw = pwd.getpwnam(user)
        os.chown(path, pw.pw_uid, pw.pw_gid)
    st = path.stat()
    allowed = {os.geteuid()} | ({pwd.getpwnam(user).pw_uid} if user else set())
    if st.st_uid not in allowed:
        raise PostgresUnavailable(f"the socket folder {path} belongs to uid {st.st_uid}, not to us: remove it")
    if path.name.startswith("opsstack-"):
        os.chmod(path, 0o700)


def _run_user() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresUnavailable("running as root needs a 'postgres' system user (apt-get install postgresql)")
    return "postgres"


def _demote(user: str):
    pw = pwd.getpwnam(user)

    def fn():  # pragma: no cover - runs in the child
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
    return fn


class Cluster:
    def __init__(self, datadir: str | os.PathLike, port: int, host: str = "127.0.0.1",
                 preload: tuple[str, ...] | list[str] = ("pg_stat_statements", "hypopg"),
                 max_connections: int = 100, settings: dict | None = None):
        self.datadir = Path(datadir).resolve()
        self.port = int(port)
        self.host = host
        self.preload = [p for p in preload if self._extension_available(p)]
        self.max_connections = max_connections
        self.settings = settings or {}
        self.user = _run_user()
        self.bindir = server_bindir()
        self.sockdir = socket_dir(self.datadir)
        self.logfile = self.datadir.parent / (self.datadir.name + ".log")
        self.proc: subprocess.Popen | None = None

    @staticmethod
    def _extension_available(name: str) -> bool:
        try:
            libdir = subprocess.run([str(server_bindir() / "pg_config"), "--pkglibdir"],
                                    capture_output=True, text=True, check=False).stdout.strip()
        except OSError:
            libdir = ""
        if not libdir:
            libdir = glob.glob("/usr/lib/postgresql/*/lib")[-1] if glob.glob("/usr/lib/postgresql/*/lib") else ""
        ok = bool(libdir) and Path(libdir, f"{name}.so").exists()
        if not ok:
            log.warning("event=extension_missing extension=%s hint=%r", name,
                        f"install postgresql-<major>-{name} to preload it")
        return ok

    def _chown(self, path: Path) -> None:
        if self.user:
            pw = pwd.getpwnam(self.user)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def initialized(self) -> bool:
        return (self.datadir / "PG_VERSION").exists()

    def init(self) -> None:
        """initdb once; a second call is a no-op."""
        _prepare_socket_dir(self.sockdir, self.user)
        if self.initialized():
            return
        self.datadir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.datadir, 0o700)
        self._chown(self.datadir)
        if self.user:  # the server user must be able to reach its folder
            for parent in self.datadir.parents:
                try:
                    mode = parent.stat().st_mode
                    if not mode & 0o001:
                        os.chmod(parent, mode | 0o001)
                except OSError:
                    break
        cmd = [str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", "postgres",
               "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"]
        res = subprocess.run(cmd, capture_output=True, text=True,
                             preexec_fn=_demote(self.user) if self.user else None)
        if res.returncode != 0:
            raise PostgresUnavailable(f"initdb failed: {res.stderr.strip().splitlines()[-1:]}")

    def basebackup(self, primary: "Cluster", slot: str, timeout: float = 600) -> None:
        """Make this cluster a streaming replica of ``primary`` (running): `pg_basebackup -R`
        with WAL streamed and a physical slot ``slot`` on the primary (dropped first when a
        replica that is gone left it). Once: an initialized data folder is left alone."""
        _prepare_socket_dir(self.sockdir, self.user)
        if self.initialized():
            return
        shutil.rmtree(self.datadir, ignore_errors=True)  # a basebackup that died half-way
        self.datadir.mkdir(parents=True)  # empty, the server user's: pg_basebackup fills it
        os.chmod(self.datadir, 0o700)
        self._chown(self.datadir)
        try:
            with psycopg.connect(primary.url(), autocommit=True, connect_timeout=5) as c:
                c.execute("select pg_drop_replication_slot(slot_name) from pg_replication_slots "
                          "where slot_name = %s and not active", (slot,))
        except psycopg.Error as exc:
            raise PostgresUnavailable(f"the primary on port {primary.port}: {exc}") from None
        cmd = [str(self.bindir / "pg_basebackup"), "-h", primary.host, "-p", str(primary.port), "-U", "postgres",
               "-D", str(self.datadir), "-R", "-X", "stream", "-c", "fast", "-C", "-S", slot, "--no-sync"]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                             preexec_fn=_demote(self.user) if self.user else None)
        if res.returncode != 0:
            shutil.rmtree(self.datadir, ignore_errors=True)
            raise PostgresUnavailable(f"pg_basebackup failed: {res.stderr.strip().splitlines()[-1:]}")

    def command(self) -> list[str]:
        """The server's argv (foreground), for supervisor or Popen."""
        opts = {
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": str(self.sockdir),
            "max_connections": str(self.max_connections),
            "shared_preload_libraries": ",".join(self.preload),
            "pg_stat_statements.track": "all",
            "track_io_timing": "on",
            "fsync": "off",
            "logging_collector": "off",
        }
        opts.update({k: str(v) for k, v in self.settings.items()})
        cmd = [str(self.bindir / "postgres"), "-D", str(self.datadir)]
        for k, v in opts.items():
            cmd += ["-c", f"{k}={v}"]
        return cmd

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{dbname}"

    def start(self, timeout: float = 30) -> None:
        """Start in the background (tests); stop() ends it."""
        self.init()
        out = open(self.logfile, "ab")
        self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT,
                                     preexec_fn=_demote(self.user) if self.user else None,
                                     start_new_session=True)
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise PostgresUnavailable(f"postgres exited ({self.proc.returncode}); see {self.logfile}")
            try:
                with psycopg.connect(self.url(), connect_timeout=2) as c:
                    c.execute("select 1")
                return
            except psycopg.OperationalError as exc:
                last = exc
                time.sleep(0.2)
        raise PostgresUnavailable(f"postgres on port {self.port} not ready after {timeout:.0f}s: {last}")

    def stop(self, timeout: float = 20) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)  # fast shutdown
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
