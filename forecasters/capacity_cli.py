"""`opsstack capacity report`: capacity plan as Markdown and JSON.

By default it reads the forecaster's latest results from PostgreSQL (forecast_* tables);
with --run it forecasts every target now (range queries to Prometheus) instead.
"""
from __future__ import annotations

import logging
import sys
import time

import psycopg

from forecasters import capacity
from forecasters.engine import Forecast
from forecasters.prom import QueryError
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


def run(args, cfg) -> int:
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
