"""`remediation:` automatic recovery playbooks run by the receiver.

A playbook matches alerts by labels and names an ordered ladder of actions; after each
action the runner checks through Prometheus whether the alert's condition cleared, and
climbs to the next action when it did not. When the ladder is exhausted the ticket is
handed to people. See docs/remediation.md.

Playbooks come from three places, in this order: the shipped demo playbooks
(webhook_receiver/remediation/playbooks/demo.yaml, when `demo_playbooks` is true and the
demo platform is enabled), every file in `playbook_files`, and `playbooks` below. Names
must be unique across all of them.
"""
from __future__ import annotations

import re
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from core.spec import ConfigError, Field, ListOf, validate

BACKENDS = ("supervisor", "docker", "kubernetes", "http", "command", "cloudflare", "varnish", "redis")

# backend -> operation -> required params (the runner checks the same table)
OPERATIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "supervisor": {"restart": ("program",), "start": ("program",), "stop": ("program",),
                   "signal": ("program", "signal"), "replace": ("program",)},
    "docker": {"restart": ("container",), "start": ("container",), "stop": ("container",),
               "replace": ("container",)},
    "kubernetes": {"rollout_restart": ("name",), "scale": ("name", "replicas"),
                   "delete_pod": ()},
    "http": {"request": ("url",)},
    "command": {"run": ("argv",)},
    # cache invalidation (webhook_receiver/remediation/backends/cache.py; targets in exporters.cdn)
    "cloudflare": {"purge": ("zone",)},
    "varnish": {"purge_tag": ("tag",), "ban": ()},
    "redis": {"delete_pattern": ("pattern",)},
}

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


def _name(v):
    return None if _NAME.match(v) else f"must be lowercase letters, digits, '-', '_' or '.', got {v!r}"


ACTION = {
    "name": Field("str", check=_name),
    "backend": Field("str", choices=BACKENDS),
    # what the backend does; default: the backend's first operation (restart / request / run)
    "operation": Field("str", None, nullable=True),
    # backend parameters; strings may hold {label} / {label|default} placeholders
    "params": Field("dict", {}),
    "timeout": Field("duration", None, nullable=True, minimum=0.1),
    # how long to wait for the condition to clear after this action (null = remediation.verify_window)
    "verify_window": Field("duration", None, nullable=True, minimum=0),
    # how this action is verified: PromQL whose result holds no series of the alert when it
    # recovered (a string), or a verify block (VERIFY); null = the playbook's verify, else the
    # alert's own expression
    "verify": Field("any", None, nullable=True),
}

# A verify block: the condition the action changed, asked of Prometheus (often faster than the
# alert's own expression, e.g. a 1m rate where the alert uses a 5m one). A plain string `verify`
# is the same as {query: <string>}.
VERIFY = {
    # PromQL with {label} placeholders (write PromQL braces as {{ }}); labels are checked like a
    # playbook's target (service/region known to the platform, other labels plain names)
    "query": Field("str"),
    # absent: recovered when the result holds no series of the alert (the query says "still broken");
    # present: recovered when it holds one (the query says "healthy again")
    "recovered_when": Field("str", "absent", choices=("absent", "present")),
    # how long to wait for it (null = the action's verify_window, else remediation.verify_window)
    "window": Field("duration", None, nullable=True, minimum=0),
}

