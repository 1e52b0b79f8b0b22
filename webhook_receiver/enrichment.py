"""Ticket enrichment: what a person needs on the ticket before opening Grafana.

When a ticket opens (or reopens) the receiver attaches:

- ``graph.png``: the alert's expression over ``enrichment.graph_range`` around startsAt,
  drawn with matplotlib from a Prometheus range query; the expression comes from the
  alert's generatorURL (``g0.expr``), else from the alerting rule of that name;
- ``values.json``: the expression's current values (the series of this alert first);
- ``related.json``: other alerts firing on the same service (Alertmanager API v2, else
  Prometheus /api/v1/alerts);
- ``logs.txt``: a log excerpt from the configured source: the tail of a file, or Loki's
  ``query_range`` over the alert's window (``logs.since`` before it started up to now; the
  stack's own Loki by default, docs/logs.md), error lines first, at most ``logs.lines``; a Loki
  that does not answer gives ``logs unavailable: <why>``; meta has the Grafana Explore link.

Each part is independent: a part whose source fails is recorded in ``errors.json`` and the
others are still attached. Enrichment runs as durable jobs (jobs.py), at most
``enrichment.max_per_minute`` started in any minute, on the automation pools; the graph is drawn
in a spawned renderer process (``render_png``), never in a thread that takes webhooks or applies
payloads. Rows live in ``ticket_attachments`` (store.py) and are served by
``GET /api/v1/tickets/<id>/attachments`` (list) and ``.../attachments/<name>`` (content).
"""
from __future__ import annotations

import io
import json
import multiprocessing
import os
import re
import logging
import threading
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

import requests
from psycopg.types.json import Jsonb

from core.config import view
from core.prom import Prometheus, PrometheusError, base_url
from webhook_receiver.db import connect
from webhook_receiver.remediation.template import TemplateError, render_str
from webhook_receiver.remediation.verify import belongs, expr_from_generator_url

log = logging.getLogger(__name__)

KINDS = {"graph.png": ("graph", "image/png"), "values.json": ("values", "application/json"),
         "related.json": ("related", "application/json"), "logs.txt": ("logs", "text/plain; charset=utf-8"),
         "errors.json": ("error", "application/json")}


class SourceError(RuntimeError):
    pass


def _ts(dt: datetime) -> float:
    return dt.timestamp()


def window(starts_at: datetime, now: float, span: float) -> tuple[float, float]:
    """[start, end] of the graph: the last `span` up to now, or centred on startsAt when that is older."""
    s = _ts(starts_at)
    end = now
    start = end - span
    if s < start + span * 0.1:
        start = s - span / 2
        end = min(now, start + span)
    return start, end


def step_for(start: float, end: float, points: int = 240) -> float:
    return max(1.0, round((end - start) / points))


def _label_str(labels: dict, skip=("__name__",)) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in skip)


_CMP = re.compile(r"^(?P<left>.+?)\s*(?P<op>>=|<=|==|!=|>|<)\s*(?:bool\s+)?(?P<num>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$",
                  re.S)


def split_threshold(expr: str) -> tuple[str, float | None]:
    """'<left> > 0.85' -> ('<left>', 0.85), so the graph shows the whole curve and the threshold.

    Only for a single comparison with a number at the end (no and/or/unless): anything else is
    graphed as it is.
    """
    if re.search(r"\b(and|or|unless)\b", expr):
        return expr, None
    m = _CMP.match(expr.strip())
    if not m or m.group("left").count("(") != m.group("left").count(")"):
        return expr, None
    return m.group("left").strip(), float(m.group("num"))


