"""The forecaster service: scheduled runs, worker processes, and the /metrics collector.

Every `forecast.interval` the service range-queries Prometheus for each target (in this
process: it is I/O), fits in worker processes (`forecast.workers`), keeps the latest Forecast
per target in memory, writes the future curve to PostgreSQL, and publishes on /metrics ONLY
current-time gauges computed at scrape time from that latest forecast. No sample it exposes
carries a timestamp, so Prometheus stamps them with the scrape time: a future-timestamped
sample would push the TSDB head ahead and make it reject every later current sample
("out of bounds"), as happened on Prometheus 2.42 (docs/forecasting.md).
"""
from __future__ import annotations

import logging
import math
import threading
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from core.config import view
from core.exporter import ExporterCollector
from forecasters.engine import Forecast, forecast_series, seconds_until
from forecasters.peak import DailyPeak, daily_peak
from forecasters.prom import QueryError, prometheus_url, query_range
from forecasters.targets import Target, build, threshold_label

log = logging.getLogger("opsstack.forecaster")

TARGET_LABELS = ["target", "kind", "service", "team"]
RETRY_UNREACHABLE = 30.0   # seconds to the next pass after Prometheus did not answer


@dataclass
class TargetState:
    target: Target
    forecast: Forecast | None = None
    last_success: float | None = None
    last_attempt: float | None = None
    duration: float | None = None
    errors: int = 0
    fits: int = 0
    last_error: str | None = None
    waiting: bool = False          # the last pass found no or too little history (not an error)
    history: float | None = None   # seconds of history the last range query returned
    needed: float | None = None    # seconds of history the target waits for (forecast.min_history)
    peak: DailyPeak | None = None  # the daily profile's peak (request-rate / sessions targets)

    @property
    def status(self) -> str:
        """error (the last pass failed), ok (it has a forecast and the last pass did not fail) or
        waiting (no or too little history yet, or no pass yet): waiting is not an error."""
        if self.last_error:
            return "error"
        return "ok" if self.forecast is not None else "waiting"


@dataclass
class State:
    """The latest result per target, shared by the runner and the scrape thread."""

    targets: dict[str, TargetState] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    prometheus_ok: bool | None = None
    store_ok: bool | None = None

    def snapshot(self) -> list[TargetState]:
        with self.lock:
            return list(self.targets.values())


class Waiting(Exception):
    """Not enough history yet to forecast the target: neither a result nor an error.
    ``have``: seconds of history there is, ``need``: seconds the target waits for."""

    def __init__(self, message: str, have: float = 0.0, need: float = 0.0):
        super().__init__(message)
        self.have = have
        self.need = need


STATES = ("waiting", "ok", "error")


def shard(targets: list[Target], spec: str | None) -> list[Target]:
    """Keep the targets of shard 'K/N' (crc32 of the name modulo N == K)."""
    if not spec:
        return targets
    k, n = (int(x) for x in spec.split("/"))
    if not 0 <= k < n:
        raise ValueError(f"bad shard {spec!r}: want K/N with 0 <= K < N")
    return [t for t in targets if zlib.crc32(t.name.encode()) % n == k]


def _job(target: Target, t, y):
    """Worker-process entry point (top level: picklable)."""
    return forecast_series(t, y, target.spec)


def _init_worker():
    logging.getLogger().setLevel(logging.WARNING)