# A schedule block: the playbook does not act when its alert fires but in the next low-traffic
# window before a deadline (webhook_receiver/remediation/schedule.py); e.g. a leak's restart
# before the predicted OOM. null = act at once.
SCHEDULE = {
    # PromQL with {label} placeholders: seconds until the deadline (the first value of the result),
    # e.g. the forecaster's seconds_to_threshold of the service's memory; no answer = no deadline
    "deadline": Field("str"),
    # PromQL with {label} placeholders: the traffic whose daily profile gives the low-traffic window
    "traffic": Field("str"),
    "history": Field("duration", "7d", minimum=86400, help="traffic history the daily profile is made of"),
    "bin": Field("duration", "15m", minimum=60, maximum=7200, help="profile bin (and query step)"),
    # the bins within this share of the daily range above the minimum are the low-traffic window
    "quiet_share": Field("float", 0.25, minimum=0.0, maximum=1.0),
    "min_lead": Field("duration", "1h", minimum=0, help="a deadline sooner than this: act at once"),
    "margin": Field("duration", "30m", minimum=0, help="act at least this long before the deadline"),
    # local time of the profile; null = forecast.timezone, else demo.timezone
    "timezone": Field("str", None, nullable=True),
}

PLAYBOOK = {
    "name": Field("str", check=_name),
    "description": Field("str", None, nullable=True),
    "enabled": Field("bool", True),
    # label -> value (exact) or "~regex" (full match); every key must match
    "match": Field("dict"),
    # what cooldowns, attempt limits and the lock are keyed on, e.g. "demo-{service}"
    "target": Field("str", "{alertname}"),
    # the verify of every action that has none: a PromQL string or a verify block (VERIFY)
    "verify": Field("any", None, nullable=True),
    # PromQL: when it returns any series the playbook stands aside (no action, no escalation),
    # e.g. a service-down playbook while the whole region is down (the region playbook acts)
    "skip_if": Field("str", None, nullable=True),
    # PromQL: on_resolved actions wait until it returns no series (e.g. the region is healthy again)
    "restore_after": Field("str", None, nullable=True),
    "restore_timeout": Field("duration", "30m", minimum=0),
    "cooldown": Field("duration", None, nullable=True, minimum=0),
    "max_attempts": Field("int", None, nullable=True, minimum=1),
    "attempt_window": Field("duration", None, nullable=True, minimum=1),
    "dry_run": Field("bool", None, nullable=True),
    # act in the next low-traffic window before a deadline instead of at once (SCHEDULE); null = at once
    "schedule": Field("any", None, nullable=True),
    "actions": ListOf(ACTION, min_items=1, unique_key="name"),
    # run once when the alert resolves (e.g. restore routing); not verified, no ladder
    "on_resolved": ListOf(ACTION, unique_key="name"),
}

