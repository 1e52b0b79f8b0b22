"""`forecast:` Prophet forecaster targets (forecasters/, docs/forecasting.md).

Each target is one PromQL expression that returns ONE series (aggregate with sum/max by ()),
forecast every `interval`. Per target: history window and step of the range query, horizons,
thresholds (in the target's unit), bounds (a ratio lives in 0..1), seasonality. The forecaster
publishes current-time gauges only; the future curve goes to PostgreSQL.
"""
import re
from zoneinfo import ZoneInfo

from core.spec import ConfigError, Field, ListOf, parse_duration

_SLUG = re.compile(r"^[a-z][a-z0-9_-]*$")
KINDS = ("disk", "memory", "cpu", "db_storage", "bandwidth", "latency", "requests", "sessions", "other")
# kinds whose next daily peak the forecaster publishes by default (target `peak: null`)
PEAK_KINDS = ("requests", "sessions")
MODELS = ("naive", "seasonal_naive", "seasonal_mean", "recent_mean", "ses", "seasonal_ses", "linear_trend",
          "long_trend", "prophet", "prophet_flat", "seasonal_ses_smooth", "theta", "damped_trend",
          "recent_median", "weekly_ses")
# the default candidates: all but Prophet (its fits would eat the 1000-targets-per-cycle CPU budget)
DEFAULT_MODELS = tuple(m for m in MODELS if not m.startswith("prophet"))


def _slug(v):
    return None if _SLUG.match(v) else f"must be lowercase letters, digits, '-' or '_', got {v!r}"


def _change_kinds(v):
    bad = [k for k in v if k not in KINDS]
    if bad:
        return f"unknown kind {bad[0]!r} (known: {', '.join(KINDS)})"
    return None


def _durations(v):
    if not v:
        return "needs at least one duration"
    for x in v:
        try:
            if parse_duration(x) <= 0:
                return f"durations must be > 0, got {x!r}"
        except ValueError as exc:
            return str(exc)
    return None


def _numbers(v):
    for x in v:
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            return f"expected numbers, got {x!r}"
    return None


def _models(v):
    if not v:
        return "needs at least one model"
    for x in v:
        if x not in MODELS:
            return f"unknown model {x!r} (known: {', '.join(MODELS)})"
    return None


def _seasonality(v):
    for x in v:
        if x not in ("daily", "weekly"):
            return f"seasonality items are daily|weekly, got {x!r}"
    return None


TARGET = {
    "name": Field("str", check=_slug, help="label value of `target` on every gauge"),
    "query": Field("str", help="PromQL returning one series"),
    "kind": Field("str", "other", choices=KINDS, help="which predictive alert looks at it"),
    "service": Field("str", "platform", help="`service` label (alert routing)"),
    "team": Field("str", "ops", help="`team` label (alert routing)"),
    "history": Field("duration", None, nullable=True, help="range query window; null = forecast.history"),
    "step": Field("duration", None, nullable=True, help="range query step; null = forecast.step"),
    "horizons": Field("list", None, nullable=True, check=_durations,
                      help="null = forecast.horizons up to the kind's horizon (forecast.kind_horizons), "
                           "plus that horizon"),
    "thresholds": Field("list", [], check=_numbers, help="values in the target's unit"),
    "direction": Field("str", "above", choices=("above", "below"), help="crossing = going above/below"),
    "min": Field("float", None, nullable=True, help="lower bound of the quantity (0 for a ratio)"),
    "max": Field("float", None, nullable=True, help="upper bound (1 for a ratio): logistic Prophet"),
    "seasonality": Field("list", None, nullable=True, check=_seasonality, help="null = forecast.seasonality"),
    "model": Field("str", None, nullable=True, choices=MODELS + (None,),
                   help="force one model; null = chosen by backtest"),
    "peak": Field("bool", None, nullable=True,
                  help="publish the next daily peak (time, value); null = for kinds requests and sessions"),
}

