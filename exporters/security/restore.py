"""Restore verification: restore the newest pgBackRest backup of a stanza into a scratch
folder, start it on a free port, run a query, record the outcome; `opsstack security
verify-restore` runs it (a scheduled job: the demo's supervisor, cron, a systemd timer).

1. ``pgbackrest restore --pg1-path=<scratch>`` of the stanza's newest backup
   (``target: immediate``: to the end of that backup, then promote; ``latest``: replay every
   archived WAL segment too, which also proves the archive restores);
2. ``postgres`` on the scratch copy, on a free loopback port, with ``archive_mode=off`` (the copy
   must never archive into the real repository), hot_standby=off (it answers once promoted, and
   may have fewer connections than the primary) and no preloaded libraries;
3. once it accepts connections and has left recovery, ``query`` (it must return a row);
4. stop it, delete the scratch folder, write the result (JSON, atomically) to the result file,
   ``{stanza: {...}}``: success, when it ran, how long each step and the whole took (the
   measured restore time, to compare with the RTO), the backup label, the error.

The exporter reads that file (exporters/security/collector.py). As root, pgBackRest and
PostgreSQL run as the ``postgres`` user (PostgreSQL refuses root).
"""
from __future__ import annotations

import json
import logging
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psycopg

from core.logs import first_line
from core.procs import free_port
from exporters.security.pgbackrest import read_info

log = logging.getLogger("opsstack.security.restore")


@dataclass
class RestoreResult:
    stanza: str
    success: bool = False
    started: float = 0.0
    finished: float = 0.0
    duration_seconds: float = 0.0      # restore + start + query: the measured recovery time
    restore_seconds: float = 0.0
    startup_seconds: float = 0.0
    query_seconds: float = 0.0
    backup_label: str = ""
    error: str | None = None
    last_success: float = 0.0          # finished time of the last successful run (kept across runs)


def _as_postgres():
    """preexec_fn and uid/gid to run a child as the postgres user when we are root, else Nones."""
    if os.geteuid() != 0:
        return None, None
    pw = pwd.getpwnam("postgres")

    def fn():  # pragma: no cover - runs in the child
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
    return fn, (pw.pw_uid, pw.pw_gid)


def newest_bindir() -> Path:
    cands = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"),
                   key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    if not cands:
        raise RuntimeError("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin")
    return cands[-1].parent


def verify_restore(stanza: str, *, pgbackrest: str = "pgbackrest", config: str | None = None,
                   work_dir: str | None = None, bindir: str | None = None, target: str = "immediate",
                   query: str = "select count(*) from pg_class", timeout: float = 900.0) -> RestoreResult:
    """Run the verification once; never raises (the error is in the result)."""
    res = RestoreResult(stanza=stanza, started=time.time())
    t0 = time.perf_counter()
    deadline = time.monotonic() + timeout
    preexec, ids = _as_postgres()
    scratch = Path(tempfile.mkdtemp(prefix=f"verify-{stanza}-", dir=work_dir))
    proc = None
    try:
        infos = [s for s in read_info(pgbackrest, config, (stanza,), timeout=min(60, timeout)) if s.name == stanza]
        backups = [b for s in infos for b in s.last.values() if not b.error]
        if not backups:
            raise RuntimeError(f"stanza {stanza}: no backup to restore"
                               + (f" ({infos[0].status_message})" if infos else ""))
        res.backup_label = max(backups, key=lambda b: b.stop).label
        data, lock = scratch / "data", scratch / "lock"
        for d in (data, lock):
            d.mkdir(mode=0o700)
        if ids:
            for d in (scratch, data, lock):
                os.chown(d, *ids)
        cmd = [pgbackrest] + ([f"--config={config}"] if config else []) + [
            f"--stanza={stanza}", f"--pg1-path={data}", f"--lock-path={lock}", "--log-level-console=warn",
            "--log-level-file=off", f"--set={res.backup_label}"]
        if target == "immediate":
            cmd += ["--type=immediate", "--target-action=promote"]
        t = time.perf_counter()
        r = subprocess.run(cmd + ["restore"], capture_output=True, text=True, preexec_fn=preexec,
                           timeout=max(deadline - time.monotonic(), 1))
        if r.returncode != 0:
            raise RuntimeError("pgbackrest restore: " + (r.stderr.strip() or r.stdout.strip()
                                                         or f"exit {r.returncode}").splitlines()[0])
        res.restore_seconds = time.perf_counter() - t
        port = free_port()
        t = time.perf_counter()
        binpath = Path(bindir) if bindir else newest_bindir()
        logf = open(scratch / "postgres.log", "ab")
        proc = subprocess.Popen(
            [str(binpath / "postgres"), "-D", str(data), "-c", f"port={port}", "-c", "listen_addresses=127.0.0.1",
             "-c", "unix_socket_directories=",  # TCP only: a deep work_dir is too long for a socket
             "-c", "archive_mode=off", "-c", "shared_preload_libraries=",
             "-c", "hot_standby=off", "-c", "max_connections=10", "-c", "logging_collector=off", "-c", "fsync=off"],
            stdout=logf, stderr=subprocess.STDOUT, preexec_fn=preexec, start_new_session=True)
        logf.close()
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"postgres on the restored copy exited {proc.returncode}: "
                                   + _tail(scratch / "postgres.log"))
            try:
                with psycopg.connect(url, connect_timeout=2, autocommit=True) as con:
                    if not con.execute("select pg_is_in_recovery()").fetchone()[0]:
                        res.startup_seconds = time.perf_counter() - t
                        t = time.perf_counter()
                        row = con.execute(query).fetchone()
                        if row is None:
                            raise RuntimeError("the verification query returned no row")
                        res.query_seconds = time.perf_counter() - t
                        break
            except psycopg.OperationalError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the restored copy did not finish recovery before the timeout")
            time.sleep(0.2)
        res.success = True
    except Exception as exc:  # noqa: BLE001 - a failed verification is a result, not a crash
        res.error = first_line(exc)[:500]
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        shutil.rmtree(scratch, ignore_errors=True)
    res.finished = time.time()
    res.duration_seconds = time.perf_counter() - t0
    if res.success:
        res.last_success = res.finished
    log.info("event=restore_verified stanza=%s success=%s duration=%.1fs backup=%s error=%r", stanza, res.success,
             res.duration_seconds, res.backup_label, res.error)
    return res


def _tail(path: Path, n: int = 3) -> str:
    """The log's FATAL/PANIC/ERROR lines (else its last ``n`` lines), joined."""
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    bad = [x for x in lines if any(w in x for w in ("FATAL:", "PANIC:", "ERROR:"))]
    return " | ".join((bad or lines)[-n:])


def read_results(path: str | os.PathLike) -> dict[str, RestoreResult]:
    """The results file: stanza -> its last RestoreResult ({} when missing or unreadable)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    out = {}
    fields = set(RestoreResult.__dataclass_fields__)
    for stanza, d in (data.items() if isinstance(data, dict) else []):
        if isinstance(d, dict):
            out[str(stanza)] = RestoreResult(**{k: v for k, v in d.items() if k in fields})
    return out


def write_result(path: str | os.PathLike, res: RestoreResult) -> None:
    """Record ``res`` for its stanza (keeping the other stanzas and the last success time)."""
    p = Path(path)
    results = read_results(p)
    prev = results.get(res.stanza)
    if not res.success and prev is not None:
        res.last_success = prev.last_success
    results[res.stanza] = res
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps({k: asdict(v) for k, v in results.items()}, indent=1, sort_keys=True),
                   encoding="utf-8")
    os.replace(tmp, p)