SECTION = {
    "enabled": Field("bool", True, "run playbooks on firing alerts"),
    "dry_run": Field("bool", False, "plan and record every action, run none"),
    "kill_switch": Field("bool", False, "stop all automatic actions (also switchable at run time)"),
    # the shipped demo playbooks, when demo.enabled and the runtime is resolved (demo.ports set by `up`)
    "demo_playbooks": Field("bool", True, "use the shipped demo playbooks when demo.enabled"),
    "playbook_files": Field("list", []),
    "playbooks": ListOf(PLAYBOOK, unique_key="name"),
    "cooldown": Field("duration", "10m", minimum=0),
    "max_attempts": Field("int", 3, minimum=1, help="actions per playbook+target per attempt_window"),
    "attempt_window": Field("duration", "1h", minimum=1),
    "action_timeout": Field("duration", "30s", minimum=0.1),
    "verify_window": Field("duration", "2m", minimum=0),
    "verify_interval": Field("duration", "5s", minimum=0.05),
    # consecutive clear checks needed before an action counts as having worked
    "verify_consecutive": Field("int", 2, minimum=1),
    "escalate_on_failure": Field("bool", True, "hand the ticket to people when no action helped"),
    # null = http://<stack.host>:<stack.ports.prometheus>
    "prometheus_url": Field("url", None, nullable=True),
    "workers": Field("int", 4, minimum=1, help="playbook runs at once per receiver process"),
    # a ticket is an incident of several alerts: the playbook acts for each firing alert's own
    # target (once per rendered target), at most this many targets per incident
    "max_targets_per_incident": Field("int", 10, minimum=1, help="targets one incident's playbook acts on"),
    # enrichment / remediation / restore jobs live in PostgreSQL (automation_jobs): retried with
    # backoff, then failed (visible on the ticket); resumed by any receiver after a restart
    "jobs": {
        "max_attempts": Field("int", 5, minimum=1, help="tries of one job before it is marked failed"),
        "initial_backoff": Field("duration", "10s", minimum=0.01, help="first retry delay (doubles)"),
        "max_backoff": Field("duration", "5m", minimum=0.01),
    },
    # a run left pending/running by a replica that died (it holds no run lock any more) is marked
    # failed on its ticket (and escalated) once it is this old
    "orphan_after": Field("duration", "10m", minimum=1),
    "backends": {
        "supervisor": {
            # null = http://<stack.host>:<stack.ports.supervisor>/RPC2
            "url": Field("url", None, nullable=True),
            "username": Field("str", None, nullable=True),
            "password": Field("str", None, nullable=True, secret=True),
        },
        "docker": {
            # unix:///var/run/docker.sock or http://host:2375
            "url": Field("url", "unix:///var/run/docker.sock"),
            "api_version": Field("str", "1.43"),
            "stop_timeout": Field("int", 10, minimum=0),
        },
        "kubernetes": {
            # null = in-cluster (https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT)
            "url": Field("url", None, nullable=True),
            "namespace": Field("str", "default"),
            "token": Field("str", None, nullable=True, secret=True),
            "token_file": Field("str", "/var/run/secrets/kubernetes.io/serviceaccount/token"),
            "ca_file": Field("str", None, nullable=True),
            "verify_tls": Field("bool", True),
        },
        "http": {
            "headers": Field("dict", {}, secret=True),  # may carry Authorization
        },
        "command": {
            "enabled": Field("bool", True, "allow the command backend at all"),
            "cwd": Field("str", None, nullable=True),
            "max_output_bytes": Field("int", 8192, minimum=256),
        },
    },
}


def normalize_verify(value, key: str) -> dict | None:
    """A playbook's or action's ``verify`` as a verify block ({query, recovered_when, window})."""
    if value is None:
        return None
    if isinstance(value, str):
        value = {"query": value}
    if not isinstance(value, dict):
        raise ConfigError(key, "expected a PromQL string or a mapping {query, recovered_when, window}, "
                               f"got {type(value).__name__}")
    out = validate(VERIFY, value, key)
    problem = _promql_shape(out["query"])
    if problem:
        raise ConfigError(f"{key}.query", problem)
    return out


# the placeholder syntax of webhook_receiver/remediation/template.py: {{ and }} are braces
_PH = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_.]*)(?:\|([^{}]*))?\}")


def _promql_shape(query: str) -> str | None:
    """Why the query, placeholders filled in, cannot be PromQL (unbalanced brackets or quotes)."""
    text = _PH.sub(lambda m: {"{{": "{", "}}": "}"}.get(m.group(0), "x"), query)
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)  # label values may hold brackets
    if text.count('"') % 2:
        return "unbalanced double quotes"
    stack = []
    for ch in text:
        if ch in "({[":
            stack.append(ch)
        elif ch in ")}]":
            if not stack or "({[".index(stack.pop()) != ")}]".index(ch):
                return (f"unbalanced {ch!r}: write PromQL braces as {{{{ }}}} and placeholders as {{label}}, "
                        'e.g. up{{service="{service}"}}')
    if stack:
        return (f"unclosed {stack[-1]!r}: write PromQL braces as {{{{ }}}} and placeholders as {{label}}, "
                'e.g. up{{service="{service}"}}')
    return None


