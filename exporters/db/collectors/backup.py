"""backup: when the last base backup finished, from exporters.db.backup (a file's mtime or a query).

The config schema guarantees `path` for source file and `query` for source query.
"""
from __future__ import annotations

import datetime as dt
import glob
import os

from exporters.db.collectors.base import Collector, Queries, Scope
from exporters.db.metrics import Families


def newest_mtime(pattern: str) -> float:
    """Newest modification time of the files matching the glob ``pattern`` (0 = none)."""
    mtimes = []
    for p in glob.glob(os.path.expanduser(pattern)):
        try:
            mtimes.append(os.stat(p).st_mtime)
        except OSError:  # gone between glob and stat
            pass
    return max(mtimes) if mtimes else 0.0


class BackupCollector(Collector):
    name = "backup"

    def collect(self, q: Queries, scope: Scope) -> Families:
        b = self.dbc.backup
        fams = Families()
        fams.add("opsstack_db_backup_configured", [scope.server], 0 if b.source == "none" else 1)
        if b.source == "none":
            return fams
        ts = None
        if b.source == "file":
            ts = newest_mtime(b.path)
        else:
            rows = q.rows("backup", b.query)
            if rows is not None:
                v = rows[0][0] if rows and rows[0] else None
                ts = v.timestamp() if isinstance(v, dt.datetime) else float(v or 0)
        fams.add("opsstack_db_backup_last_success_timestamp_seconds", [scope.server], ts)
        return fams
