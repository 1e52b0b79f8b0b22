"""Shared building blocks for opsstack dashboards (grafana-foundation-sdk).

Every dashboard module uses these so that the rules of docs/development.md hold everywhere:

- ``new_dashboard(uid, title, ...)``: a dashboard with a fixed uid, the ``datasource``
  variable (Prometheus) and the defaults we want (UTC, 30s refresh, not editable in the UI).
- ``label_variable()`` / ``service_variable()`` / ``region_variable()``: multi-select
  variables filled from label values, chained (region values follow the service choice).
- ``prom(expr, legend)``: a Prometheus query on ``${datasource}``.
- ``panel(builder, title, description, unit, queries, ...)``: any SDK panel builder with a
  title, a description, a unit and its queries; it refuses to build a panel without them.
- ``steps([(None, "green"), (0.8, "red")])``: absolute threshold steps; ``threshold_lines()``
  draws them on a timeseries; ``up_down_mappings()`` shows 0/1 as DOWN/UP; ``reduce_last()``
  for stat/bargauge/pie panels; ``alert_list_panel()`` Grafana's alert list.
- ``to_model(builder)``: the JSON model (dict) with panel ids and refIds assigned.
- ``panel_queries(model)``: every Prometheus expression of a model (used by the e2e test that
  runs each one against a live Prometheus), ``expand_variables(expr)`` to make one runnable.
- ``lint(model)``: the dashboard-linter rules we enforce; an empty list means clean.

Selectors of a panel use ``SERVICE_REGION`` (``service=~"$service",region=~"$region"``).
"""
from __future__ import annotations

import json
import re
from typing import Any, Iterable

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus as prometheus_builders
from grafana_foundation_sdk.builders import loki as loki_builders
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    Threshold,
    ThresholdsMode,
    VariableOption,
    VariableRefresh,
    VariableSort,
)

# Fixed datasource uids (provisioning/grafana/datasources/opsstack.yml)
PROMETHEUS_UID = "prometheus"
ALERTMANAGER_UID = "alertmanager"
POSTGRES_UID = "postgres"
LOKI_UID = "loki"  # Grafana Loki (docs/logs.md)

# Panels query whatever the `datasource` variable points at (default: the provisioned one).
PROMETHEUS = DataSourceRef(type_val="prometheus", uid="${datasource}")
ALERTMANAGER = DataSourceRef(type_val="alertmanager", uid=ALERTMANAGER_UID)
POSTGRES = DataSourceRef(type_val="grafana-postgresql-datasource", uid=POSTGRES_UID)
LOKI = DataSourceRef(type_val="loki", uid=LOKI_UID)

SERVICE = 'service=~"$service"'
REGION = 'region=~"$region"'
SERVICE_REGION = f"{SERVICE},{REGION}"

# Grafana colours used for threshold steps
GREEN, YELLOW, ORANGE, RED, BLUE = "green", "yellow", "orange", "red", "blue"


# ---------------------------------------------------------------- dashboard and variables

def datasource_variable(default_uid: str = PROMETHEUS_UID, default_name: str = "Prometheus") -> dash.DatasourceVariable:
    return (dash.DatasourceVariable("datasource").label("Data source").type("prometheus")
            .current(VariableOption(selected=True, text=default_name, value=default_uid)))


def label_variable(name: str, metric: str, label: str | None = None, *, title: str | None = None,
                   matchers: str = "", multi: bool = True, include_all: bool = True) -> dash.QueryVariable:
    """A variable filled from ``label_values(metric{matchers}, label)``."""
    label = label or name
    selector = f"{metric}{{{matchers}}}" if matchers else metric
    v = (dash.QueryVariable(name).label(title or name.capitalize()).datasource(PROMETHEUS)
         .query(f"label_values({selector}, {label})")
         .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).sort(VariableSort.ALPHABETICAL_ASC)
         .multi(multi).include_all(include_all))
    if include_all:
        v = v.all_value(".*").current(VariableOption(selected=True, text="All", value="$__all"))
    return v


