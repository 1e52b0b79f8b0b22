"""Predictive Maintenance: forecast bands, time-to-threshold, probabilities, capacity table.

The future curves are not in Prometheus (future samples would break its TSDB): the band panel
and the capacity table read the forecaster's PostgreSQL tables (forecast_points, forecast_history,
forecast_targets, forecast_crossings) through the `postgres` datasource, next to the current-time
gauges (opsstack_forecast_*) from Prometheus. The dashboard's time range reaches into the future
(now-7d .. now+14d) so that the band is visible. Thresholds match the predictive alerts
(`forecast.alerts`).
"""
from __future__ import annotations

from grafana_foundation_sdk.builders import bargauge, dashboard as dash, stat, table, timeseries
from grafana_foundation_sdk.models.common import BarGaugeDisplayMode, BigValueColorMode, BigValueGraphMode, VizOrientation

from dashboards.common import (
    GREEN,
    ORANGE,
    POSTGRES,
    RED,
    YELLOW,
    label_variable,
    new_dashboard,
    panel,
    prom,
    reduce_last,
    steps,
    to_model,
)

UID = "opsstack-predictive"
TITLE = "Predictive Maintenance"
TARGET = 'target=~"$target"'


class _Sql:
    """A PostgreSQL datasource query (the SDK ships no builder for it)."""

    def __init__(self, sql: str, fmt: str = "time_series"):
        self.sql, self.fmt = sql, fmt

    def build(self) -> dict:
        return {"datasource": {"type": POSTGRES.type_val, "uid": POSTGRES.uid}, "editorMode": "code",
                "format": fmt_name(self.fmt), "rawQuery": True, "rawSql": self.sql}


def fmt_name(fmt: str) -> str:
    return {"time_series": "time_series", "table": "table"}[fmt]


def _stat() -> stat.Panel:
    return (stat.Panel().reduce_options(reduce_last()).color_mode(BigValueColorMode.BACKGROUND)
            .graph_mode(BigValueGraphMode.NONE))


def forecasts(cfg: dict) -> list:
    a = cfg["forecast"]["alerts"]
    kh = cfg["forecast"]["kind_horizons"]
    band_sql = (
        "SELECT ts AS time, target || ' forecast' AS metric, yhat AS value FROM forecast_points\n"
        "WHERE target ~ '^(${target:regex})$' AND $__timeFilter(ts)\n"
        "UNION ALL SELECT ts, target || ' lower', yhat_lower FROM forecast_points\n"
        "WHERE target ~ '^(${target:regex})$' AND $__timeFilter(ts)\n"
        "UNION ALL SELECT ts, target || ' upper', yhat_upper FROM forecast_points\n"
        "WHERE target ~ '^(${target:regex})$' AND $__timeFilter(ts)\n"
        "UNION ALL SELECT ts, target || ' actual', value FROM forecast_history\n"
        "WHERE target ~ '^(${target:regex})$' AND $__timeFilter(ts)\n"
        "ORDER BY 1")
    capacity_sql = (
        "SELECT t.target, t.service, t.kind, t.last_value AS now, t.growth_per_month,\n"
        "       c.threshold, c.crossing_at AS reached, c.earliest_at AS earliest, c.latest_at AS latest,\n"
        "       t.model, t.backtest_mase\n"
        "FROM forecast_targets t LEFT JOIN forecast_crossings c USING (target)\n"
        "WHERE t.target ~ '^(${target:regex})$'\n"
        "ORDER BY c.crossing_at NULLS LAST, t.target")
    return [
        panel(timeseries.Panel().fill_opacity(10).line_width(1), "Forecast band and actual",
              "The stored future curve of each selected target (forecast, 80% lower/upper band; PostgreSQL "
              "table forecast_points, replaced every run) next to the history the forecaster fitted on "
              "(forecast_history). The dashboard's time range reaches 14 days into the future.",
              "short", [_Sql(band_sql)], datasource=POSTGRES, w=24, h=10),
        panel(_stat(), "Time to threshold",
              "Seconds until the forecast crosses each configured threshold "
              "(opsstack_forecast_seconds_to_threshold); red within the memory alert horizon "
              f"({kh['memory'] / 3600:g}h), orange within the disk alert horizon "
              f"({kh['disk'] / 86400:g}d). No value / +Inf: not within the target's longest horizon.",
              "s", [prom(f"min by (target, threshold) (opsstack_forecast_seconds_to_threshold{{{TARGET}}})",
                         "{{target}} → {{threshold}}", instant=True)],
              thresholds=steps([(None, RED), (kh["memory"], ORANGE), (kh["disk"], GREEN)]),
              w=12, h=8),
        panel(bargauge.Panel().reduce_options(reduce_last()).display_mode(BarGaugeDisplayMode.GRADIENT)
              .orientation(VizOrientation.HORIZONTAL), "Probability of crossing",
              "Share of the predictive sample paths that cross the threshold within each horizon "
              "(opsstack_forecast_exceedance_probability). CpuLimitLikely fires at "
              f"{a['cpu_probability']:.0%} for the CPU targets.",
              "percentunit", [prom(f"opsstack_forecast_exceedance_probability{{{TARGET}}}",
                                   "{{target}} > {{threshold}} in {{horizon}}", instant=True)],
              thresholds=steps([(None, GREEN), (0.5, YELLOW), (a["cpu_probability"], RED)]),
              min_value=0, max_value=1, w=12, h=8),
        panel(table.Panel(), "Capacity plan",
              "Per target: the latest value, growth per 30 days, and when each threshold is reached "
              "(reached: the forecast; earliest/latest: the 80% band's edges). Same data as "
              "`opsstack capacity report`.",
              "short", [_Sql(capacity_sql, "table")], datasource=POSTGRES, w=24, h=9),
        panel(timeseries.Panel().fill_opacity(10).line_width(1), "Expected value now and its band",
              "What the forecast expected for this moment (horizon=now: yhat with the 80% band). A value "
              "outside it sets opsstack_forecast_anomaly.",
              "short", [prom(f"opsstack_forecast_value{{{TARGET},horizon=\"now\"}}", "{{target}} {{stat}}")],
              w=12, h=8),
        panel(_stat(), "Anomaly",
              "1 when the latest value of the target is outside the band of a forecast made just before it "
              "(opsstack_forecast_anomaly).",
              "none", [prom(f"opsstack_forecast_anomaly{{{TARGET}}}", "{{target}}", instant=True)],
              thresholds=steps([(None, GREEN), (1, ORANGE)]), w=12, h=8),
    ]


