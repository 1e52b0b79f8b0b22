"""Cost: spend by service and region, budgets, reserved coverage, savings found, the utilisation
band and cost per 1,000 requests (issue 12; the cost exporter, docs/cost.md).

Money is in `exporters.cost.currency` (the `currency` label of the series); monthly figures are
hourly x `exporters.cost.hours_per_month`. The advice gauges (savings, band, cost per 1,000
requests) are recomputed by the exporter every `exporters.cost.report.refresh_interval` over
`exporters.cost.report.window`.
"""
from __future__ import annotations

from grafana_foundation_sdk.builders import stat, table
from grafana_foundation_sdk.models.common import BigValueColorMode, BigValueGraphMode

from core.config import format_duration
from dashboards.common import bars as _bars, lines as _lines, with_rows
from dashboards.common import GREEN, ORANGE, RED, YELLOW, new_dashboard, panel, prom, reduce_last, steps, \
    to_model

UID = "opsstack-cost"
TITLE = "Cost"
UNITS = {"usd": "currencyUSD", "eur": "currencyEUR", "gbp": "currencyGBP", "jpy": "currencyJPY",
         "krw": "currencyKRW", "cny": "currencyCNY", "inr": "currencyINR"}


def _unit(cfg: dict) -> str:
    return UNITS.get(cfg["exporters"]["cost"]["currency"], "none")


def _stat() -> stat.Panel:
    return (stat.Panel().reduce_options(reduce_last()).color_mode(BigValueColorMode.VALUE)
            .graph_mode(BigValueGraphMode.AREA))


def spend(cfg: dict) -> list:
    c = cfg["exporters"]["cost"]
    hpm, money = c["hours_per_month"], _unit(cfg)
    return [
        panel(_stat(), "Monthly spend",
              "Instances of every group, hourly cost x hours per month (opsstack_cost_service_monthly), plus "
              "bandwidth (opsstack_cost_bandwidth_hourly).", money,
              [prom("sum(opsstack_cost_service_monthly)", "instances"),
               prom(f"sum(opsstack_cost_bandwidth_hourly) * {hpm:g}", "bandwidth")], w=6, h=8),
        panel(_lines(), "Spend by service (monthly rate)",
              "Instance cost per month of each service (opsstack_cost_service_monthly).", money,
              [prom("sum by (service) (opsstack_cost_service_monthly)", "{{service}}")], min_value=0, w=9, h=8),
        panel(_bars(), "Spend by region (monthly rate)",
              "Instance cost per month in each region (opsstack_cost_region_hourly x hours per month) and the "
              "bandwidth served there.", money,
              [prom(f"sum by (region) (opsstack_cost_region_hourly) * {hpm:g}", "{{region}} instances"),
               prom(f"sum by (region) (opsstack_cost_bandwidth_hourly) * {hpm:g}", "{{region}} bandwidth")],
              min_value=0, w=9, h=8),
        panel(_bars(), "Projected month against the budget",
              "Projected monthly cost of each service (instances + bandwidth at the last day's mean, "
              "opsstack_cost_service_monthly_projected) as a share of its budget (opsstack_cost_budget_monthly, "
              f"exporters.cost.budgets). CostBudgetBurn fires above {c['budget_burn_ratio']:.0%} for 1h.",
              "percentunit",
              [prom("opsstack_cost_service_monthly_projected / on (service, currency) opsstack_cost_budget_monthly",
                    "{{service}}")],
              thresholds=steps([(None, GREEN), (0.8 * c["budget_burn_ratio"], YELLOW), (c["budget_burn_ratio"], RED)]),
              min_value=0, max_value=max(1.2, c["budget_burn_ratio"] * 1.2), w=12, h=8),
        panel(_stat(), "On demand and reserved coverage",
              "Share of the spend bought on demand (opsstack_cost_on_demand_share_ratio) and of the instances "
              "covered by a reservation or Savings Plan (opsstack_cost_reserved_coverage_ratio). With AWS "
              "enabled, the RI utilisation is opsstack_cost_reserved_utilisation_ratio.", "percentunit",
              [prom("opsstack_cost_on_demand_share_ratio", "on demand"),
               prom("opsstack_cost_reserved_coverage_ratio", "reserved coverage")],
              min_value=0, max_value=1, w=12, h=8),
    ]


