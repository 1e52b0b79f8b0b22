"""Capacity planning: per target the current value, growth per month, the date each threshold
is reached (with the interval) and what to do about it. Markdown for people, JSON for tools."""
from __future__ import annotations

import json
import math
from datetime import datetime, timezone

ACTIONS = {
    "disk": "Expand the volume (or add a disk), tighten log/backup retention, move cold data to object storage.",
    "memory": "Find the leak (heap profile of the service); until fixed, raise the memory limit or let the "
              "memory-leak playbook restart it at a quiet time.",
    "cpu": "Raise the CPU limit or scale out (more replicas); check for a hot loop or a runaway query.",
    "db_storage": "Expand the database volume; archive or partition old events, VACUUM bloated tables.",
    "bandwidth": "Upgrade the link or rebalance traffic across regions; serve static content from the CDN.",
    "latency": "Profile the slow routes, check slow queries and cache hit ratio; scale out before the SLO burns.",
    "other": "Review the trend with the service owner.",
}
MONTH = 30 * 86400.0


def _iso(ts) -> str | None:
    if ts is None:
        return None
    if isinstance(ts, datetime):
        return ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    if not math.isfinite(ts):
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def row_from_forecast(target, fc) -> dict:
    """One report row from a live Forecast (forecasters.engine)."""
    return {
        "target": target.name, "kind": target.kind, "service": target.service, "team": target.team,
        "model": fc.model, "as_of": _iso(fc.t_last), "current": fc.y_last,
        "growth_per_month": fc.growth_per_month,
        "growth_per_month_ratio": (fc.growth_per_month / fc.y_last) if fc.y_last else None,
        "backtest_mase": fc.backtest_mase,
        "thresholds": [
            {"threshold": thr, "direction": target.spec.direction, "reached_at": _iso(c.at),
             "earliest": _iso(c.earliest), "latest": _iso(c.latest),
             "probability": {target.horizon_labels.get(h, str(h)): p
                             for (t2, h), p in fc.exceedance.items() if t2 == thr}}
            for thr, c in fc.crossings.items()
        ],
        "horizons": {target.horizon_labels.get(h, str(h)): {"yhat": v[0], "lower": v[1], "upper": v[2]}
                     for h, v in fc.horizons.items()},
        "action": ACTIONS.get(target.kind, ACTIONS["other"]),
    }


def row_from_store(s: dict) -> dict:
    """One report row from forecasters.storage.Store.summaries()."""
    cur = s["last_value"]
    return {
        "target": s["target"], "kind": s["kind"], "service": s["service"], "team": s["team"],
        "model": s["model"], "as_of": _iso(s["last_ts"]), "current": cur,
        "growth_per_month": s["growth_per_month"],
        "growth_per_month_ratio": (s["growth_per_month"] / cur) if cur else None,
        "backtest_mase": s["backtest_mase"],
        "thresholds": [
            {"threshold": c["threshold"], "direction": c["direction"], "reached_at": _iso(c["crossing_at"]),
             "earliest": _iso(c["earliest_at"]), "latest": _iso(c["latest_at"]),
             "probability": {p["horizon"]: p["probability"] for p in s["probabilities"]
                             if p["threshold"] == c["threshold"]}}
            for c in s["crossings"]
        ],
        "horizons": {h["horizon"]: {"yhat": h["yhat"], "lower": h["yhat_lower"], "upper": h["yhat_upper"]}
                     for h in s["horizons"]},
        "action": ACTIONS.get(s["kind"], ACTIONS["other"]),
    }


def waiting_row(target, have: float, need: float) -> dict:
    """A target that has too little history to forecast yet (forecasters.service.Waiting)."""
    return {"target": target.name, "kind": target.kind, "service": target.service, "team": target.team,
            "history_seconds": float(have), "needed_seconds": float(need),
            "remaining_seconds": max(0.0, float(need) - float(have))}


def waiting_from_store(w: dict) -> dict:
    """One waiting row from forecasters.storage.Store.waiting()."""
    have, need = w["history_seconds"], w["needed_seconds"]
    return {"target": w["target"], "kind": w["kind"], "service": w["service"], "team": w["team"],
            "history_seconds": have, "needed_seconds": need, "remaining_seconds": max(0.0, need - have)}