def health(cfg: dict) -> list:
    a = cfg["forecast"]["alerts"]
    return [
        panel(_stat(), "Since last successful forecast",
              "time() - opsstack_forecast_last_success_timestamp_seconds per target; ForecasterStale fires "
              f"past {a['stale_after'] / 60:g} minutes.",
              "s", [prom(f"time() - opsstack_forecast_last_success_timestamp_seconds{{{TARGET}}}", "{{target}}",
                         instant=True)],
              thresholds=steps([(None, GREEN), (a["stale_after"], RED)]), w=12, h=7),
        panel(timeseries.Panel().line_width(1), "Run duration",
              "Range query + backtest of every candidate model + final fit, per target "
              "(opsstack_forecast_run_duration_seconds).",
              "s", [prom(f"opsstack_forecast_run_duration_seconds{{{TARGET}}}", "{{target}}")], w=12, h=7),
        panel(timeseries.Panel().line_width(1), "Failed runs",
              "Failed forecast runs per target (increase of opsstack_forecast_errors_total).",
              "short", [prom(f"increase(opsstack_forecast_errors_total{{{TARGET}}}[$__rate_interval])",
                             "{{target}}")], w=12, h=7),
        panel(table.Panel(), "Chosen model and backtest error",
              "The model the rolling-origin backtest chose per target (opsstack_forecast_model_info) and its "
              "backtest MASE (below 1: better than the seasonal-naive forecast) and 80%-band coverage.",
              "none", [prom(f"opsstack_forecast_backtest_mase{{{TARGET}}}", "{{target}}", instant=True, table=True),
                       prom(f"opsstack_forecast_backtest_coverage_ratio{{{TARGET}}}", "{{target}}", instant=True,
                            table=True),
                       prom(f"opsstack_forecast_model_info{{{TARGET}}}", "{{target}} {{model}}", instant=True,
                            table=True)],
              w=12, h=7),
    ]


def build(cfg: dict) -> dict:
    d = new_dashboard(
        UID, TITLE,
        description="Forecasts of disk, memory, CPU, database storage, bandwidth and latency: bands, time to "
                    "threshold, probabilities and the capacity plan (forecasters/, docs/forecasting.md).",
        tags=["forecast", "capacity"],
        variables=[label_variable("target", "opsstack_forecast_model_info", title="Target")],
        time_from="now-7d", refresh="1m")
    d = d.time("now-7d", "now+14d")
    d = d.with_row(dash.Row("Forecasts"))
    for p in forecasts(cfg):
        d = d.with_panel(p)
    d = d.with_row(dash.Row("Forecaster health"))
    for p in health(cfg):
        d = d.with_panel(p)
    return to_model(d)