def draw_png(series: list[dict], title: str, expr: str, starts_at: datetime, width_px: int, height_px: int,
             threshold: float | None = None) -> bytes:
    """A PNG of matrix series (Prometheus query_range result) with a line at startsAt."""
    import matplotlib  # heavy: matplotlib, only when a graph is drawn

    matplotlib.use("Agg")
    from matplotlib import dates as mdates
    from matplotlib.figure import Figure

    dpi = 100
    fig = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
    ax = fig.add_subplot(1, 1, 1)
    for s in series:
        xs = [datetime.fromtimestamp(float(t), timezone.utc) for t, _ in s["values"]]
        ys = [float(v) for _, v in s["values"]]
        ax.plot(xs, ys, linewidth=1.4, label=_label_str(s.get("metric", {}))[:80] or "value")
    ax.axvline(starts_at, color="#d62728", linestyle="--", linewidth=1, label="alert startsAt")
    if threshold is not None:
        ax.axhline(threshold, color="#ff7f0e", linestyle=":", linewidth=1.2, label=f"threshold {threshold:g}")
    ax.set_title(title[:100], fontsize=10)
    ax.set_xlabel("UTC")
    ax.set_ylabel((expr.replace("\n", " ")[:60] + ("..." if len(expr) > 60 else "")), fontsize=7)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=timezone.utc))
    ax.grid(True, alpha=0.3)
    if series:
        ax.legend(fontsize=6, loc="upper left")
    else:
        ax.text(0.5, 0.5, "no data for this expression in the window", transform=ax.transAxes,
                ha="center", va="center")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


RENDER_TIMEOUT = 120.0  # seconds for one graph, the renderer's start (matplotlib import) included
_renderer: dict = {"pid": None, "pool": None}
_renderer_lock = threading.Lock()


def _leave_with(parent: int) -> None:
    """The renderer's initializer: end when the process that started it is gone. Its parent may
    end without stopping it (os._exit, SIGKILL), and a spawned pool worker holds both ends of its
    own call pipe, so it would never see the end of it and wait for work forever (an orphan)."""
    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)
    threading.Thread(target=watch, name="renderer-parent-watch", daemon=True).start()


def _render_pool() -> ProcessPoolExecutor:
    with _renderer_lock:
        if _renderer["pool"] is None or _renderer["pid"] != os.getpid():  # none yet, or forked since
            _renderer["pool"] = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                                    initializer=_leave_with, initargs=(os.getpid(),))
            _renderer["pid"] = os.getpid()
        return _renderer["pool"]


def render_png(*args) -> bytes:
    """``draw_png(*args)`` in this process's graph renderer: one spawned process of its own, so
    matplotlib's CPU time never holds the GIL of a process that takes webhooks or applies
    payloads. A renderer that died is replaced on the next call; this graph fails (ValueError)."""
    pool = _render_pool()
    try:
        return pool.submit(draw_png, *args).result(timeout=RENDER_TIMEOUT)
    except BrokenProcessPool:
        with _renderer_lock:
            if _renderer["pool"] is pool:
                _renderer["pool"] = None
        raise ValueError("the graph renderer process died") from None
    except TimeoutError:
        raise ValueError(f"the graph took longer than {RENDER_TIMEOUT:g}s to draw") from None


def stop_renderer() -> None:
    """Stop this process's graph renderer (it starts again when needed)."""
    with _renderer_lock:
        pool, _renderer["pool"] = _renderer["pool"], None
    if pool is not None and _renderer["pid"] == os.getpid():
        pool.shutdown(wait=False, cancel_futures=True)


def rule_expr(prom: Prometheus, alertname: str) -> str | None:
    """The expression of the alerting rule called alertname (Prometheus /api/v1/rules)."""
    for g in prom.rules(type="alert"):
        for r in g.get("rules", []):
            if r.get("type") == "alerting" and r.get("name") == alertname:
                return r.get("query")
    return None


