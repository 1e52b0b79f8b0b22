"""PostgreSQL storage of forecasts: future curves (one row per point, replaced each run),
per-target summaries, threshold crossings and probabilities, run history, and the targets
still waiting for history (forecast_waiting: how much they have and need).

Grafana's PostgreSQL datasource plots forecast_points next to the actual series; the
capacity report reads forecast_targets / forecast_crossings. Migrations are applied in code
at start (idempotent, under an advisory lock, versions in forecast_migrations).
"""
from __future__ import annotations

import logging
import math
import os
from datetime import datetime, timezone

import psycopg

from core.migrations import apply
from core.pg import connect

log = logging.getLogger(__name__)

MIGRATIONS: list[tuple[int, str]] = [
    (1, """
    create table if not exists forecast_points (
        target      text not null,
        ts          timestamptz not null,
        yhat        double precision not null,
        yhat_lower  double precision not null,
        yhat_upper  double precision not null,
        run_at      timestamptz not null,
        primary key (target, ts)
    );
    create table if not exists forecast_history (
        target      text not null,
        ts          timestamptz not null,
        value       double precision not null,
        primary key (target, ts)
    );
    create table if not exists forecast_targets (
        target             text primary key,
        kind               text not null,
        service            text not null,
        team               text not null,
        query              text not null,
        model              text not null,
        run_at             timestamptz not null,
        last_ts            timestamptz not null,
        last_value         double precision not null,
        growth_per_month   double precision not null,
        backtest_mase      double precision,
        backtest_coverage  double precision,
        anomaly            boolean not null,
        duration_seconds   double precision not null
    );
    create table if not exists forecast_horizons (
        target      text not null,
        horizon     text not null,
        seconds     double precision not null,
        yhat        double precision not null,
        yhat_lower  double precision not null,
        yhat_upper  double precision not null,
        primary key (target, horizon)
    );
    create table if not exists forecast_crossings (
        target       text not null,
        threshold    double precision not null,
        direction    text not null,
        crossing_at  timestamptz,
        earliest_at  timestamptz,
        latest_at    timestamptz,
        primary key (target, threshold)
    );
    create table if not exists forecast_probabilities (
        target       text not null,
        threshold    double precision not null,
        horizon      text not null,
        probability  double precision not null,
        primary key (target, threshold, horizon)
    );
    create table if not exists forecast_runs (
        id          bigserial primary key,
        target      text not null,
        started_at  timestamptz not null,
        finished_at timestamptz not null,
        ok          boolean not null,
        model       text,
        fits        integer,
        error       text
    );
    create index if not exists forecast_runs_target_idx on forecast_runs (target, started_at desc);
    """),
    (2, """
    create table if not exists forecast_waiting (
        target           text primary key,
        kind             text not null,
        service          text not null,
        team             text not null,
        history_seconds  double precision not null,
        needed_seconds   double precision not null,
        checked_at       timestamptz not null
    );
    """),
]


def database_url(cfg: dict) -> str | None:
    return os.environ.get("OPSSTACK_DATABASE_URL") or cfg["database"]["url"]


def _ts(x: float | None) -> datetime | None:
    if x is None or not math.isfinite(x):
        return None
    return datetime.fromtimestamp(x, tz=timezone.utc)