class Forecaster:
    """Forecasts ``targets`` every ``settings.interval`` from the history in Prometheus at
    ``prometheus``. ``settings`` is the view of the forecast section (core.config.view);
    ``Forecaster.from_config(cfg)`` builds all of it from a whole config."""

    def __init__(self, settings, targets: list[Target], prometheus: str, store=None, workers: int | None = None):
        self.settings = settings
        self.targets = list(targets)
        self.store = store
        self.workers = workers or settings.workers
        self.prometheus = prometheus
        self.state = State(targets={t.name: TargetState(t, needed=settings.min_history) for t in self.targets})
        self._pool: ProcessPoolExecutor | None = None
        self._history: dict[str, tuple] = {}
        self.min_history = settings.min_history
        self.after_pass: list = []  # callables(state, now) run after every pass of serve_forever

    @classmethod
    def from_config(cls, cfg: dict, targets: list[Target] | None = None, store=None, workers: int | None = None,
                    prometheus: str | None = None) -> "Forecaster":
        """The forecaster of a validated config: its forecast view, the targets it configures
        (or ``targets``), Prometheus at forecast.prometheus_url or the stack's own."""
        settings = view(cfg, "forecast")
        return cls(settings, targets if targets is not None else build(cfg),
                   prometheus or prometheus_url(settings, cfg), store=store, workers=workers)

    def _had_history(self, name: str) -> bool:
        """This target was forecast before (or had enough history): losing it now is an error."""
        return name in self._history or self.state.targets[name].forecast is not None

    # ---- workers
    def pool(self) -> ProcessPoolExecutor | None:
        if self.workers <= 1:
            return None
        if self._pool is None:
            import multiprocessing as mp

            self._pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"),
                                             initializer=_init_worker)
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    # ---- one pass
    def run_once(self, now: float | None = None, progress: bool = False) -> dict[str, Forecast | Exception]:
        """Forecast every target once; returns name -> Forecast or the exception."""
        now = time.time() if now is None else now
        results: dict[str, Forecast | Exception] = {}
        pending = []
        started = {}
        import requests

        session = requests.Session()
        prom_ok = True
        query_time: dict[str, float] = {}
        for tg in self.targets:
            started[tg.name] = time.time()
            had = self._had_history(tg.name)
            try:
                t, y = query_range(self.prometheus, tg.query, now - tg.history, now, tg.step, session=session)
                query_time[tg.name] = time.time() - started[tg.name]
            except QueryError as exc:
                if exc.unreachable:
                    prom_ok = False
                if exc.empty and not had:   # a fresh stack: nothing scraped yet
                    results[tg.name] = Waiting("the query returned no series yet", 0.0, self.min_history)
                else:                       # had history and lost it, or a real failure
                    results[tg.name] = exc
                continue
            span = float(t[-1] - t[0]) if len(t) else 0.0
            if len(t) < 3 or span < self.min_history:
                if had:
                    results[tg.name] = RuntimeError(f"history shrank to {span:.0f}s (min_history "
                                                    f"{self.min_history:.0f}s): the series was renamed or dropped")
                else:
                    results[tg.name] = Waiting(f"{span:.0f}s of history, need {self.min_history:.0f}s",
                                               span, self.min_history)
                continue
            quiet_for = now - float(t[-1])
            if quiet_for > max(3 * tg.step, 900.0):
                # the series stopped updating: a forecast of old data would look healthy and be wrong
                results[tg.name] = RuntimeError(f"no sample for {quiet_for:.0f}s: the series stopped updating")
                continue
            if tg.peak:
                peak = daily_peak(t, y, tg.timezone)
                with self.state.lock:
                    self.state.targets[tg.name].peak = peak
            with self.state.lock:
                self.state.targets[tg.name].history = span
            pending.append((tg, t, y))
            self._history[tg.name] = (t, y)
        self.state.prometheus_ok = prom_ok
        pool = self.pool()
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(pending), desc="forecast", unit="target")
        if pool is None:
            for tg, t, y in pending:
                try:
                    results[tg.name] = _job(tg, t, y)
                except Exception as exc:
                    results[tg.name] = exc
                if bar:
                    bar.update(1)
        else:
            from concurrent.futures.process import BrokenProcessPool

            broken = False
            futs = {tg.name: pool.submit(_job, tg, t, y) for tg, t, y in pending}
            for name, fut in futs.items():
                try:
                    results[name] = fut.result()
                except BrokenProcessPool as exc:  # a worker died (OOM kill...): new pool next pass
                    results[name] = exc
                    broken = True
                except Exception as exc:
                    results[name] = exc
                if bar:
                    bar.update(1)
            if broken:
                pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
        if bar:
            bar.close()
        self._record(results, started, query_time)
        return results

    def _record(self, results: dict, started: dict, query_time: dict | None = None) -> None:
        finished = time.time()
        store_ok = True if self.store else None
        for tg in self.targets:
            res = results.get(tg.name)
            st = self.state.targets[tg.name]
            ok = isinstance(res, Forecast)
            if isinstance(res, Waiting):
                with self.state.lock:
                    st.waiting, st.last_attempt = True, finished
                    st.history, st.needed, st.last_error = res.have, res.need, None
                log.info("event=forecast_waiting target=%s reason=%r", tg.name, str(res))
                if self.store is not None:
                    try:
                        self.store.record_waiting(tg, res.have, res.need, finished)
                    except Exception as exc:  # storage down: the gauges still publish
                        store_ok = False
                        log.warning("event=forecast_store_failed target=%s error=%r", tg.name, str(exc))
                continue
            with self.state.lock:
                st.waiting = False
                st.last_attempt = finished
                # this target's own cost: its range query + its fits (not the wait for the others)
                st.duration = (query_time or {}).get(tg.name, 0.0) + (res.duration if ok else 0.0)
                if ok:
                    st.forecast, st.last_success, st.last_error = res, finished, None
                    st.fits += res.fits
                else:
                    st.errors += 1
                    st.last_error = f"{type(res).__name__}: {res}"
            if ok:
                log.info("event=forecast_done target=%s model=%s mase=%s duration=%.2f", tg.name, res.model,
                         f"{res.backtest_mase:.3f}" if res.backtest_mase is not None else "na", st.duration)
            else:
                log.warning("event=forecast_failed target=%s error=%r", tg.name, st.last_error)
            if self.store is None:
                continue
            try:
                if ok:
                    self.store.save(tg, res, finished, history=self._history.get(tg.name))
                self.store.record_run(tg.name, started[tg.name], finished, ok, res.model if ok else None,
                                      res.fits if ok else None, None if ok else st.last_error)
            except Exception as exc:  # storage down: the gauges still publish
                store_ok = False
                log.warning("event=forecast_store_failed target=%s error=%r", tg.name, str(exc))
        self.state.store_ok = store_ok

    # ---- the loop
    def serve_forever(self, stop: threading.Event) -> None:
        interval = self.settings.interval
        while not stop.is_set():
            t0 = time.time()
            try:
                self.run_once(t0)
            except Exception:  # never let the loop die; the errors gauge shows it
                log.exception("event=forecast_pass_failed")
            for hook in self.after_pass:
                try:
                    hook(self.state, time.time())
                except Exception:
                    log.exception("event=forecast_after_pass_failed")
            wait = interval - (time.time() - t0)
            if self.state.prometheus_ok is False:
                # Prometheus did not answer (e.g. still starting): retry soon, not a whole interval later
                wait = min(wait, RETRY_UNREACHABLE)
            stop.wait(max(1.0, wait))
        self.close()