def related_alerts(cfg: dict, labels: dict, fingerprint: str, timeout: float) -> list[dict]:
    """Other firing alerts on the same service (Alertmanager v2, else Prometheus)."""
    e = view(cfg, "enrichment")  # typed view; cfg itself for stack.* and base_url
    service = labels.get("service")
    am = e.alertmanager_url
    if not am and cfg["stack"]["ports"].get("alertmanager") not in (None, "auto"):
        am = f"http://{cfg['stack']['host']}:{cfg['stack']['ports']['alertmanager']}"
    out: list[dict] = []
    if am:
        params = {"active": "true", "silenced": "false", "inhibited": "true"}
        if service:
            params["filter"] = f'service="{service}"'
        try:
            r = requests.get(am.rstrip("/") + "/api/v2/alerts", params=params, timeout=timeout)
            r.raise_for_status()
            for a in r.json():
                if a.get("fingerprint") == fingerprint or a.get("labels") == labels:
                    continue
                out.append({"labels": a.get("labels", {}), "startsAt": a.get("startsAt"),
                            "state": (a.get("status") or {}).get("state"),
                            "summary": (a.get("annotations") or {}).get("summary")})
            return out
        except (requests.RequestException, ValueError) as exc:
            log.info("event=related_alertmanager_failed error=%r", str(exc))
    url = base_url(cfg, e.prometheus_url)
    if not url:
        raise SourceError("neither Alertmanager nor Prometheus is configured")
    try:
        alerts = Prometheus(url, timeout).alerts()
    except PrometheusError as exc:
        raise SourceError(str(exc)) from None
    for a in alerts:
        al = a.get("labels", {})
        if a.get("state") != "firing" or (al.get("alertname") == labels.get("alertname") and belongs(al, labels)):
            continue
        if service and al.get("service") != service:
            continue
        out.append({"labels": al, "startsAt": a.get("activeAt"), "state": a.get("state"),
                    "summary": (a.get("annotations") or {}).get("summary")})
    return out


def tail_file(path: str, lines: int) -> str:
    p = Path(path)
    if not p.exists():
        raise SourceError(f"log file {path} does not exist")
    with open(p, "rb") as f:
        try:
            f.seek(-min(p.stat().st_size, max(65536, lines * 400)), 2)
        except OSError:
            f.seek(0)
        data = f.read().decode(errors="replace")
    return "\n".join(deque(data.splitlines(), maxlen=lines))


def _loki_entries(url: str, query: str, start: float, end: float, limit: int,
                  timeout: float) -> list[tuple[int, str, str]]:
    """[(ts_ns, labels, line)] from Loki's query_range, newest `limit` of them."""
    try:
        r = requests.get(url.rstrip("/") + "/loki/api/v1/query_range",
                         params={"query": query, "start": str(int(start * 1e9)), "end": str(int(end * 1e9)),
                                 "limit": str(limit), "direction": "backward"}, timeout=timeout)
    except requests.RequestException as exc:
        raise SourceError(f"loki unreachable: {exc}") from None
    if r.status_code != 200:
        raise SourceError(f"loki answered {r.status_code}: {r.text[:200]}")
    try:
        body = r.json()
    except ValueError:
        raise SourceError(f"loki answered no JSON: {r.text[:200]}") from None
    if body.get("status") != "success" or body.get("data", {}).get("resultType") != "streams":
        raise SourceError(f"unexpected loki answer: {str(body)[:200]}")
    entries = []
    for stream in body["data"]["result"]:
        lbl = _label_str(stream.get("stream", {}))
        for ts, line in stream.get("values", []):
            entries.append((int(ts), lbl, str(line)[:MAX_LOG_LINE]))
    entries.sort()
    return entries[-limit:]


MAX_LOG_LINE = 2000  # characters of one line on the ticket (a line is attacker-controlled text)


def loki_excerpt(url: str, query: str, start: float, end: float, limit: int, timeout: float,
                 error_query: str | None = None) -> str:
    """At most `limit` lines from Loki's query_range, printed oldest first: the newest lines of
    `error_query` first (when given), the newest other lines of `query` fill the rest."""
    errs = _loki_entries(url, error_query, start, end, limit, timeout) if error_query else []
    rest = []
    if len(errs) < limit:
        seen = {(ts, line) for ts, _, line in errs}
        rest = [e for e in _loki_entries(url, query, start, end, limit, timeout) if (e[0], e[2]) not in seen]
        rest = rest[len(rest) - (limit - len(errs)):] if len(rest) > limit - len(errs) else rest
    entries = sorted(errs + rest)
    return "\n".join(f"{datetime.fromtimestamp(ts / 1e9, timezone.utc).isoformat(timespec='milliseconds')} "
                     f"{{{lbl}}} {line}" for ts, lbl, line in entries)


LOGS_UNAVAILABLE = "logs unavailable"


def loki_url_of(cfg: dict) -> str | None:
    """The Loki the excerpt comes from: enrichment.logs.loki_url, else (source auto) the stack's
    own Loki when it runs (logs.loki resolved to on by `up`); None: no Loki."""
    lg = cfg["enrichment"]["logs"]
    if lg["loki_url"]:
        return lg["loki_url"]
    if lg["source"] == "auto" and cfg.get("logs", {}).get("loki") == "on":
        port = cfg["stack"]["ports"].get("loki")
        if isinstance(port, int):
            return f"http://{cfg['stack']['host']}:{port}"
    return None