class Store:
    def __init__(self, url: str):
        self.url = url

    def connect(self) -> psycopg.Connection:
        return connect(self.url, timeout=10)

    def migrate(self) -> int:
        """Apply pending migrations; returns the schema version."""
        with self.connect() as c:
            return apply(c, MIGRATIONS, "forecast_migrations", "forecast_migrations", "forecaster")


    def save(self, target, fc, run_at: float, history=None) -> None:
        """Replace everything stored for this target with this run's forecast (one transaction)."""
        name = target.name
        ra = _ts(run_at)
        with self.connect() as c, c.transaction():
            tables = ["forecast_points", "forecast_horizons", "forecast_crossings", "forecast_probabilities"]
            if history is not None:
                tables.append("forecast_history")
            for table in tables:
                c.execute(f"delete from {table} where target = %s", (name,))
            c.execute("delete from forecast_waiting where target = %s", (name,))
            if history is not None:
                with c.cursor().copy("copy forecast_history (target, ts, value) from stdin") as cp:
                    for ts, v in zip(*history):
                        if math.isfinite(v):
                            cp.write_row((name, _ts(float(ts)), float(v)))
            with c.cursor().copy("copy forecast_points (target, ts, yhat, yhat_lower, yhat_upper, run_at) "
                                 "from stdin") as cp:
                for ts, a, lo, hi in zip(fc.curve_t, fc.yhat, fc.lower, fc.upper):
                    cp.write_row((name, _ts(float(ts)), float(a), float(lo), float(hi), ra))
            c.execute(
                """insert into forecast_targets (target, kind, service, team, query, model, run_at, last_ts,
                       last_value, growth_per_month, backtest_mase, backtest_coverage, anomaly, duration_seconds)
                   values (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)
                   on conflict (target) do update set kind=excluded.kind, service=excluded.service,
                       team=excluded.team, query=excluded.query, model=excluded.model, run_at=excluded.run_at,
                       last_ts=excluded.last_ts, last_value=excluded.last_value,
                       growth_per_month=excluded.growth_per_month, backtest_mase=excluded.backtest_mase,
                       backtest_coverage=excluded.backtest_coverage, anomaly=excluded.anomaly,
                       duration_seconds=excluded.duration_seconds""",
                (name, target.kind, target.service, target.team, target.query, fc.model, ra, _ts(fc.t_last),
                 fc.y_last, fc.growth_per_month, _finite(fc.backtest_mase), _finite(fc.backtest_coverage),
                 fc.anomaly, fc.duration))
            labels = target.horizon_labels
            for h, (a, lo, hi) in fc.horizons.items():
                c.execute("insert into forecast_horizons values (%s,%s,%s,%s,%s,%s)",
                          (name, labels.get(h, str(h)), h, a, lo, hi))
            for thr, cr in fc.crossings.items():
                c.execute("insert into forecast_crossings values (%s,%s,%s,%s,%s,%s)",
                          (name, thr, target.spec.direction, _ts(cr.at), _ts(cr.earliest), _ts(cr.latest)))
            for (thr, h), p in fc.exceedance.items():
                c.execute("insert into forecast_probabilities values (%s,%s,%s,%s)",
                          (name, thr, labels.get(h, str(h)), p))

    def record_run(self, target: str, started: float, finished: float, ok: bool, model: str | None,
                   fits: int | None, error: str | None) -> None:
        with self.connect() as c:
            c.execute("insert into forecast_runs (target, started_at, finished_at, ok, model, fits, error) "
                      "values (%s,%s,%s,%s,%s,%s,%s)",
                      (target, _ts(started), _ts(finished), ok, model, fits, error))
            # keep the run history bounded: the last 1000 runs per target
            c.execute("delete from forecast_runs where target = %s and id < (select min(id) from "
                      "(select id from forecast_runs where target = %s order by id desc limit 1000) k)",
                      (target, target))

    def record_waiting(self, target, have: float, need: float, at: float) -> None:
        """The target waits for history (``have`` of ``need`` seconds): the capacity report says so."""
        with self.connect() as c:
            c.execute(
                """insert into forecast_waiting (target, kind, service, team, history_seconds, needed_seconds,
                       checked_at) values (%s,%s,%s,%s,%s,%s,%s)
                   on conflict (target) do update set kind=excluded.kind, service=excluded.service,
                       team=excluded.team, history_seconds=excluded.history_seconds,
                       needed_seconds=excluded.needed_seconds, checked_at=excluded.checked_at""",
                (target.name, target.kind, target.service, target.team, float(have), float(need), _ts(at)))

    def waiting(self) -> list[dict]:
        """Targets still waiting for history (never forecast), for the capacity report."""
        with self.connect() as c:
            c.row_factory = psycopg.rows.dict_row
            return c.execute("select w.* from forecast_waiting w where not exists "
                             "(select 1 from forecast_targets t where t.target = w.target) "
                             "order by w.kind, w.target").fetchall()

    def summaries(self) -> list[dict]:
        """Per target: summary + crossings + probabilities + horizons (for the capacity report)."""
        with self.connect() as c:
            c.row_factory = psycopg.rows.dict_row
            rows = c.execute("select * from forecast_targets order by kind, target").fetchall()
            cross = c.execute("select * from forecast_crossings order by target, threshold").fetchall()
            prob = c.execute("select * from forecast_probabilities order by target, threshold, horizon").fetchall()
            hor = c.execute("select * from forecast_horizons order by target, seconds").fetchall()
        for r in rows:
            r["crossings"] = [x for x in cross if x["target"] == r["target"]]
            r["probabilities"] = [x for x in prob if x["target"] == r["target"]]
            r["horizons"] = [x for x in hor if x["target"] == r["target"]]
        return rows


def _finite(x):
    return x if x is not None and math.isfinite(x) else None