def savings(cfg: dict) -> list:
    r = cfg["exporters"]["cost"]["report"]
    hpm, money = cfg["exporters"]["cost"]["hours_per_month"], _unit(cfg)
    return [
        panel(_stat(), "Savings found",
              "Monthly saving of every rightsizing finding (opsstack_cost_rightsizing_monthly_saving: idle, "
              f"P95 CPU under {r['underused_p95_cpu']:.0%}, P99.5 + {r['headroom']:.0%} fits a smaller type; the "
              "memory guard holds) and the yearly saving of reserving the steady baseline "
              f"(opsstack_cost_reserved_yearly_saving), over {format_duration(r['window'])}.", money,
              [prom("sum(opsstack_cost_rightsizing_monthly_saving)", "rightsizing / month"),
               prom("sum(opsstack_cost_reserved_yearly_saving)", "reserve / year")], w=8, h=8),
        panel(table.Panel(), "Rightsizing findings",
              "One row per instance group with a finding: kind, current and advised type, monthly saving "
              "(`opsstack cost report` has the P95, max and memory peak).", money,
              [prom("opsstack_cost_rightsizing_monthly_saving", instant=True, table=True)], w=16, h=8),
        panel(_bars(), "Reserve the steady baseline",
              "Instances to reserve per type and region (the fewest running in any hour of the window, less "
              "what is reserved; a group with a finding counts as its advised type) and the yearly saving "
              "(opsstack_cost_reserved_yearly_saving).", money,
              [prom("opsstack_cost_reserved_yearly_saving", "{{type}} {{region}}")], min_value=0, w=16, h=8),
        panel(_stat(), "CDN: bandwidth cost and what the cache saves",
              "Monthly rate of the bytes the CDN served (opsstack_cost_bandwidth_hourly{source=\"cdn\"}: the CDN "
              "exporter's bytes, daily mean, x exporters.cost.bandwidth.price_per_gb) and of the bytes its cache "
              "kept off the origin (opsstack_cost_bandwidth_saved_hourly).", money,
              [prom(f'sum(opsstack_cost_bandwidth_hourly{{source="cdn"}}) * {hpm:g}', "served"),
               prom(f"sum(opsstack_cost_bandwidth_saved_hourly) * {hpm:g}", "saved by the cache")], w=8, h=8),
    ]


def utilisation(cfg: dict) -> list:
    r = cfg["exporters"]["cost"]["report"]
    lo, hi = r["band_low"], r["band_high"]
    money = _unit(cfg)
    return [
        panel(_lines(), "Utilisation against the band",
              f"CPU used / vCPUs bought per service (opsstack_cost_utilisation_ratio); the target band is "
              f"{lo:.0%}-{hi:.0%}: below it money idles, above it latency suffers.", "percentunit",
              [prom("opsstack_cost_utilisation_ratio", "{{service}}")],
              thresholds=steps([(None, ORANGE), (lo, GREEN), (hi, RED)]), min_value=0, w=8, h=8),
        panel(_bars(), "Hours inside the band",
              f"Share of the window's hours each service spent inside {lo:.0%}-{hi:.0%} "
              "(opsstack_cost_utilisation_in_band_ratio).", "percentunit",
              [prom("opsstack_cost_utilisation_in_band_ratio", "{{service}}")], min_value=0, max_value=1, w=8, h=8),
        panel(_lines(), "Cost per 1,000 requests",
              "Hourly cost of a service (instances + bandwidth) over the requests it served that day "
              "(opsstack_cost_per_1000_requests); the success metric is this falling by 25%.", money,
              [prom("opsstack_cost_per_1000_requests", "{{service}}")], min_value=0, w=8, h=8, decimals=5),
    ]


ROWS = [
    ("Spend", spend),
    ("Savings found", savings),
    ("Utilisation", utilisation),
]


def build(cfg: dict) -> dict:
    d = new_dashboard(
        UID, TITLE,
        description="Spend by service and region, budgets, on-demand share and reserved coverage, rightsizing and "
                    "reservation savings, the 70-80% utilisation band and cost per 1,000 requests.",
        tags=["cost", "capacity"], time_from="now-24h", refresh="5m")
    return to_model(with_rows(d, ROWS, cfg))
