"""`escalation:` escalation policies for tickets (who is paged, and when, until someone acks)."""
from core.spec import ConfigError, Field, ListOf

LEVEL = {
    "name": Field("str", help="shown in notifications and the console, e.g. 'L1 ops'"),
    # on-call schedule (oncall.schedules[].name) whose current person owns the ticket at this level
    "schedule": Field("str"),
    # at level 1, prefer the schedule named like the alert's `team` label when one exists
    "use_alert_team": Field("bool", False),
    # how long this level has to acknowledge before the next level is paged
    "ack_timeout": Field("duration", "5m", minimum=1),
}

POLICY = {
    "name": Field("str"),
    "levels": ListOf(LEVEL, min_items=1),
    # after the last level's ack_timeout, page the last level again every repeat_interval
    "repeat_interval": Field("duration", "30m", minimum=1),
    # 0 = repeat until acknowledged
    "max_repeats": Field("int", 0, minimum=0),
}

DEFAULT_POLICIES = [{
    "name": "default",
    "levels": [
        {"name": "L1 ops team", "schedule": "ops", "use_alert_team": True, "ack_timeout": "5m"},
        {"name": "L2 IT manager", "schedule": "it-manager", "ack_timeout": "15m"},
        {"name": "L3 CTO", "schedule": "cto", "ack_timeout": "30m"},
    ],
    "repeat_interval": "30m",
}]

SECTION = {
    "default_policy": Field("str", "default"),
    "policies": ListOf(POLICY, default=DEFAULT_POLICIES, min_items=1, unique_key="name"),
    # alert `team` label -> policy name (teams not listed use default_policy)
    "team_policies": Field("dict", {}),
}


def check(cfg):
    e = cfg["escalation"]
    names = {p["name"] for p in e["policies"]}
    if e["default_policy"] not in names:
        raise ConfigError("escalation.default_policy", f"no policy named {e['default_policy']!r}")
    for team, pol in e["team_policies"].items():
        if pol not in names:
            raise ConfigError(f"escalation.team_policies.{team}", f"no policy named {pol!r}")
    schedules = {s["name"] for s in cfg["oncall"]["schedules"]}
    for i, p in enumerate(e["policies"]):
        for j, lv in enumerate(p["levels"]):
            if lv["schedule"] not in schedules:
                raise ConfigError(f"escalation.policies[{i}].levels[{j}].schedule",
                                  f"no on-call schedule named {lv['schedule']!r} "
                                  f"(schedules: {', '.join(sorted(schedules))})")
