"""The PostgreSQL collector: reads every configured server at scrape time.

The thin prometheus_client-facing entry: one `Target` per configured server, whose
collectors (one area per module in exporters/db/collectors/) the executor
(exporters/db/executor.py) runs with per-collector isolation, success and duration. A server
that does not answer gives `opsstack_db_up 0` and `opsstack_exporter_up{source} 0` with one
log line, never an exception; the next scrape reconnects.

A scrape runs the live (server-wide) collectors and serves the last results of the
background ones (statements every `statements.interval`; tables, indexes and partitions
every `tables_interval`, within the series budget; old-row counts every `lifecycle.interval`;
see exporters/db/executor.py), each with its age and last duration exported. Sizes are
re-read every `sizes_interval`, the index advisor runs in a thread of its own every
`advisor.interval`. The background results are rendered to text (and encoded) once per
refresh, then served as those bytes in every scrape. The config is validated at load (core/schema/db_exporter.py), so nothing here
checks it again.
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
        self._label_cache: dict = {}   # for the background results
        self._live_labels: dict = {}   # for the live ones (few, bounded by databases and settings)
        self._texts: dict[str, tuple] = {}  # collector -> (its results' ids, their text, the results)

    @classmethod
    def from_config(cls, cfg: dict, advisor=None) -> "DbCollector":
        return cls(view(cfg, "exporters.db"), view(cfg, "database"), advisor=advisor)

    def close(self) -> None:
        self._executor.close()
        for t in self.targets:
            t.close()

    def collect_sources(self, scrape: Scrape):
        fams = self._collect(scrape, cached=True)
        return fams.families()

    def _collect(self, scrape: Scrape, cached: bool) -> Families:
        fams = Families()
        for t in self.targets:
            self._executor.collect(t, fams, scrape, cached=cached)
        if self.advisor is not None:
            self.advisor.export(fams)
        self._executor.start(self.targets)
        return fams

    def _cached_text(self) -> list[bytes]:
        """The background collectors' results in the text format (UTF-8 bytes, one chunk per
        collector), each collector's rendered and encoded only when one of its results changed
        (their families are disjoint from the live ones and from each other's): a scrape
        serves the kept bytes as they are."""
        out = []
        if len(self._label_cache) > 200_000:  # tables come and go: keep it bounded
            self._label_cache.clear()
        for name, parts in self._background_results().items():
            key = tuple(id(f) for f in parts)
            hit = self._texts.get(name)
            if hit is None or hit[0] != key:
                fams = Families()
                for f in parts:
                    fams.merge(f)
                hit = self._texts[name] = (key, fams.render(self._label_cache).encode(), parts)
            out.append(hit[1])
        return out

    def _background_results(self) -> dict[str, list]:
        """collector name -> the last good results (Families) of its entries, every target."""
        out: dict[str, list] = {}
        for t in self.targets:
            for name, fams in t.cached_parts():
                out.setdefault(name, []).append(fams)
        return out

    def scrape_bytes(self) -> bytes:
        """One scrape in the text format, UTF-8 encoded (what /metrics serves): fast path of
        collect(). Only the live part is rendered; the background part is served as kept."""
        scrape = Scrape(self.exporter)
        try:
            parts = [self._collect(scrape, cached=False).render(self._live_labels).encode()]
            parts += self._cached_text()
        except Exception as exc:  # like ExporterCollector.collect: never fail the scrape
            scrape.set_up(self.exporter, False, f"{type(exc).__name__}: {exc}")
            parts = []
        parts.append(render_families(scrape.metrics()).encode())
        return b"".join(parts)

    def scrape_text(self) -> str:
        """One scrape in the text format (scrape_bytes, decoded)."""
        return self.scrape_bytes().decode()
