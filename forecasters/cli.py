"""`opsstack forecast serve|run|csv|evaluate|backfill`.

serve     the supervised service: /metrics on stack.host:stack.ports.forecaster, a run every
          forecast.interval (readiness: GET /metrics answers 200)
run       one pass over the targets now; prints a table (and stores curves unless --no-store)
csv       forecast a `timestamp,value` CSV: N steps of timestamp,yhat,yhat_lower,yhat_upper
evaluate  the NAB protocol (datasets/nab/README.md) vs the baselines, with a progress bar
backfill  CSV history -> Prometheus TSDB blocks (promtool create-blocks-from openmetrics)
"""
from __future__ import annotations

import json
import logging
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from core.config import parse_duration, view
from core.exporter import registry_for, serve
from forecasters import evaluate
from forecasters.backfill import create_blocks, openmetrics, shift_to_end
from forecasters.engine import Forecast, Spec, forecast_series, infer_step, regularize
from forecasters.evaluate import read_csv
from forecasters.prom import QueryError
from forecasters.scaling_advisor import ScalingAdvisor, ScalingCollector
from forecasters.service import ForecastCollector, Forecaster, Waiting, shard
from forecasters.storage import Store, database_url
from forecasters.targets import SEASONS, build

log = logging.getLogger("opsstack.forecaster")


def add_arguments(p):
    sub = p.add_subparsers(dest="action", required=True)
    s = sub.add_parser("serve", help="run the forecaster service (/metrics + scheduled runs)")
    s.add_argument("--host", help="bind address (default: stack.host)")
    s.add_argument("--port", type=int, help="port (default: stack.ports.forecaster)")
    s.add_argument("--shard", help="K/N: only the targets whose name hashes to shard K of N")

    r = sub.add_parser("run", help="forecast every target once and print the result")
    r.add_argument("--shard", help="K/N: only the targets of this shard")
    r.add_argument("--no-store", action="store_true", help="do not write to PostgreSQL")
    r.add_argument("--target", action="append", help="only this target (repeatable)")
    r.add_argument("--progress", action="store_true", help="show a progress bar")

    c = sub.add_parser("csv", help="forecast a timestamp,value CSV file")
    c.add_argument("--input", required=True, help="CSV with columns timestamp,value")
    c.add_argument("--horizon", required=True, type=int, help="number of steps to forecast")
    c.add_argument("--output", required=True, help="CSV to write: timestamp,yhat,yhat_lower,yhat_upper")
    c.add_argument("--step", help="sample step (e.g. 5m); default: the median step of the input")
    c.add_argument("--model", help="force a model instead of the backtest choice")
    c.add_argument("--level", type=float, default=0.8, help="interval coverage (default 0.8)")
    c.add_argument("--min", type=float, help="lower bound of the quantity (e.g. 0)")
    c.add_argument("--max", type=float, help="upper bound of the quantity (e.g. 1 for a ratio)")

    e = sub.add_parser("evaluate", help="NAB protocol: our forecaster vs the baselines")
    e.add_argument("--data", help="folder of CSV series (default: datasets/nab)")
    e.add_argument("--series", default="*", help="glob on the file name (default: all)")
    e.add_argument("--workers", type=int, help="worker processes (default: forecast.workers)")
    e.add_argument("--json", help="write the summary as JSON here")
    e.add_argument("--csv", help="write every (series, cutoff, method) row here")
    e.add_argument("--no-prophet-default", action="store_true", help="skip the default-Prophet peer column")
    e.add_argument("--models", help="comma-separated candidates of our forecaster (default: forecast.models)")
    e.add_argument("--no-progress", action="store_true")

    b = sub.add_parser("backfill", help="CSV history -> Prometheus TSDB blocks via promtool")
    b.add_argument("--input", required=True, nargs="+", help="timestamp,value CSV file(s)")
    b.add_argument("--metric", required=True, help="metric name for the samples")
    b.add_argument("--label", action="append", default=[], help="k=v label added to every series (repeatable)")
    b.add_argument("--series-label", default="series", help="label holding each file's name (default: series)")
    b.add_argument("--out", required=True, help="folder for the blocks: Prometheus' --storage.tsdb.path")
    b.add_argument("--shift-to-now", action="store_true", help="shift each series so it ends one step ago")
    b.add_argument("--no-progress", action="store_true")


