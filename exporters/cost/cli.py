"""`opsstack cost report`: spend, rightsizing, reserved capacity, the utilisation band and cost per
1,000 requests, read from Prometheus over exporters.cost.report.window (docs/cost.md).

Markdown by default, `--json` for JSON. Exit 0 with or without findings, 2 when Prometheus
cannot be read.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from datetime import datetime, timezone

from core.config import format_duration, view
from core.prom import Prometheus, PrometheusError, base_url
from core.spec import parse_duration
from exporters.cost.advice import Advice, advise, config_groups, types_of


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="action")
    r = sub.add_parser("report", help="spend, rightsizing, reserved capacity, utilisation band, cost per 1k requests")
    r.add_argument("--json", action="store_true", help="print JSON")
    r.add_argument("--window", help="override exporters.cost.report.window (e.g. 7d)")
    r.add_argument("--prometheus", help="Prometheus URL (default: the running stack's)")


def _money(v: float | None, cur: str) -> str:
    return "-" if v is None else f"{v:,.2f} {cur.upper()}"


def _cell(v) -> str:
    """A Markdown table cell from text that may come from an AWS tag: no pipes, no newlines, bounded."""
    return str(v).replace("|", "/").replace("\n", " ").replace("\r", " ")[:80]


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.0%}"


def markdown(adv: Advice) -> str:
    d = adv.to_json()
    cur, sp = adv.currency, d["spend"]
    out = [f"# Cost report ({format_duration(adv.window)} to "
           f"{datetime.fromtimestamp(adv.at, timezone.utc):%Y-%m-%d %H:%M} UTC)", "",
           f"Instances: {_money(sp['monthly'], cur)} a month; on demand {_pct(sp['on_demand_share'])} of the spend, "
           f"reserved coverage {_pct(sp['reserved_coverage'])}.", "",
           "| service | monthly |", "|---|---:|"]
    out += [f"| {_cell(k)} | {_money(v, cur)} |" for k, v in sp["by_service_monthly"].items()]
    out += ["", "| region | monthly |", "|---|---:|"]
    out += [f"| {_cell(k)} | {_money(v, cur)} |" for k, v in sp["by_region_monthly"].items()]
    if sp["bandwidth_monthly"]:
        out += ["", f"Bandwidth ({sp['bandwidth_source']}): "
                f"{_money(sum(sp['bandwidth_monthly'].values()), cur)} a month."]
    out += ["", "## Rightsizing", ""]
    if d["findings"]:
        out += ["| group | kind | type | P95 CPU | max CPU | memory peak | advise | monthly saving | why |",
                "|---|---|---|---:|---:|---:|---|---:|---|"]
        for f in d["findings"]:
            mem = "-" if f["memory_peak_bytes"] is None else f"{f['memory_peak_bytes'] / 1024 ** 3:.1f} GiB"
            out.append(f"| {_cell(f['group'])} | {f['kind']} | {f['count']} x {_cell(f['current_type'])} | "
                       f"{_pct(f['cpu_p95_ratio'])} | {_pct(f['cpu_max_ratio'])} | {mem} | "
                       f"{f['advised_type'] or 'none (memory)'} | {_money(f['monthly_saving'], cur)} | {f['reason']} |")
        out += ["", f"Total: {_money(d['rightsizing_monthly_saving'], cur)} a month."]
    else:
        out.append("No finding.")
    out += ["", "## Reserved capacity", ""]
    rec = d["reserved"]["recommendations"]
    if rec:
        out += ["| type | region | baseline | reserved now | reserve | on demand/h | reserved/h | yearly saving |",
                "|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in rec:
            out.append(f"| {_cell(r['type'])} | {_cell(r['region'])} | {r['baseline']} | {r['reserved_now']} | "
                       f"{r['count']} | "
                       f"{r['on_demand_price']:.3f} | {r['reserved_price']:.3f} | {_money(r['yearly_saving'], cur)} |")
        out += ["", f"Total: {_money(d['reserved']['yearly_saving'], cur)} a year."]
    else:
        out.append("No steady on-demand baseline to reserve.")
    out += ["", "## Utilisation band", "", "| service | P95 (hourly) | last hour | hours in band |",
            "|---|---:|---:|---:|"]
    for svc, b in d["utilisation_band"].items():
        out.append(f"| {_cell(svc)} | {_pct(b['p95'])} | {_pct(b['last'])} | {_pct(b['in_band_share'])} "
                   f"({b['low']:.0%}-{b['high']:.0%}) |")
    out += ["", "## Cost per 1,000 requests (daily)", ""]
    for svc, pts in d["cost_per_1000_requests"].items():
        vals = ", ".join(f"{datetime.fromtimestamp(t, timezone.utc):%m-%d} {v:.5f}" for t, v in pts)
        out.append(f"- {_cell(svc)}: {vals or '-'}")
    return "\n".join(out) + "\n"


def run(args, cfg) -> int:
    s = view(cfg, "exporters.cost")
    if args.window:
        try:
            window = parse_duration(args.window)
        except ValueError as exc:
            print(f"opsstack cost report: --window: {exc}", file=sys.stderr)
            return 2
        if window <= s.report.step:
            print(f"opsstack cost report: --window must be longer than report.step ({format_duration(s.report.step)})",
                  file=sys.stderr)
            return 2
        s = dataclasses.replace(s, report=dataclasses.replace(s.report, window=window))
    url = base_url(cfg, args.prometheus or s.prometheus_url)
    if url is None:
        print("opsstack cost report: no Prometheus (start the stack or pass --prometheus URL)", file=sys.stderr)
        return 2
    types = types_of(s)
    try:
        adv = advise(s, Prometheus(url, timeout=120), config_groups(s, types), types)
    except PrometheusError as exc:
        print(f"opsstack cost report: cannot read Prometheus: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(adv.to_json(), indent=2) if args.json else markdown(adv), end="" if not args.json else "\n")
    return 0
