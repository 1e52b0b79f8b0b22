"""The monitoring watching itself: `Watchdog`, `ScrapeTargetDown`, and the alert path's own
alerts (`ReceiverDown`, `ReceiverDatabaseDown`, `ReceiverBacklog`, `AlertDeliveryFailing`).

Watchdog always fires. Alertmanager routes it to the receiver on a short repeat interval;
when the receiver stops hearing it, Prometheus, the rule evaluation or Alertmanager is dead
(a dead-man's switch). Severity `info` (docs/development.md allows only critical|warning|info).

ScrapeTargetDown: Prometheus cannot scrape a target (``up == 0``). When the probe exporter or a
service's /metrics is gone, the alerts built on them cannot fire: this one says so.

The alert path's own alerts carry ``route="direct"``: when the receiver, its database or the
delivery to it fails, a page through the receiver is the one thing that cannot arrive, so
Alertmanager also e-mails them straight to alertmanager.direct.email_to (stack/alertmanager_config.py).
- ReceiverDown: Prometheus cannot scrape the receiver (its /metrics is the webhook's process).
- ReceiverDatabaseDown: the receiver answers but cannot read its ticket database: notifications
  wait in its spool (or get 503 with intake: database) and no ticket opens.
- ReceiverBacklog: an accepted notification has waited BACKLOG_SECONDS without becoming tickets
  (in the spool or in the database's queue): pages are late. A storm drains in seconds (docs/receiver.md).
- AlertDeliveryFailing: most of Alertmanager's notification attempts of an integration fail.
"""
from __future__ import annotations

from alert_rules.common import alert, group
from core.config import format_duration


TARGET_SERVICE = "{{ with $labels.service }}{{ . }}{{ else }}{{ $labels.job }}{{ end }}"
DIRECT = {"route": "direct"}
BACKLOG_SECONDS = 120
RECEIVER_JOB = "opsstack_receiver"


def groups(cfg: dict) -> list[dict]:
    a = cfg["alerts"]
    rules = [
        alert(cfg, "ScrapeTargetDown", "up == 0", for_seconds=a["service_down_for"],
              severity="warning", tier=1, service=TARGET_SERVICE, team=a["team"],
              summary="Prometheus cannot scrape a target.",
              description="Scraping {{ $labels.instance }} (job {{ $labels.job }}) has failed for more "
                          f"than {format_duration(a['service_down_for'])}: the alerts that use its "
                          "metrics cannot fire while it is down."),
    ]
    if a["watchdog"]:
        rules.insert(0, watchdog(cfg))
    return [group("opsstack-meta", rules), group("opsstack-alert-path", alert_path(cfg))]


def alert_path(cfg: dict) -> list[dict]:
    """The alerts about the alert path itself (route="direct")."""
    a = cfg["alerts"]
    common = {"severity": "critical", "tier": 1, "service": "opsstack", "team": a["team"], "labels": DIRECT}
    by = "job, instance"
    return [
        alert(cfg, "ReceiverDown", f'up{{job="{RECEIVER_JOB}"}} == 0', for_seconds=a["service_down_for"], **common,
              summary="The webhook receiver is down: alerts open no tickets and page no one.",
              description="Prometheus cannot scrape the receiver {{ $labels.instance }}: Alertmanager's "
                          "notifications to it fail, so no ticket opens, escalates or pages until it is back."),
        alert(cfg, "ReceiverDatabaseDown", "opsstack_receiver_database_up == 0", for_seconds=a["service_down_for"],
              **common,
              summary="The receiver cannot reach its ticket database: no ticket opens.",
              description="The receiver {{ $labels.instance }} cannot read its ticket database: notifications "
                          "wait in its spool (or are refused with 503) and no ticket opens or pages until the "
                          "database is back."),
        alert(cfg, "ReceiverBacklog",
              f"max by ({by}) (opsstack_receiver_payloads_pending_age_seconds) > {BACKLOG_SECONDS} "
              f"or max by ({by}) (opsstack_receiver_spool_pending_age_seconds) > {BACKLOG_SECONDS}",
              for_seconds=60, **common,
              summary="The receiver accepts alerts but is late turning them into tickets.",
              description="The receiver {{ $labels.instance }} has held an accepted notification for "
                          "{{ $value | humanizeDuration }} without turning it into tickets: pages are that late."),
        alert(cfg, "AlertDeliveryFailing",
              "sum by (job, instance, integration) (rate(alertmanager_notifications_failed_total[5m]))"
              " / sum by (job, instance, integration) (rate(alertmanager_notifications_total[5m])) > 0.5",
              for_seconds=120, **common,
              summary="Alertmanager cannot deliver most of its notifications.",
              description="{{ $value | humanizePercentage }} of the {{ $labels.integration }} notifications of "
                          "Alertmanager {{ $labels.instance }} failed over the last 5 minutes: the alerts they "
                          "carry reach no one that way."),
    ]


def watchdog(cfg: dict) -> dict:
    a = cfg["alerts"]
    return alert(cfg, "Watchdog", "vector(1)", severity="info", tier=3, service="opsstack",
                 team=a["team"],
                 summary="The alerting pipeline is alive.",
                 description="This alert always fires so that the receiver can tell that Prometheus "
                             "evaluates rules and Alertmanager delivers notifications; its absence "
                             "means the pipeline is broken (value {{ $value }}).")