def run(args, cfg) -> int:
    try:
        return {"serve": _serve, "run": _run, "csv": _csv, "evaluate": _evaluate,
                "backfill": _backfill}[args.action](args, cfg)
    except QueryError as exc:  # e.g. no Prometheus address in the config
        print(f"opsstack forecast {args.action}: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # e.g. a bad --shard
        print(f"opsstack forecast {args.action}: {exc}", file=sys.stderr)
        return 2


def _store(cfg):
    if not cfg["forecast"]["store"]:
        return None
    url = database_url(cfg)
    if not url:
        log.warning("event=forecast_store_disabled reason=no_database_url")
        return None
    store = Store(url)
    try:
        store.migrate()
    except Exception as exc:
        log.warning("event=forecast_store_unavailable error=%r", str(exc))
        # keep the store: each run retries (and the gauges say postgres is down)
    return store


def _targets(cfg, shard_spec, names=None):
    targets = shard(build(cfg), shard_spec)
    if names:
        targets = [t for t in targets if t.name in names]
    return targets


def _serve(args, cfg) -> int:
    host = args.host or cfg["stack"]["host"]
    port = args.port or cfg["stack"]["ports"]["forecaster"]
    if port == "auto":
        print("opsstack forecast serve: stack.ports.forecaster is 'auto'; run it through `opsstack up` or pass --port",
              file=sys.stderr)
        return 2
    store = _store(cfg)
    fc = Forecaster.from_config(cfg, targets=_targets(cfg, args.shard), store=store)
    stop = threading.Event()
    collectors = [ForecastCollector(fc.state)]
    sc = view(cfg, "forecast.scaling")
    if sc.enabled and any(t.name == sc.peak_target for t in fc.targets):  # replicas for the next peak
        advisor = ScalingAdvisor(sc, fc.prometheus, sc.peak_target)
        fc.after_pass.append(advisor.refresh)
        collectors.append(ScalingCollector(advisor))
    worker = threading.Thread(target=fc.serve_forever, args=(stop,), name="forecast-runs", daemon=True)
    worker.start()
    log.info("event=forecaster_started targets=%d workers=%d interval=%gs prometheus=%s", len(fc.targets),
             fc.workers, cfg["forecast"]["interval"], fc.prometheus)
    try:
        serve(registry_for(*collectors), host, int(port), stop=stop)
    finally:
        stop.set()
        worker.join(timeout=30)
        fc.close()
    return 0


def _run(args, cfg) -> int:
    targets = _targets(cfg, args.shard, args.target)
    if not targets:
        print("no targets", file=sys.stderr)
        return 1
    store = None if args.no_store else _store(cfg)
    fc = Forecaster.from_config(cfg, targets=targets, store=store)
    try:
        results = fc.run_once(progress=args.progress)
    finally:
        fc.close()
    failed = 0
    print(f"{'target':<32} {'model':<28} {'now':>12} {'growth/30d':>12} {'mase':>7}  crossings")
    for tg in targets:
        r = results[tg.name]
        if isinstance(r, Waiting):
            print(f"{tg.name:<32} waiting: {r}")
            continue
        if not isinstance(r, Forecast):
            failed += 1
            print(f"{tg.name:<32} ERROR {r}")
            continue
        cross = ", ".join(
            f"{thr:g} at {_fmt_time(c.at)}" for thr, c in r.crossings.items()) or "-"
        mase = f"{r.backtest_mase:.3f}" if r.backtest_mase is not None else "-"
        print(f"{tg.name:<32} {r.model:<28} {r.y_last:>12.4g} {r.growth_per_month:>12.4g} {mase:>7}  {cross}")
    return 1 if failed == len(targets) else 0


def _fmt_time(ts):
    if ts is None:
        return "never"
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _csv(args, cfg) -> int:
    import numpy as np
    import pandas as pd  # heavy: pandas, only to read and write the CSV files

    if args.horizon < 1:
        print("opsstack forecast csv: --horizon must be >= 1", file=sys.stderr)
        return 2
    try:
        t, y = read_csv(args.input)
    except (OSError, ValueError) as exc:
        print(f"opsstack forecast csv: cannot read {args.input}: {exc}", file=sys.stderr)
        return 2
    t, y = regularize(t, y)
    if len(y) < 3:
        print(f"opsstack forecast csv: {args.input} has {len(y)} usable rows; need at least 3", file=sys.stderr)
        return 2
    step = parse_duration(args.step) if args.step else infer_step(t)
    f = cfg["forecast"]
    spec = Spec(step=step, horizons=(args.horizon * step,), lower=args.min, upper=args.max,
                level=args.level, model=args.model, candidates=tuple(f["models"]),
                folds=f["backtest"]["folds"], ensemble=f["ensemble"], ensemble_within=f["ensemble_within"],
                seasonalities=tuple(SEASONS[s] for s in f["seasonality"]))
    fc = forecast_series(t, y, spec, horizon_rows=args.horizon)
    numeric = pd.api.types.is_numeric_dtype(pd.read_csv(args.input, nrows=5).iloc[:, 0])
    if numeric:
        ts = [str(int(x)) if float(x).is_integer() else repr(float(x)) for x in fc.curve_t]
    else:
        ts = list(pd.to_datetime(fc.curve_t, unit="s").strftime("%Y-%m-%d %H:%M:%S"))
    out = pd.DataFrame({"timestamp": ts, "yhat": fc.yhat, "yhat_lower": fc.lower, "yhat_upper": fc.upper})
    out.to_csv(args.output, index=False, float_format="%.10g")
    log.info("event=csv_forecast input=%s rows=%d horizon=%d model=%s backtest_mase=%s", args.input, len(y),
             args.horizon, fc.model, "na" if fc.backtest_mase is None else f"{fc.backtest_mase:.3f}")
    print(f"wrote {args.output}: {args.horizon} steps of {step:g}s, model {fc.model}, "
          f"{int(args.level * 100)}% interval", file=sys.stderr)
    assert np.all(np.isfinite(fc.yhat))
    return 0


def _evaluate(args, cfg) -> int:
    data = args.data or evaluate.DATA_DIR
    paths = evaluate.list_series(data, args.series)
    if not paths:
        print(f"opsstack forecast evaluate: no CSV series matching {args.series!r} under {data}", file=sys.stderr)
        return 2
    models = tuple(m.strip() for m in args.models.split(",")) if args.models else tuple(cfg["forecast"]["models"])
    results = evaluate.run(paths, workers=args.workers or cfg["forecast"]["workers"],
                           progress=not args.no_progress, with_prophet_default=not args.no_prophet_default,
                           models=models)
    summary = evaluate.summarize(results)
    print(evaluate.format_table(summary))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    if args.csv:
        evaluate.write_csv(results, args.csv)
    return 0


def _backfill(args, cfg) -> int:
    from tqdm import tqdm

    labels = {}
    for kv in args.label:
        if "=" not in kv:
            print(f"opsstack forecast backfill: --label wants k=v, got {kv!r}", file=sys.stderr)
            return 2
        k, v = kv.split("=", 1)
        labels[k] = v
    series = []
    now = time.time()
    for path in tqdm(args.input, desc="read", unit="file", disable=args.no_progress):
        t, y = regularize(*read_csv(path))
        if args.shift_to_now:
            t = shift_to_end(t, now - infer_step(t))
        series.append((args.metric, {**labels, args.series_label: Path(path).stem}, t, y))
    blocks = create_blocks(openmetrics(series), args.out)
    print(f"wrote {len(blocks)} block(s) with {sum(len(s[2]) for s in series)} samples to {args.out}")
    return 0