def explore_url(grafana_url: str, query: str, start: float, end: float) -> str:
    """Grafana Explore on the Loki datasource (uid loki) with the query over the window."""
    pane = {"a": {"datasource": "loki", "queries": [{"refId": "A", "expr": query, "queryType": "range",
                                                     "datasource": {"type": "loki", "uid": "loki"}}],
                  "range": {"from": str(int(start * 1000)), "to": str(int(end * 1000))}}}
    return (grafana_url.rstrip("/") + "/explore?schemaVersion=1&orgId=1&panes="
            + quote(json.dumps(pane, separators=(",", ":")), safe=""))


def log_window(starts_at: datetime | None, now: float, since: float) -> tuple[float, float]:
    """The alert's window: `since` before it started up to now, at most a day."""
    start = now - since
    if starts_at is not None:
        start = min(start, _ts(starts_at) - since)
    return max(start, now - 86400.0), now


def log_excerpt(cfg: dict, labels: dict, now: float, timeout: float,
                starts_at: datetime | None = None) -> tuple[str, dict] | None:
    """(text, meta) of the excerpt, or None when no log source is configured. A Loki that does
    not answer gives the text `logs unavailable: <why>` (meta unavailable=True), not an error."""
    lg = view(cfg, "enrichment").logs
    ctx = {**labels, "run_dir": str(Path(cfg["stack"]["run_dir"]).resolve())}
    try:
        if lg.source == "file":
            return tail_file(str(render_str(lg.file, ctx)), lg.lines), {"source": "file"}
        url = loki_url_of(cfg) if lg.source in ("loki", "auto") else None
        if url is None:
            return None
        # label values go inside LogQL strings: escaped (a label is attacker-controlled text)
        qctx = {k: str(v).replace("\\", "\\\\").replace('"', '\\"') for k, v in ctx.items()}
        query = str(render_str(lg.loki_query, qctx))
        error_query = str(render_str(lg.loki_error_query, qctx)) if lg.loki_error_query else None
        start, end = log_window(starts_at, now, lg.since)
        meta = {"source": "loki", "query": query, "error_query": error_query, "start": start, "end": end}
        if lg.grafana_url:
            meta["explore_url"] = explore_url(lg.grafana_url, query, start, end)
        try:
            return loki_excerpt(url, query, start, end, lg.lines, timeout, error_query), meta
        except SourceError as exc:
            return f"{LOGS_UNAVAILABLE}: {exc}"[:1000], {**meta, "unavailable": True}
    except TemplateError as exc:
        raise SourceError(str(exc)) from None


def load_ticket(conn, ticket_id: int) -> dict | None:
    return conn.execute("select id, alertname, labels, annotations, fingerprint, starts_at, generator_url, status "
                        "from tickets where id = %s", (ticket_id,)).fetchone()


def save(conn, ticket_id: int, name: str, body: bytes, meta: dict | None = None) -> None:
    kind, ctype = KINDS[name]
    conn.execute("""insert into ticket_attachments (ticket_id, kind, name, content_type, body, meta)
                    values (%s, %s, %s, %s, %s, %s)
                    on conflict (ticket_id, name) do update set body = excluded.body, meta = excluded.meta,
                        content_type = excluded.content_type, created_at = now()""",
                 (ticket_id, kind, name, ctype, body, Jsonb(meta or {})))


