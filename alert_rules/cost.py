"""Budget-burn alerts on the cost exporter's gauges (exporters/cost, docs/cost.md).

CostBudgetBurn: a service's projected month (its instances plus its bandwidth, a daily mean:
``opsstack_cost_service_monthly_projected``) is above ``exporters.cost.budget_burn_ratio`` x its
monthly budget (``opsstack_cost_budget_monthly``, from ``exporters.cost.budgets``) for an hour.
Both gauges come from the same exporter with the same service and currency labels.
"""
from __future__ import annotations

from alert_rules.common import alert, group, selector, team_scopes


def groups(cfg: dict) -> list[dict]:
    ratio = cfg["exporters"]["cost"]["budget_burn_ratio"]
    scopes = team_scopes(cfg)
    rules = []
    for team, scope in scopes:
        sel = selector(scope)
        rules.append(alert(
            cfg, "CostBudgetBurn",
            f"opsstack_cost_service_monthly_projected{sel} > on (service, currency) "
            f"(opsstack_cost_budget_monthly{sel} * {ratio:g})",
            severity="warning", tier=3, service="{{ $labels.service }}", team=team,
            summary="A service is projected to spend more than its monthly budget.",
            description="{{ $labels.service }} is projected at {{ $value | printf \"%.0f\" }} "
                        "{{ $labels.currency }} this month, above "
                        f"{ratio:.0%} of its budget (opsstack cost report says where it goes).",
            for_seconds=3600))
    return [group("opsstack-cost", rules)]