def to_json(rows: list[dict], generated: float, waiting: list[dict] = ()) -> str:
    return json.dumps({"generated_at": _iso(generated), "targets": rows, "waiting": list(waiting)},
                      indent=2, default=str) + "\n"


def duration(seconds: float) -> str:
    """A span for people: 0s, 45s, 35m, 1h 5m, 2d 3h."""
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s}s"
    d, rest = divmod(s, 86400)
    h, rest = divmod(rest, 3600)
    m = rest // 60
    parts = [f"{d}d"] * bool(d) + [f"{h}h"] * bool(h) + [f"{m}m"] * bool(m and not d)
    return " ".join(parts) or "0s"


def _num(v) -> str:
    if v is None:
        return "-"
    a = abs(v)
    if a != 0 and (a >= 1e5 or a < 1e-3):
        return f"{v:.3g}"
    return f"{v:.4g}"


def _date(iso: str | None) -> str:
    return iso[:10] if iso else "not within horizon"


def to_markdown(rows: list[dict], generated: float, waiting: list[dict] = ()) -> str:
    out = [f"# Capacity report", "", f"Generated {_iso(generated)}. Values in each target's unit "
           "(ratios 0..1, bytes, seconds). Dates are when the forecast reaches the threshold; the "
           "range is when the 80% band's edges reach it.", "",
           "| Target | Service | Now | Growth / month | Forecast (80% range) | Threshold | Reached | Range | Model |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        g = _num(r["growth_per_month"])
        if r["growth_per_month_ratio"] is not None:
            g += f" ({r['growth_per_month_ratio'] * 100:+.1f}%)"
        fut = "-"
        if r["horizons"]:
            label, v = list(r["horizons"].items())[-1]   # the longest horizon
            fut = f"{_num(v['yhat'])} in {label} ({_num(v['lower'])} .. {_num(v['upper'])})"
        ths = r["thresholds"] or [None]
        for th in ths:
            if th is None:
                out.append(f"| {r['target']} | {r['service']} | {_num(r['current'])} | {g} | {fut} | - | - | - | "
                           f"{r['model']} |")
                continue
            rng = f"{_date(th['earliest'])} .. {_date(th['latest'])}"
            out.append(f"| {r['target']} | {r['service']} | {_num(r['current'])} | {g} | {fut} | "
                       f"{_num(th['threshold'])} | {_date(th['reached_at'])} | {rng} | {r['model']} |")
    if waiting:
        out += ["", "## Waiting for history", "",
                "Not forecast yet: too little history in Prometheus. Each target needs this much before "
                "its first forecast (forecast.min_history).", "",
                "| Target | Service | History so far | Needed | Still to wait |", "|---|---|---|---|---|"]
        for w in waiting:
            out.append(f"| {w['target']} | {w['service']} | {duration(w['history_seconds'])} | "
                       f"{duration(w['needed_seconds'])} | {duration(w['remaining_seconds'])} |")
    out += ["", "## What to do", ""]
    urgent = [(r, th) for r in rows for th in r["thresholds"] if th["reached_at"]]
    urgent.sort(key=lambda x: x[1]["reached_at"])
    if not urgent:
        if rows:
            out.append("No threshold is forecast to be reached within the horizons.")
            if waiting:
                out.append(f"{len(waiting)} target(s) have not enough history to be forecast yet (see Waiting "
                           "for history): they are not covered by this.")
        elif waiting:
            need = max(w["remaining_seconds"] for w in waiting)
            out.append(f"Not enough history to forecast yet: no target has the history it needs, so nothing "
                       f"can be said about thresholds. Run the report again in {duration(need)}.")
        else:
            out.append("No forecasts yet: the forecaster has not run, or it has no targets.")
    for r, th in urgent:
        probs = ", ".join(f"{p * 100:.0f}% within {h}" for h, p in th["probability"].items())
        out.append(f"- **{r['target']}** ({r['service']}, team {r['team']}) reaches {_num(th['threshold'])} "
                   f"around {_date(th['reached_at'])}{f' ({probs})' if probs else ''}: {r['action']}")
    return "\n".join(out) + "\n"