def enrich(cfg: dict, db_url: str, ticket_id: int, now: float | None = None) -> dict:
    """Build and store every attachment for a ticket; returns {name: 'ok' | error}."""
    e = view(cfg, "enrichment")  # typed view; cfg itself for stack.* and base_url
    now = time.time() if now is None else now
    timeout = e.timeout
    result: dict[str, str] = {}
    errors: dict[str, str] = {}
    with connect(db_url, autocommit=True) as conn:
        t = load_ticket(conn, ticket_id)
        if t is None:
            return {"ticket": "not found"}
        labels = dict(t["labels"] or {})
        url = base_url(cfg, e.prometheus_url)
        prom = Prometheus(url, timeout) if url else None
        expr = expr_from_generator_url(t["generator_url"])
        source = "generatorURL"
        if expr is None and prom is not None:
            try:
                expr, source = rule_expr(prom, t["alertname"]), "rule"
            except PrometheusError as exc:
                errors["expr"] = str(exc)
        # graph + current values
        if prom is None:
            errors["graph.png"] = errors["values.json"] = "no Prometheus configured"
        elif not expr:
            errors["graph.png"] = errors["values.json"] = "no expression: neither generatorURL nor a rule named " \
                                                         f"{t['alertname']}"
        else:
            start, end = window(t["starts_at"], now, e.graph_range)
            graph_expr, threshold = split_threshold(expr)
            try:
                data = prom.query_range(graph_expr, start, end, step_for(start, end))
                series = data.get("result", []) if data.get("resultType") == "matrix" else []
                mine = [s for s in series if belongs(s.get("metric", {}), labels)]
                shown = (mine or series)[: e.max_series]
                title = f"{t['alertname']} {_label_str({k: v for k, v in labels.items() if k in ('service', 'region', 'instance')})}"
                png = render_png(shown, title, graph_expr, t["starts_at"], e.graph_width_px, e.graph_height_px,
                                 threshold)
                save(conn, ticket_id, "graph.png", png, {"expr": expr, "graph_expr": graph_expr,
                                                         "threshold": threshold, "expr_source": source, "start": start,
                                                         "end": end, "series": len(shown)})
                result["graph.png"] = "ok"
            except (PrometheusError, ValueError) as exc:
                errors["graph.png"] = str(exc)
            try:
                inst = prom.query(expr, at=now)
                vals = inst.get("result", []) if inst.get("resultType") == "vector" else []
                rows = [{"labels": s.get("metric", {}), "value": float(s["value"][1]),
                         "this_alert": belongs(s.get("metric", {}), labels)} for s in vals]
                rows.sort(key=lambda r: not r["this_alert"])
                save(conn, ticket_id, "values.json", json.dumps({"expr": expr, "at": now, "values": rows[:50]},
                                                                indent=1).encode(), {"count": len(rows)})
                result["values.json"] = "ok"
            except (PrometheusError, ValueError) as exc:
                errors["values.json"] = str(exc)
        try:
            rel = related_alerts(cfg, labels, t["fingerprint"], timeout)
            save(conn, ticket_id, "related.json", json.dumps({"service": labels.get("service"), "alerts": rel},
                                                             indent=1).encode(), {"count": len(rel)})
            result["related.json"] = "ok"
        except SourceError as exc:
            errors["related.json"] = str(exc)
        try:
            got = log_excerpt(cfg, labels, now, timeout, t["starts_at"])
            if got is not None:
                text, meta = got
                unavailable = bool(meta.get("unavailable"))
                save(conn, ticket_id, "logs.txt", text.encode(),
                     {**meta, "lines": 0 if unavailable or not text else text.count("\n") + 1})
                if unavailable:
                    errors["logs.txt"] = text
                else:
                    result["logs.txt"] = "ok"
        except (SourceError, OSError, ValueError) as exc:
            errors["logs.txt"] = str(exc)
        if errors:
            save(conn, ticket_id, "errors.json", json.dumps(errors, indent=1).encode(), {"count": len(errors)})
        else:
            conn.execute("delete from ticket_attachments where ticket_id = %s and name = 'errors.json'", (ticket_id,))
    result.update(errors)
    log.info("event=ticket_enriched ticket_id=%s attached=%s errors=%s", ticket_id,
             ",".join(k for k, v in result.items() if v == "ok"), ",".join(errors) or "none")
    return result


def list_attachments(conn, ticket_id: int) -> list[dict]:
    rows = conn.execute("""select id, kind, name, content_type, length(body) as size, meta, created_at
                           from ticket_attachments where ticket_id = %s order by id""", (ticket_id,)).fetchall()
    return [{**r, "created_at": r["created_at"].isoformat()} for r in rows]


def get_attachment(conn, ticket_id: int, name: str) -> dict | None:
    return conn.execute("select name, content_type, body from ticket_attachments where ticket_id = %s and name = %s",
                        (ticket_id, name)).fetchone()
