"""`opsstack capacity report`: capacity plan as Markdown and JSON; `opsstack capacity scaling`:
replicas each service region needs at the next daily peak (forecasters/scaling_advisor.py).

By default it reads the forecaster's latest results from PostgreSQL (forecast_* tables);
with --run it forecasts every target now (range queries to Prometheus) instead.
"""
from __future__ import annotations

import json
import logging
import sys
import time

import psycopg

from core.config import view
from core.prom import Prometheus, PrometheusError
from core.spec import format_duration
from forecasters import capacity, scaling_advisor
from forecasters.engine import Forecast
from forecasters.peak import daily_peak
from forecasters.prom import QueryError, prometheus_url, query_range
from forecasters.service import Forecaster, Waiting
from forecasters.storage import Store, database_url
from forecasters.targets import build

log = logging.getLogger("opsstack.capacity")


def add_arguments(p):
    sub = p.add_subparsers(dest="action", required=True)
    r = sub.add_parser("report", help="per target: now, growth/month, threshold dates, what to do")
    r.add_argument("--run", action="store_true", help="forecast now instead of reading PostgreSQL")
    r.add_argument("--markdown", help="write the Markdown report here (default: stdout)")
    r.add_argument("--json", help="write the JSON report here")
    r.add_argument("--target", action="append", help="only this target (repeatable)")
    sc = sub.add_parser("scaling", help="replicas each service region needs at the next daily peak "
                        "(forecast.scaling; docs/scaling.md)")
    sc.add_argument("--markdown", help="write the Markdown report here (default: stdout)")
    sc.add_argument("--json", help="write the JSON report here")


def _scaling(args, cfg) -> int:
    """The forecaster's recommendation, computed now: the request-rate target's daily peak from
    its history in Prometheus, then scaling_advisor.recommend_all."""
    sc = view(cfg, "forecast.scaling")
    now = time.time()
    tg = next((t for t in build(cfg) if t.name == sc.peak_target), None)
    if tg is None:
        print(f"opsstack capacity scaling: no forecast target {sc.peak_target!r} (forecast.scaling.peak_target)",
              file=sys.stderr)
        return 2
    try:
        base = prometheus_url(view(cfg, "forecast"), cfg)
        t, y = query_range(base, tg.query, now - min(tg.history, 8 * 86400.0), now, tg.step)
        peak = daily_peak(t, y, tg.timezone)
        recs = [] if peak is None else scaling_advisor.recommend_all(
            Prometheus(base, timeout=30), peak.value, peak.next_after(now)[1], sc, format_duration(sc.window))
    except (QueryError, PrometheusError) as exc:
        print(f"opsstack capacity scaling: {exc}", file=sys.stderr)
        return 2
    md = scaling_advisor.to_markdown(recs, now, sc.band_low, sc.band_high)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(md)
    else:
        sys.stdout.write(md)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"generated_at": now, "band": [sc.band_low, sc.band_high],
                       "peak_requests_per_second": None if peak is None else peak.value,
                       "recommendations": [r.as_dict(sc.band_low, sc.band_high) for r in recs]}, f, indent=2)
    return 0


def run(args, cfg) -> int:
    if args.action == "scaling":
        return _scaling(args, cfg)
    now = time.time()
    if args.run:
        targets = [t for t in build(cfg) if not args.target or t.name in args.target]
        try:
            fc = Forecaster.from_config(cfg, targets=targets)
        except QueryError as exc:
            print(f"opsstack capacity report: {exc}", file=sys.stderr)
            return 2
        try:
            results = fc.run_once(now)
        finally:
            fc.close()
        rows, waiting = [], []
        for t in targets:
            res = results[t.name]
            if isinstance(res, Forecast):
                rows.append(capacity.row_from_forecast(t, res))
            elif isinstance(res, Waiting):
                waiting.append(capacity.waiting_row(t, res.have, res.need))
            else:
                log.warning("event=capacity_target_failed target=%s error=%r", t.name, str(res))
    else:
        url = database_url(cfg)
        if not url:
            print("opsstack capacity report: no database.url (or OPSSTACK_DATABASE_URL); use --run", file=sys.stderr)
            return 2
        store = Store(url)
        try:
            store.migrate()
            summaries = store.summaries()
            waiting = [capacity.waiting_from_store(w) for w in store.waiting()
                       if not args.target or w["target"] in args.target]
        except psycopg.Error as exc:
            print(f"opsstack capacity report: cannot read the forecasts from PostgreSQL: "
                  f"{str(exc).strip().splitlines()[0]}", file=sys.stderr)
            return 2
        rows = [capacity.row_from_store(s) for s in summaries if not args.target or s["target"] in args.target]
    md = capacity.to_markdown(rows, now, waiting)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(md)
    else:
        sys.stdout.write(md)
    if args.json:
        with open(args.json, "w") as f:
            f.write(capacity.to_json(rows, now, waiting))
    return 0