def service_variable(metric: str = "opsstack_probe_up") -> dash.QueryVariable:
    return label_variable("service", metric, title="Service")


def region_variable(metric: str = "opsstack_probe_up") -> dash.QueryVariable:
    return label_variable("region", metric, title="Region", matchers=SERVICE)


def new_dashboard(uid: str, title: str, *, description: str, tags: Iterable[str] = (),
                  variables: Iterable[Any] = (), time_from: str = "now-6h",
                  refresh: str = "30s") -> dash.Dashboard:
    """A dashboard with a fixed uid and the datasource variable first."""
    if not uid or len(uid) > 40:
        raise ValueError(f"dashboard uid must be 1..40 characters, got {uid!r}")
    d = (dash.Dashboard(title).uid(uid).description(description).tags(["opsstack", *tags])
         .timezone("utc").time(time_from, "now").refresh(refresh)
         .tooltip(DashboardCursorSync.CROSSHAIR).readonly()
         .with_variable(datasource_variable()))
    for v in variables:
        d = d.with_variable(v)
    return d


def with_rows(d: dash.Dashboard, rows, cfg: dict) -> dash.Dashboard:
    """``d`` with one collapsed-free row per ``(title, panels_of(cfg))`` of ``rows``, in order;
    a row whose function gives no panel (an exporter that is off) is left out."""
    for title, panels_of in rows:
        panels = panels_of(cfg)
        if not panels:
            continue
        d = d.with_row(dash.Row(title))
        for p in panels:
            d = d.with_panel(p)
    return d


# ---------------------------------------------------------------- queries and panels

def prom(expr: str, legend: str | None = None, *, instant: bool = False,
         table: bool = False) -> prometheus_builders.Dataquery:
    """A Prometheus query on the dashboard's datasource variable."""
    q = prometheus_builders.Dataquery().expr(expr).datasource(PROMETHEUS)
    if legend is not None:
        q = q.legend_format(legend)
    if instant:
        q = q.instant()
    else:
        q = q.range()
    if table:
        from grafana_foundation_sdk.models.prometheus import PromQueryFormat

        q = q.format(PromQueryFormat.TABLE)
    return q


def loki(expr: str, legend: str | None = None) -> loki_builders.Dataquery:
    """A LogQL query (a range query: log lines, or a metric query over $__interval) on the
    provisioned Loki datasource (docs/logs.md)."""
    q = loki_builders.Dataquery().expr(expr).datasource(LOKI).query_type("range")
    if legend is not None:
        q = q.legend_format(legend)
    return q


def logql_queries(model: dict) -> list[str]:
    """Every LogQL expression of a dashboard JSON model (panels or targets on the Loki datasource)."""
    out = []
    for p in panels(model):
        for t in p.get("targets") or []:
            ds = t.get("datasource") or p.get("datasource") or {}
            if isinstance(ds, dict) and ds.get("type") == "loki" and t.get("expr", "").strip():
                out.append(t["expr"])
    return out


def steps(pairs: Iterable[tuple[float | None, str]]) -> dash.ThresholdsConfig:
    """Absolute threshold steps; the first value must be None (the base colour)."""
    pairs = list(pairs)
    if not pairs or pairs[0][0] is not None:
        raise ValueError("the first threshold step is the base: (None, colour)")
    return (dash.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE)
            .steps([Threshold(value=v, color=c) for v, c in pairs]))


