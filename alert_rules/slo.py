"""Availability SLO per service: multi-window multi-burn-rate alerts (SRE workbook, 30-day window).

SLI: the share of a service's requests (all regions) that do not answer 5xx, from the
services' own ``opsstack_http_requests_total``. Objective: ``alerts.slo.availability``
(99.9% by default), so the error budget is 0.1% of the requests in 30 days.

Burn rate = error ratio / (1 - objective). As docs/development.md says:
- page  (SloErrorBudgetBurnFast, critical): 14.4x over 1h and 5m, or 6x over 6h and 30m;
- ticket (SloErrorBudgetBurnSlow, warning): 3x over 1d and 2h, or 1x over 3d and 6h;
each only while the service served at least ``alerts.slo.min_requests_per_hour`` requests in
the last hour (a quiet service where one failed request is 10% of the traffic does not page).
The guard counts requests (``increase``), so a service whose counters are younger than an hour
is judged on what it really served, not on a rate diluted over the whole hour.

Recording rules: ``service:opsstack_http_requests:rate5m``, ``service:opsstack_http_errors:rate5m``,
``service:opsstack_http_requests:increase1h``, ``service:opsstack_slo_error_ratio:rate<W>``
(W = 5m 30m 1h 2h 6h 1d 3d 30d) and ``service:opsstack_slo_error_budget_remaining:ratio30d``
(1 = untouched, 0 = spent, negative = overspent). This file does not depend on platform.yml.
"""
from __future__ import annotations

from alert_rules.common import alert, fmt, group, record, selector, team_scopes
from alert_rules.platform import ERR, REQ, error_ratio_expr
from core.series import (SLO_BUDGET_REMAINING, SLO_ERRORS_5M, SLO_REQUESTS_1H, SLO_REQUESTS_5M, slo_budget,
                         slo_error_ratio)

REQUESTS_5M = SLO_REQUESTS_5M
ERRORS_5M = SLO_ERRORS_5M
REQUESTS_1H = SLO_REQUESTS_1H
BUDGET_REMAINING = SLO_BUDGET_REMAINING
SHORT_WINDOWS = ("30m", "1h", "2h", "6h")
LONG_WINDOWS = ("1d", "3d", "30d")

# (burn-rate factor, long window, short window)
PAGE = ((14.4, "1h", "5m"), (6, "6h", "30m"))
TICKET = ((3, "1d", "2h"), (1, "3d", "6h"))


error_ratio = slo_error_ratio
budget = slo_budget


def recording_groups(cfg: dict) -> list[dict]:
    p = cfg["alerts"]["selectors"]["platform"]
    short = [
        record(REQUESTS_5M, f"sum by (service) (rate({REQ}{selector(p)}[5m]))"),
        record(ERRORS_5M, f"sum by (service) (rate({REQ}{selector(p, ERR)}[5m]))\nor\n0 * {REQUESTS_5M}"),
        record(REQUESTS_1H, f"sum by (service) (increase({REQ}{selector(p)}[1h]))"),
        record(error_ratio("5m"), f"{ERRORS_5M}\n/\n{REQUESTS_5M}"),
        *[record(error_ratio(w), error_ratio_expr("service", p, w)) for w in SHORT_WINDOWS],
    ]
    long = [
        *[record(error_ratio(w), f"sum_over_time({ERRORS_5M}[{w}])\n/\nsum_over_time({REQUESTS_5M}[{w}])")
          for w in LONG_WINDOWS],
        record(BUDGET_REMAINING, f"1 - {error_ratio('30d')} / {fmt(budget(cfg))}"),
    ]
    return [group("opsstack-slo-recording", short),
            group("opsstack-slo-recording-long", long, interval="1m")]


def burn_expr(cfg: dict, windows, scope: str) -> str:
    b = fmt(budget(cfg))
    guard = fmt(cfg["alerts"]["slo"]["min_requests_per_hour"])
    sel = selector(scope)
    pairs = [f"  (\n    {error_ratio(long)}{sel} > ({fmt(factor)} * {b})\n  and\n"
             f"    {error_ratio(short)}{sel} > ({fmt(factor)} * {b})\n  )"
             for factor, long, short in windows]
    return f"(\n" + "\n  or\n".join(pairs) + f"\n)\nand on (service)\n{REQUESTS_1H}{sel} >= {guard}"


def alert_group(cfg: dict, team: str, scope: str) -> list[dict]:
    slo = cfg["alerts"]["slo"]
    objective = f"{slo['availability'] * 100:g}%"
    svc = "{{ $labels.service }}"

    def windows(spec) -> str:
        return " or ".join(f"{fmt(f)}x over {lw} and {sw}" for f, lw, sw in spec)

    return [
        alert(cfg, "SloErrorBudgetBurnFast", burn_expr(cfg, PAGE, scope),
              for_seconds=slo["page_for"], severity="critical", tier=1, service=svc, team=team,
              summary="A service burns its 30-day error budget fast.",
              description=f"{svc} answers {{{{ $value | humanizePercentage }}}} of its requests with "
                          f"5xx over the long window: at this rate the {objective} availability "
                          f"budget of 30 days is gone within 2 days ({windows(PAGE)})."),
        alert(cfg, "SloErrorBudgetBurnSlow", burn_expr(cfg, TICKET, scope),
              for_seconds=slo["ticket_for"], severity="warning", tier=1, service=svc, team=team,
              summary="A service burns its 30-day error budget faster than it may.",
              description=f"{svc} answers {{{{ $value | humanizePercentage }}}} of its requests with "
                          f"5xx over the long window: the {objective} availability objective will be "
                          f"missed if this goes on ({windows(TICKET)})."),
    ]


def groups(cfg: dict) -> list[dict]:
    scopes = team_scopes(cfg)
    out = recording_groups(cfg)
    for team, scope in scopes:
        suffix = "" if len(scopes) == 1 else f"-{team}"
        out.append(group(f"opsstack-slo-alerts{suffix}", alert_group(cfg, team, scope)))
    return out