SECTION = {
    "enabled": Field("bool", True, "run the forecaster with the stack"),
    # null = http://<stack.host>:<stack.ports.prometheus>
    "prometheus_url": Field("url", None, nullable=True),
    "interval": Field("duration", "15m", minimum=10, help="how often every target is re-forecast"),
    "workers": Field("int", 2, minimum=1, maximum=64, help="worker processes for the fits"),
    "history": Field("duration", "14d", minimum=600),
    "min_history": Field("duration", "1h", minimum=0,
                         help="a target waits (no gauges, no error) until it has this much history"),
    "step": Field("duration", "5m", minimum=1),
    "horizons": Field("list", ["48h", "14d", "90d"], check=_durations),
    # how far ahead each kind of target is forecast AND how far its predictive alert looks
    # (alert_rules/forecast.py renders these into the expressions)
    "kind_horizons": {
        "memory": Field("duration", "48h", minimum=3600, help="leak -> OOM ETA (MemoryLeakOomPredicted)"),
        "cpu": Field("duration", "14d", minimum=3600, help="CpuLimitLikely: probability within this"),
        "disk": Field("duration", "90d", minimum=3600, help="DiskWillFillSoon: threshold reached within this"),
        "db_storage": Field("duration", "90d", minimum=3600, help="DbStorageCapacity"),
        "bandwidth": Field("duration", "91d", minimum=3600, help="BandwidthCapacity (a quarter)"),
        "latency": Field("duration", "14d", minimum=3600, help="LatencyTrendRising"),
        "requests": Field("duration", "48h", minimum=3600, help="request-rate targets (daily peak)"),
        "sessions": Field("duration", "48h", minimum=3600, help="concurrent-users targets (daily peak)"),
    },
    "timezone": Field("str", None, nullable=True,
                      help="local time of the daily peak (IANA name); null = demo.timezone"),
    "seasonality": Field("list", ["daily", "weekly"], check=_seasonality),
    "models": Field("list", list(DEFAULT_MODELS), check=_models,
                    help="candidates of the backtest (prophet, prophet_flat: on request, CPU-heavy)"),
    "backtest": {
        "folds": Field("int", 4, minimum=0, maximum=20),
        "horizon": Field("duration", None, nullable=True,
                         help="null = min(longest horizon, history / (folds + 2))"),
    },
    "ensemble": Field("int", 7, minimum=1, maximum=10,
                      help="forecast = median of the k best models of the backtest (1 = the best alone)"),
    "ensemble_within": Field("float", 1.3, minimum=1.0,
                             help="only models whose backtest MASE is within this factor of the best"),
    "level": Field("float", 0.8, minimum=0.5, maximum=0.99, help="interval coverage (0.8 = 80% band)"),
    "samples": Field("int", 400, minimum=50, maximum=10000, help="predictive sample paths"),
    # a recent new trend (a leak that started after the backtest's folds) overrides the backtest's
    # choice for targets of these kinds (forecasters/changepoint.py, docs/forecasting.md)
    "change_point": {
        "kinds": Field("list", ["memory"], check=_change_kinds,
                       help="kinds whose forecast follows a recent significant new trend ([] = off)"),
        "window": Field("duration", "2d", minimum=600, help="recent history searched for the change"),
        "min_t": Field("float", 6.0, minimum=2.0, help="t statistic the new trend's slope needs"),
    },
    "curve_points": Field("int", 500, minimum=10, maximum=20000, help="rows per target in forecast_points"),
    "prophet": {
        "changepoint_prior_scale": Field("float", 0.01, minimum=0.0001),
        "changepoint_range": Field("float", 0.9, minimum=0.1, maximum=1.0),
        "n_changepoints": Field("int", 15, minimum=0),
        "seasonality_prior_scale": Field("float", 5.0, minimum=0.001),
        "window": Field("duration", "14d", minimum=3600, help="fit on at most this much recent history"),
    },
    "store": Field("bool", True, help="write future curves to PostgreSQL (database.url)"),
    # thresholds of the predictive alerts (alert_rules/forecast.py)
    "alerts": {
        "disk_threshold": Field("float", 0.9, help="disk used ratio that DiskWillFillSoon predicts"),
        "memory_threshold": Field("float", 1.0, help="memory / limit ratio = OOM"),
        "cpu_threshold": Field("float", 1.0, help="CPU / limit ratio"),
        "cpu_probability": Field("float", 0.75, minimum=0, maximum=1),
        "db_storage_threshold": Field("float", 0.85),
        "db_storage_capacity_bytes": Field("float", 100 * 1024 ** 3, minimum=1,
                                           help="storage the databases may use (db-storage target = size / this)"),
        "bandwidth_threshold": Field("float", 0.8, help="bandwidth used / capacity ratio"),
        "latency_rise": Field("float", 1.5, minimum=1.0,
                              help="alert when the forecast's lower edge is this many times today's upper edge"),
        "stale_after": Field("duration", "1h", minimum=60, help="no successful run for this long"),
    },
    "targets": ListOf(TARGET, default=[], unique_key="name"),
    # replicas each service region needs at the next daily peak (forecasters/scaling_advisor.py,
    # docs/scaling.md): opsstack_scaling_* gauges after every pass, `opsstack capacity scaling`
    "scaling": {
        "enabled": Field("bool", True, help="recommend replicas ahead of the next peak"),
        "band_low": Field("float", 0.7, minimum=0.01, maximum=1.0, help="bottom of the utilisation band"),
        "band_high": Field("float", 0.8, minimum=0.01, maximum=1.0, help="top: the peak stays at or under it"),
        "min_replicas": Field("int", 1, minimum=0),
        "max_replicas": Field("int", 64, minimum=1),
        "window": Field("duration", "1h", minimum=60, help="rate window of the CPU cost per request"),
        "peak_target": Field("str", "requests", help="the request-rate target whose daily peak is used"),
    },
}


def check(cfg):
    f = cfg["forecast"]
    sc = f["scaling"]
    if sc["band_low"] >= sc["band_high"]:
        raise ConfigError("forecast.scaling.band_low", f"must be below band_high ({sc['band_high']:g})")
    if sc["min_replicas"] > sc["max_replicas"]:
        raise ConfigError("forecast.scaling.min_replicas", f"greater than max_replicas ({sc['max_replicas']})")
    if f["timezone"] is not None:
        try:
            ZoneInfo(f["timezone"])
        except Exception:
            raise ConfigError("forecast.timezone", f"unknown time zone {f['timezone']!r}") from None
    if f["backtest"]["horizon"] is not None and f["backtest"]["horizon"] <= 0:
        raise ConfigError("forecast.backtest.horizon", "must be > 0")
    for i, t in enumerate(f["targets"]):
        key = f"forecast.targets[{i}]"
        if t["min"] is not None and t["max"] is not None and t["min"] >= t["max"]:
            raise ConfigError(f"{key}.max", f"must be greater than min ({t['min']:g})")
        hist = t["history"] or f["history"]
        step = t["step"] or f["step"]
        if hist / step < 12:
            raise ConfigError(f"{key}.history", "needs at least 12 steps of history")
        if hist / step > 11000:
            raise ConfigError(f"{key}.step", "history/step over 11000 points: Prometheus refuses the range query")