def panel(builder, title: str, description: str, unit: str, queries: Iterable[Any] = (), *,
          thresholds: dash.ThresholdsConfig | None = None, w: int = 12, h: int = 8,
          min_value: float | None = None, max_value: float | None = None,
          datasource: DataSourceRef = PROMETHEUS, decimals: float | None = None):
    """Fill any SDK panel builder (timeseries.Panel(), stat.Panel(), ...) the same way."""
    for what, value in (("title", title), ("description", description), ("unit", unit)):
        if not value or not str(value).strip():
            raise ValueError(f"panel {title!r}: a {what} is required")
    p = (builder.title(title).description(description).unit(unit).datasource(datasource)
         .span(w).height(h))
    for q in queries:
        p = p.with_target(q)
    if thresholds is not None:
        p = p.thresholds(thresholds)
    if min_value is not None:
        p = p.min(min_value)
    if max_value is not None:
        p = p.max(max_value)
    if decimals is not None:
        p = p.decimals(decimals)
    return p


def to_model(builder: dash.Dashboard) -> dict:
    """The dashboard JSON model: ids for every panel, refIds A, B, ... for every target."""
    model = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    next_id = 1
    for p in _walk_panels(model.get("panels", [])):
        p["id"] = next_id
        next_id += 1
        for i, t in enumerate(p.get("targets") or []):
            if not t.get("refId"):
                t["refId"] = chr(ord("A") + i)
    return model


def _walk_panels(panels: list[dict]):
    for p in panels:
        yield p
        yield from _walk_panels(p.get("panels") or [])


def panels(model: dict) -> list[dict]:
    """Every panel of a model, rows included (also panels nested in collapsed rows)."""
    return list(_walk_panels(model.get("panels", [])))


def up_down_mappings() -> list:
    """Value mappings for 0/1 health series: DOWN (red) / UP (green)."""
    from grafana_foundation_sdk.models.dashboard import ValueMap, ValueMappingResult

    return [ValueMap(options={"0": ValueMappingResult(text="DOWN", color=RED, index=0),
                              "1": ValueMappingResult(text="UP", color=GREEN, index=1)})]


def threshold_lines():
    """For a timeseries panel: draw its thresholds as dashed lines (the alert threshold)."""
    from grafana_foundation_sdk.builders.common import GraphThresholdsStyleConfig
    from grafana_foundation_sdk.models.common import GraphThresholdsStyleMode

    return GraphThresholdsStyleConfig().mode(GraphThresholdsStyleMode.DASHED)


def reduce_last():
    """Reduce options for stat/bargauge/pie panels: the last value of every series."""
    from grafana_foundation_sdk.builders.common import ReduceDataOptions

    return ReduceDataOptions().calcs(["lastNotNull"]).values(False)


def alert_list_panel(title: str, description: str, *, datasource_name: str = "Prometheus",
                     label_filter: str = "", w: int = 12, h: int = 10,
                     links: Iterable[Any] = ()) -> dash.Panel:
    """Grafana's built-in alert list ("alertlist", unified alerting) showing the firing and
    pending alerts of the Prometheus datasource's rules (data-source managed alerts)."""
    p = (dash.Panel().type("alertlist").title(title).description(description).unit("none")
         .span(w).height(h)
         .options({"viewMode": "list", "groupMode": "default", "groupBy": [], "maxItems": 50,
                   "sortOrder": 3, "dashboardAlerts": False, "alertName": "",
                   "alertInstanceLabelFilter": label_filter, "datasource": datasource_name,
                   "folder": None, "showInstances": True,
                   "stateFilter": {"firing": True, "pending": True, "noData": False,
                                   "normal": False, "error": True}}))
    links = list(links)
    if links:
        p = p.links(links)
    return p


# ---------------------------------------------------------------- queries of a model

def _is_prometheus(panel: dict, target: dict) -> bool:
    ds = target.get("datasource") or panel.get("datasource") or {}
    if isinstance(ds, str):  # legacy: datasource by name
        return "prom" in ds.lower() or ds.startswith("$")
    return ds.get("type") in (None, "prometheus") and "expr" in target


def panel_queries(model: dict) -> list[str]:
    """Every Prometheus expression of every panel of a dashboard JSON model, in order.

    Hidden targets are included (they must parse too); variables are left as they are —
    pass each through ``expand_variables`` to run it against Prometheus.
    """
    out = []
    for p in panels(model):
        for t in p.get("targets") or []:
            if _is_prometheus(p, t) and t.get("expr", "").strip():
                out.append(t["expr"])
    return out


_VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def expand_variables(expr: str, values: dict[str, str] | None = None, *,
                     rate_interval: str = "1m") -> str:
    """Replace Grafana variables so that Prometheus can run the expression.

    ``$__rate_interval``/``$__interval``/``$__range`` become ``rate_interval``; dashboard
    variables take ``values[name]`` or ``.*`` (the "All" value of our variables).
    """
    values = dict(values or {})
    builtins = {"__rate_interval": rate_interval, "__interval": rate_interval,
                "__range": rate_interval, "__range_s": "60", "__interval_ms": "60000"}

    def sub(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        if name in builtins:
            return builtins[name]
        return values.get(name, ".*")

    return _VAR.sub(sub, expr)


# ---------------------------------------------------------------- lint

# metrics that only go up: *_total counters and the series of a histogram/summary
_COUNTER = re.compile(r"(?<![\w:])([a-zA-Z_][a-zA-Z0-9_]*(?:_total|_bucket|_count|_sum))(?![\w:(])")
_RATED = r"(?:rate|increase|irate)\(\s*{name}\s*(?:\{{[^}}]*\}})?\s*\[\$__rate_interval\]\s*\)"


def counter_problems(expr: str) -> list[str]:
    """Counters used outside rate/increase(...[$__rate_interval])."""
    problems = []
    # strip label matchers' values and strings so that "…_total" in a string does not count
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    for name in sorted(set(_COUNTER.findall(bare))):
        total = len(re.findall(rf"(?<![\w:]){re.escape(name)}(?![\w:(])", bare))
        rated = len(re.findall(_RATED.format(name=re.escape(name)), bare))
        if rated != total:
            problems.append(f"counter {name} must be inside rate()/increase() with [$__rate_interval]")
    return problems


def lint(model: dict) -> list[str]:
    """dashboard-linter style rules; each problem is one line naming the panel."""
    problems = []
    if not model.get("uid"):
        problems.append("dashboard has no fixed uid")
    names = [v.get("name") for v in model.get("templating", {}).get("list", [])]
    if "datasource" not in names:
        problems.append("dashboard has no `datasource` variable")
    for p in panels(model):
        if p.get("type") == "row":
            if not p.get("title"):
                problems.append(f"row {p.get('id')} has no title")
            continue
        where = f"panel {p.get('id')} {p.get('title')!r}"
        if not (p.get("title") or "").strip():
            problems.append(f"{where}: no title")
        if not (p.get("description") or "").strip():
            problems.append(f"{where}: no description")
        if not ((p.get("fieldConfig") or {}).get("defaults") or {}).get("unit"):
            problems.append(f"{where}: no unit")
        for t in p.get("targets") or []:
            if not _is_prometheus(p, t):
                continue
            ds = t.get("datasource") or p.get("datasource") or {}
            if isinstance(ds, dict) and ds.get("uid") not in ("${datasource}", "$datasource"):
                problems.append(f"{where}: query does not use the datasource variable")
            for prob in counter_problems(t.get("expr", "")):
                problems.append(f"{where}: {prob}")
    return problems


def lines():
    """A time series with its thresholds drawn as lines (every board's line chart)."""
    from grafana_foundation_sdk.builders import timeseries

    return timeseries.Panel().thresholds_style(threshold_lines()).fill_opacity(10).line_width(1)


def bars():
    """Horizontal gradient bar gauges of each series' last value (every board's ranking)."""
    from grafana_foundation_sdk.builders import bargauge
    from grafana_foundation_sdk.models.common import BarGaugeDisplayMode, VizOrientation

    return (bargauge.Panel().reduce_options(reduce_last()).display_mode(BarGaugeDisplayMode.GRADIENT)
            .orientation(VizOrientation.HORIZONTAL))
