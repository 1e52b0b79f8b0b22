"""pgBackRest: ``pgbackrest info --output=json``, per stanza.

Per stanza: its status (code 0 = ok; pgBackRest's message, e.g. "no valid backups", "missing
stanza path"), whether a backup is running (the backup lock is held), and for each backup type
(full, diff, incr) the newest backup's stop time, duration, database size, size in the
repository, and how many backups of that type the repository holds; the WAL archive's
oldest and newest segment, as WAL positions in bytes (segment name -> log * 2^32 + segment *
16 MiB: PostgreSQL's default segment size), so they compare with opsstack_db_wal_position_bytes.
A type without any backup has no series (never 0, which would read as "1970").
"""
from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field

TYPES = ("full", "diff", "incr")
WAL_SEGMENT = 16 * 1024 * 1024


@dataclass
class LastBackup:
    label: str
    start: float
    stop: float
    size: int
    repo_size: int
    error: bool

    @property
    def duration(self) -> float:
        return max(self.stop - self.start, 0.0)


@dataclass
class Stanza:
    name: str
    status_code: int
    status_message: str
    backup_running: bool = False
    last: dict[str, LastBackup] = field(default_factory=dict)   # type -> newest backup
    counts: dict[str, int] = field(default_factory=dict)        # type -> backups in the repository
    archive_min: int | None = None                              # WAL position (bytes)
    archive_max: int | None = None


def wal_position(segment: str) -> int | None:
    """WAL position (bytes) where a WAL segment file name starts (16 MiB segments)."""
    if not isinstance(segment, str) or len(segment) != 24:
        return None
    try:
        log, seg = int(segment[8:16], 16), int(segment[16:24], 16)
    except ValueError:
        return None
    return (log << 32) + seg * WAL_SEGMENT


def parse_info(data) -> list[Stanza]:
    """The stanzas of ``pgbackrest info --output=json`` (already json-decoded)."""
    out = []
    for s in data if isinstance(data, list) else []:
        if not isinstance(s, dict):
            continue
        status = s.get("status") or {}
        st = Stanza(name=str(s.get("name", "")), status_code=int(status.get("code", -1)),
                    status_message=str(status.get("message", "")))
        lock = (status.get("lock") or {}).get("backup") or {}
        st.backup_running = bool(lock.get("held"))
        for b in s.get("backup") or []:
            t = b.get("type")
            if t not in TYPES:
                continue
            st.counts[t] = st.counts.get(t, 0) + 1
            ts = b.get("timestamp") or {}
            info = b.get("info") or {}
            cand = LastBackup(label=str(b.get("label", "")), start=float(ts.get("start", 0)),
                              stop=float(ts.get("stop", 0)), size=int(info.get("size", 0)),
                              repo_size=int((info.get("repository") or {}).get("delta", 0)),
                              error=bool(b.get("error", False)))
            if t not in st.last or cand.stop >= st.last[t].stop:
                st.last[t] = cand
        archives = [a for a in s.get("archive") or [] if isinstance(a, dict)]
        if archives:
            db_ids = [((d or {}).get("id") or 0) for d in s.get("db") or []]
            current = max(db_ids) if db_ids else None
            mine = [a for a in archives if ((a.get("database") or {}).get("id")) == current] or archives
            mins = [p for p in (wal_position(a.get("min")) for a in mine) if p is not None]
            maxs = [p for p in (wal_position(a.get("max")) for a in mine) if p is not None]
            st.archive_min = min(mins) if mins else None
            st.archive_max = max(maxs) if maxs else None
        out.append(st)
    return out


def info_command(binary: str, config: str | None, stanza: str | None = None) -> list[str]:
    cmd = [binary]
    if config:
        cmd.append(f"--config={config}")
    if stanza:
        cmd.append(f"--stanza={stanza}")
    return cmd + ["--output=json", "--log-level-console=warn", "--log-level-file=off", "info"]


def read_info(binary: str, config: str | None, stanzas: tuple[str, ...] = (), timeout: float = 30.0,
              env: dict | None = None) -> list[Stanza]:
    """Run ``pgbackrest info`` (once, or once per configured stanza) and parse it; raises
    RuntimeError with pgBackRest's first error line when it fails."""
    out: list[Stanza] = []
    for stanza in stanzas or (None,):
        r = subprocess.run(info_command(binary, config, stanza), capture_output=True, text=True,
                           timeout=timeout, env=env or dict(os.environ))
        if r.returncode != 0:
            msg = (r.stderr.strip() or r.stdout.strip() or f"exit {r.returncode}").splitlines()[0]
            raise RuntimeError(f"pgbackrest info: {msg}")
        out += parse_info(json.loads(r.stdout or "[]"))
    return out