class ForecastCollector(ExporterCollector):
    """Current-time gauges from the latest forecasts, computed at scrape time. No timestamps."""

    exporter = "forecaster"

    def __init__(self, state: State, clock=time.time):
        self.state = state
        self.clock = clock

    def collect_sources(self, scrape):
        now = self.clock()
        value = GaugeMetricFamily("opsstack_forecast_value",
                                  "Forecast of the target for now + horizon (horizon=now: the expected value now); "
                                  "stat yhat|lower|upper (the calibrated interval).",
                                  labels=TARGET_LABELS + ["horizon", "stat"])
        stt = GaugeMetricFamily("opsstack_forecast_seconds_to_threshold",
                                "Seconds until the forecast crosses the threshold (0 = crossed, +Inf = not within "
                                "the longest horizon).", labels=TARGET_LABELS + ["threshold"])
        prob = GaugeMetricFamily("opsstack_forecast_exceedance_probability",
                                 "Probability (from predictive samples) that the target crosses the threshold within "
                                 "the horizon.", labels=TARGET_LABELS + ["threshold", "horizon"])
        anomaly = GaugeMetricFamily("opsstack_forecast_anomaly",
                                    "1 when the latest value is outside the forecast band made just before it.",
                                    labels=TARGET_LABELS)
        growth = GaugeMetricFamily("opsstack_forecast_growth_per_second",
                                   "Trend of the forecast over the next 30 days, in target units per second.",
                                   labels=TARGET_LABELS)
        last_ok = GaugeMetricFamily("opsstack_forecast_last_success_timestamp_seconds",
                                    "Unix time of the last successful forecast of the target.", labels=TARGET_LABELS)
        dur = GaugeMetricFamily("opsstack_forecast_run_duration_seconds",
                                "Duration of the last forecast run of the target (query + backtest + fit).",
                                labels=TARGET_LABELS)
        errors = CounterMetricFamily("opsstack_forecast_errors", "Failed forecast runs of the target.",
                                     labels=TARGET_LABELS)
        fits = CounterMetricFamily("opsstack_forecast_model_fits", "Model fits done for the target.",
                                   labels=TARGET_LABELS)
        model = GaugeMetricFamily("opsstack_forecast_model_info", "The model the backtest chose (value 1).",
                                  labels=TARGET_LABELS + ["model"])
        mase = GaugeMetricFamily("opsstack_forecast_backtest_mase",
                                 "Mean absolute scaled error of the chosen model in the rolling-origin backtest.",
                                 labels=TARGET_LABELS)
        cov = GaugeMetricFamily("opsstack_forecast_backtest_coverage_ratio",
                                "Share of backtest truth inside the calibrated interval.", labels=TARGET_LABELS)
        state = GaugeMetricFamily("opsstack_forecast_target_state",
                                  "1 for the target's state: waiting (no or too little history yet: not an error, "
                                  "no alert), ok (forecast on the last pass), error (the last pass failed).",
                                  labels=TARGET_LABELS + ["state"])
        hist = GaugeMetricFamily("opsstack_forecast_history_seconds",
                                 "History the target's last range query returned.", labels=TARGET_LABELS)
        need = GaugeMetricFamily("opsstack_forecast_history_needed_seconds",
                                 "History a target waits for before its first forecast (forecast.min_history).",
                                 labels=TARGET_LABELS)
        peak_ts = GaugeMetricFamily("opsstack_forecast_next_peak_timestamp_seconds",
                                    "Unix time of the next daily peak (edge=peak), and of the start/end of its "
                                    "window, from the daily profile (request-rate and sessions targets).",
                                    labels=TARGET_LABELS + ["edge"])
        peak_val = GaugeMetricFamily("opsstack_forecast_next_peak_value",
                                     "Expected value of the target at its next daily peak.", labels=TARGET_LABELS)
        peak_hour = GaugeMetricFamily("opsstack_forecast_peak_hour",
                                      "Local hour of day (forecast.timezone; 14.5 = 14:30) of the daily peak "
                                      "(edge=peak) and of the start/end of its window.",
                                      labels=TARGET_LABELS + ["edge", "timezone"])
        for st in self.state.snapshot():
            tg = st.target
            lv = [tg.name, tg.kind, tg.service, tg.team]
            status = st.status
            for s in STATES:
                state.add_metric(lv + [s], 1.0 if s == status else 0.0)
            if st.history is not None:
                hist.add_metric(lv, st.history)
            if st.needed is not None:
                need.add_metric(lv, st.needed)
            if st.peak is not None:
                start, at, end = st.peak.next_after(now)
                for edge, v in (("start", start), ("peak", at), ("end", end)):
                    peak_ts.add_metric(lv + [edge], v)
                peak_val.add_metric(lv, st.peak.value)
                for edge, v in (("start", st.peak.start), ("peak", st.peak.tod), ("end", st.peak.end)):
                    peak_hour.add_metric(lv + [edge, st.peak.timezone], v / 3600.0)
            errors.add_metric(lv, st.errors)
            fits.add_metric(lv, st.fits)
            if st.duration is not None:
                dur.add_metric(lv, st.duration)
            fc = st.forecast
            if fc is None:
                continue
            last_ok.add_metric(lv, st.last_success)
            model.add_metric(lv + [fc.model], 1.0)
            if fc.backtest_mase is not None and math.isfinite(fc.backtest_mase):
                mase.add_metric(lv, fc.backtest_mase)
            if fc.backtest_coverage is not None and math.isfinite(fc.backtest_coverage):
                cov.add_metric(lv, fc.backtest_coverage)
            anomaly.add_metric(lv, 1.0 if fc.anomaly else 0.0)
            growth.add_metric(lv, fc.growth_per_month / (30 * 86400))
            for hlabel, h in [("now", 0.0)] + [(lab, h) for h, lab in tg.horizon_labels.items()]:
                a, lo, hi = fc.at(now + h)
                for stat, v in (("yhat", a), ("lower", lo), ("upper", hi)):
                    value.add_metric(lv + [hlabel, stat], v)
            for thr, cr in fc.crossings.items():
                stt.add_metric(lv + [threshold_label(thr)], seconds_until(cr.at, now))
            labels = tg.horizon_labels
            for (thr, h), p in fc.exceedance.items():
                prob.add_metric(lv + [threshold_label(thr), labels.get(h, str(h))], p)
        with scrape.source("prometheus"):
            if self.state.prometheus_ok is False:
                raise RuntimeError("range queries failed in the last run")
        if self.state.store_ok is not None:
            scrape.set_up("postgres", self.state.store_ok, None if self.state.store_ok else "store failed")
        yield from (value, stt, prob, anomaly, growth, last_ok, dur, errors, fits, model, mase, cov, state, hist, need,
                    peak_ts, peak_val, peak_hour)
