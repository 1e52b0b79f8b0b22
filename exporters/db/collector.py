"""The PostgreSQL collector: reads every configured server at scrape time.

The thin prometheus_client-facing entry: one `Target` per configured server, whose
collectors (one area per module in exporters/db/collectors/) the executor
(exporters/db/executor.py) runs with per-collector isolation, success and duration. A server
that does not answer gives `opsstack_db_up 0` and `opsstack_exporter_up{source} 0` with one
log line, never an exception; the next scrape reconnects.

Cached because expensive, with their age exported: sizes (`sizes_interval`), old-row
counts (`lifecycle.interval`) and the index advisor's suggestions (`advisor.interval`,
computed in a background thread so that a scrape never waits for it). The config is
validated at load (core/schema/db_exporter.py), so nothing here checks it again.
"""
from __future__ import annotations

from core.config import view
from core.exporter import ExporterCollector, Scrape
from exporters.db.executor import Executor, Target
from exporters.db.metrics import Families, render_families


class DbCollector(ExporterCollector):
    """``dbc``, ``database``: the views of the exporters.db and database sections
    (core.config.view); ``DbCollector.from_config(cfg)`` builds them from a whole config."""

    exporter = "db"

    def __init__(self, dbc, database, advisor=None):
        self.dbc = dbc
        self.targets = [Target(t, dbc, database) for t in dbc.targets]
        self.advisor = advisor  # exporters.db.advisor.AdvisorCache or None
        self._executor = Executor()
        self._label_cache: dict = {}

    @classmethod
    def from_config(cls, cfg: dict, advisor=None) -> "DbCollector":
        return cls(view(cfg, "exporters.db"), view(cfg, "database"), advisor=advisor)

    def close(self) -> None:
        self._executor.close()
        for t in self.targets:
            t.close()

    def collect_sources(self, scrape: Scrape):
        return self._collect(scrape).families()

    def _collect(self, scrape: Scrape) -> Families:
        fams = Families()
        for t in self.targets:
            self._executor.collect(t, fams, scrape)
        if self.advisor is not None:
            self.advisor.export(fams)
        return fams

    def scrape_text(self) -> str:
        """One scrape in the text format (what /metrics serves): fast path of collect()."""
        scrape = Scrape(self.exporter)
        if len(self._label_cache) > 200_000:  # tables come and go: keep it bounded
            self._label_cache.clear()
        try:
            body = self._collect(scrape).render(self._label_cache)
        except Exception as exc:  # like ExporterCollector.collect: never fail the scrape
            scrape.set_up(self.exporter, False, f"{type(exc).__name__}: {exc}")
            body = ""
        return body + render_families(scrape.metrics())