def check_playbook(pb: dict, key: str) -> None:
    """Cross-key rules for one playbook (also used for playbook files)."""
    pb["verify"] = normalize_verify(pb["verify"], f"{key}.verify")
    if pb["schedule"] is not None:
        if not isinstance(pb["schedule"], dict):
            raise ConfigError(f"{key}.schedule", "expected a mapping (deadline, traffic, ...) or null")
        pb["schedule"] = validate(SCHEDULE, pb["schedule"], f"{key}.schedule")
        for q in ("deadline", "traffic"):
            problem = _promql_shape(pb["schedule"][q])
            if problem:
                raise ConfigError(f"{key}.schedule.{q}", problem)
        tz = pb["schedule"]["timezone"]
        if tz is not None:
            try:
                ZoneInfo(tz)
            except (ZoneInfoNotFoundError, ValueError):
                raise ConfigError(f"{key}.schedule.timezone", f"unknown time zone {tz!r}") from None
    for k, v in pb["match"].items():
        if not isinstance(v, str):
            raise ConfigError(f"{key}.match.{k}", f"expected a string, got {v!r}")
        if v.startswith("~"):
            try:
                re.compile(v[1:])
            except re.error as exc:
                raise ConfigError(f"{key}.match.{k}", f"bad regular expression: {exc}") from None
    if not pb["match"]:
        raise ConfigError(f"{key}.match", "needs at least one label")
    for group in ("actions", "on_resolved"):
        for i, a in enumerate(pb[group]):
            akey = f"{key}.{group}[{i}]"
            a["verify"] = normalize_verify(a["verify"], f"{akey}.verify")
            if group == "on_resolved" and a["verify"] is not None:
                raise ConfigError(f"{akey}.verify", "on_resolved actions are not verified: remove it")
            ops = OPERATIONS[a["backend"]]
            if a["operation"] is None:
                a["operation"] = next(iter(ops))
            if a["operation"] not in ops:
                raise ConfigError(f"{akey}.operation",
                                  f"must be one of {', '.join(ops)} for backend {a['backend']}, "
                                  f"got {a['operation']!r}")
            for p in ops[a["operation"]]:
                if p not in a["params"]:
                    raise ConfigError(f"{akey}.params.{p}", f"is required for {a['backend']} {a['operation']}")
            if a["backend"] == "command":
                argv = a["params"]["argv"]
                if not isinstance(argv, list) or not argv or not all(isinstance(x, str) for x in argv):
                    raise ConfigError(f"{akey}.params.argv", "expected a non-empty list of strings")
            if a["backend"] == "kubernetes" and a["operation"] == "delete_pod":
                if not ("pod" in a["params"] or "selector" in a["params"]):
                    raise ConfigError(f"{akey}.params", "delete_pod needs `pod` or `selector`")


def check(cfg):
    r = cfg["remediation"]
    for i, pb in enumerate(r["playbooks"]):
        check_playbook(pb, f"remediation.playbooks[{i}]")
    names = {pb["name"]: "remediation.playbooks" for pb in r["playbooks"]}
    for i, f in enumerate(r["playbook_files"]):
        if not isinstance(f, str) or not f.strip():
            raise ConfigError(f"remediation.playbook_files[{i}]", "expected a file path")

        for pb in parse_file(f):
            if pb["name"] in names:
                raise ConfigError(f"remediation.playbook_files[{i}]",
                                  f"playbook {pb['name']!r} is also defined in {names[pb['name']]}")
            names[pb["name"]] = f


def parse_file(path: str | Path) -> list[dict]:
    """Validate a playbook YAML file (a list, or a mapping with key `playbooks`)."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("", "file not found", str(p)) from None
    except yaml.YAMLError as exc:
        raise ConfigError("", f"not valid YAML: {str(exc).splitlines()[0]}", str(p)) from None
    if isinstance(data, dict) and set(data) == {"playbooks"}:
        data = data["playbooks"]
    if not isinstance(data, list):
        raise ConfigError("playbooks", "expected a list of playbooks", str(p))
    try:
        out = validate(ListOf(PLAYBOOK, unique_key="name"), data, "playbooks")
        for i, pb in enumerate(out):
            check_playbook(pb, f"playbooks[{i}]")
    except ConfigError as exc:
        raise ConfigError(exc.key, exc.problem, str(p)) from None
    return out
