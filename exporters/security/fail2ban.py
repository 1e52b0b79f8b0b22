"""fail2ban: bans per jail, read from fail2ban's own SQLite database (``dbfile``).

Why the database and not ``fail2ban-client status <jail>`` or the log: the client needs the
server's socket (root-owned by default) and its "Total banned" starts again at 0 with every
fail2ban restart; the log needs a tailer and tells a new ban ("Ban") from a restored one
("Restore Ban") only by its wording. The database is what fail2ban itself restores from: a
row in ``bans`` per ban (a restart restores bans without adding rows; checked against the real
fail2ban 1.0 in tests/integration/test_security_fail2ban.py), ``bips`` for the bans in force,
``jails`` for the jails; it survives restarts of both fail2ban and the exporter and is read
read-only (``mode=ro``), a few indexed queries a scrape.

- banned{jail}: bans in force (bips rows not expired; bantime < 0 = for ever);
- recent_bans{jail}: bans that started within ``recent_window`` (an alert compares it);
- bans_total{jail}: a counter of ``bans`` rows: the rows present when the exporter first
  reads the database, then every new row (by rowid, so fail2ban purging old rows after its
  ``dbpurgeage`` never lowers it);
- jail_enabled{jail}.
"""
from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Fail2banState:
    jails: dict[str, bool] = field(default_factory=dict)
    banned: dict[str, int] = field(default_factory=dict)
    recent: dict[str, int] = field(default_factory=dict)
    bans_total: dict[str, int] = field(default_factory=dict)


class Fail2banDb:
    def __init__(self, path: str, recent_window: float = 600.0, timeout: float = 2.0):
        self.path = path
        self.recent_window = float(recent_window)
        self.timeout = float(timeout)
        self._rowid = 0
        self._totals: dict[str, int] = {}
        self._lock = threading.Lock()

    def read(self, now: float | None = None) -> Fail2banState:
        now = time.time() if now is None else now
        con = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=self.timeout)
        try:
            st = Fail2banState()
            for name, enabled in con.execute("select name, enabled from jails"):
                st.jails[str(name)] = bool(enabled)
            for jail, n in con.execute("select jail, count(*) from bips where bantime < 0 or timeofban + bantime > ? "
                                       "group by jail", (int(now),)):
                st.banned[str(jail)] = int(n)
            for jail, n in con.execute("select jail, count(*) from bans where timeofban > ? group by jail",
                                       (int(now - self.recent_window),)):
                st.recent[str(jail)] = int(n)
            with self._lock:
                top = con.execute("select coalesce(max(rowid), 0) from bans").fetchone()[0]
                if top < self._rowid:  # the table was emptied and rowids start again
                    self._rowid = 0
                for jail, n in con.execute("select jail, count(*) from bans where rowid > ? and rowid <= ? "
                                           "group by jail", (self._rowid, top)):
                    self._totals[str(jail)] = self._totals.get(str(jail), 0) + int(n)
                self._rowid = top
                st.bans_total = dict(self._totals)
            return st
        finally:
            con.close()
