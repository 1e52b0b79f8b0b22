"""The receiver's /metrics: request counters plus ticket KPIs read from PostgreSQL at scrape time.

KPIs come from the database (so every gunicorn worker and replica reports the same figures):
open tickets (incidents) by severity and the alerts they hold, MTTA / MTTR / MTBF per service over ``KPI_WINDOW``, tickets opened,
escalations per level, notification failures, heartbeat ages. Process-local request counters
use prometheus_client's multiprocess mode when PROMETHEUS_MULTIPROC_DIR is set (gunicorn).
"""
from __future__ import annotations

import logging
import os
import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from core.logs import first_line

log = logging.getLogger(__name__)

KPI_WINDOW = 30 * 86400  # seconds: MTTA/MTTR/MTBF over the last 30 days

WEBHOOK = Counter("opsstack_receiver_webhook_requests_total",
                  "Alertmanager webhook deliveries by outcome (stored, invalid, unauthorized, too_large, db_error).",
                  ["outcome"])
RECONCILE_RUNS = Counter("opsstack_receiver_reconcile_runs_total",
                         "Reconciliations with Alertmanager by outcome (ok, member_error, young_alertmanager, "
                         "busy, disabled, error).", ["outcome"])
RECONCILE_CLOSED = Counter("opsstack_receiver_reconcile_episodes_closed_total",
                           "Alert episodes closed because no Alertmanager member still had the alert.")
REQUEST_SECONDS = Histogram("opsstack_receiver_request_duration_seconds",
                            "HTTP request duration by route.", ["route"],
                            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
INTAKE_STORE_SECONDS = Histogram("opsstack_receiver_intake_store_seconds",
                                 "Time a webhook notification waited until its payload was durably stored "
                                 "(group commit: its turn plus the commit), stored ones only.",
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))


class KpiCollector:
    """Reads ticket KPIs from the database on each scrape."""

    def __init__(self, db, channels=()):
        self.db = db
        # the configured notification channels: their series exist at 0 before the first message
        self.channels = tuple(channels)

    def collect(self):
        start = time.monotonic()
        up = GaugeMetricFamily("opsstack_receiver_database_up", "1 when the ticket database answered this scrape.")
        try:
            fams = list(self._families())
            up.add_metric([], 1)
        except Exception as exc:  # noqa: BLE001 - a failing source is up=0 and a log line
            log.warning("event=kpi_scrape_failed error=%r", first_line(exc))
            fams = []
            up.add_metric([], 0)
        yield up
        yield from fams
        d = GaugeMetricFamily("opsstack_receiver_kpi_scrape_duration_seconds", "Time to read the ticket KPIs.")
        d.add_metric([], time.monotonic() - start)
        yield d

    def _families(self):
        with self.db.connection() as conn:
            q = conn.execute
            open_ = GaugeMetricFamily("opsstack_tickets_open", "Unresolved tickets by severity and status.",
                                      labels=["severity", "status"])
            counts = {(sev, st): 0 for sev in ("critical", "warning", "info") for st in ("open", "acknowledged")}
            for r in q("select severity, status, count(*) n from tickets where status <> 'resolved' "
                       "and severity in ('critical', 'warning', 'info') group by 1, 2").fetchall():
                counts[(r["severity"], r["status"])] = r["n"]
            for (sev, st), n in counts.items():
                open_.add_metric([sev, st], n)
            yield open_

            # a ticket is an incident (receiver.incident_by): how many alerts the open ones hold
            firing = GaugeMetricFamily("opsstack_tickets_open_alerts",
                                       "Alert episodes still firing in unresolved tickets (incidents), by severity.",
                                       labels=["severity"])
            fc = {sev: 0 for sev in ("critical", "warning", "info")}
            for r in q("select severity, coalesce(sum(firing_count), 0) n from tickets where status <> 'resolved' "
                       "and severity in ('critical', 'warning', 'info') group by 1").fetchall():
                fc[r["severity"]] = int(r["n"])
            for sev, n in fc.items():
                firing.add_metric([sev], n)
            yield firing
            alerts = CounterMetricFamily("opsstack_tickets_alerts",
                                         "Alert episodes recorded on tickets (alerts per incident: this over "
                                         "opsstack_tickets_opened_total).")
            alerts.add_metric([], q("select coalesce(max(id), 0) n from ticket_alerts").fetchone()["n"])  # ids only grow
            yield alerts

            opened = CounterMetricFamily("opsstack_tickets_opened", "Tickets opened (tickets per day: increase over 1d).",
                                         labels=["service", "severity"])
            reopened = CounterMetricFamily("opsstack_tickets_reopened", "Times a resolved ticket was reopened by a re-fire.",
                                           labels=["service"])
            for r in q("select service, severity, count(*) n from tickets group by 1, 2").fetchall():
                opened.add_metric([r["service"], r["severity"]], r["n"])
            for r in q("select service, sum(reopened_count) ro from tickets group by 1").fetchall():
                reopened.add_metric([r["service"]], r["ro"] or 0)
            yield opened
            yield reopened

            mtta = GaugeMetricFamily("opsstack_tickets_mtta_seconds",
                                     "Mean time to acknowledge over the last 30 days, by service.", labels=["service"])
            mttr = GaugeMetricFamily("opsstack_tickets_mttr_seconds",
                                     "Mean time to resolve over the last 30 days, by service.", labels=["service"])
            # time to acknowledge from the acknowledged events: a reopen clears the ticket's
            # acknowledged_at, but the page of its first episode was still answered
            for r in q("""select t.service,
                                 extract(epoch from avg(a.first_ack - t.opened_at)) mtta,
                                 extract(epoch from avg(t.resolved_at - t.opened_at)) mttr
                          from tickets t
                          left join (select ticket_id, min(at) first_ack from ticket_events
                                     where kind = 'acknowledged' group by 1) a on a.ticket_id = t.id
                          where t.opened_at > now() - make_interval(secs => %s)
                          group by 1""", (KPI_WINDOW,)).fetchall():
                if r["mtta"] is not None:
                    mtta.add_metric([r["service"]], float(r["mtta"]))
                if r["mttr"] is not None:
                    mttr.add_metric([r["service"]], float(r["mttr"]))
            yield mtta
            yield mttr

            mtbf = GaugeMetricFamily("opsstack_tickets_mtbf_seconds",
                                     "Mean time between failures (between ticket openings) over the last 30 days, "
                                     "by service.", labels=["service"])
            for r in q("""select service, extract(epoch from avg(gap)) mtbf from (
                             select service, opened_at - lag(opened_at) over (partition by service order by opened_at) gap
                             from tickets where opened_at > now() - make_interval(secs => %s)) g
                          where gap is not null group by 1""", (KPI_WINDOW,)).fetchall():
                mtbf.add_metric([r["service"]], float(r["mtbf"]))
            yield mtbf

            esc = CounterMetricFamily("opsstack_tickets_escalations", "Escalations by the level paged.", labels=["level"])
            levels = {"1": 0, "2": 0, "3": 0}
            for r in q("select details->>'level' lv, count(*) n from ticket_events where kind = 'escalated' "
                       "group by 1").fetchall():
                if r["lv"] in levels:
                    levels[r["lv"]] = r["n"]
            for lv, n in levels.items():
                esc.add_metric([lv], n)
            yield esc

            sent = CounterMetricFamily("opsstack_tickets_notifications_sent", "Notifications delivered, by channel.",
                                       labels=["channel"])
            failures = CounterMetricFamily("opsstack_tickets_notification_failures",
                                           "Failed notification attempts (each retry counts), by channel.",
                                           labels=["channel"])
            gaveup = GaugeMetricFamily("opsstack_tickets_notifications_failed",
                                       "Notifications given up after max_attempts, by channel.", labels=["channel"])
            pending = GaugeMetricFamily("opsstack_tickets_notifications_pending", "Notifications waiting to be sent.",
                                        labels=["channel"])
            rows = {c: {"sent": 0, "fails": 0, "failed": 0, "pending": 0} for c in self.channels}
            for r in q("""select channel,
                                 count(*) filter (where status = 'sent') sent,
                                 coalesce(sum(attempts - case when status = 'sent' then 1 else 0 end), 0) fails,
                                 count(*) filter (where status = 'failed') failed,
                                 count(*) filter (where status = 'pending') pending
                          from ticket_notifications group by 1""").fetchall():
                rows[r["channel"]] = r
            for ch, r in rows.items():
                sent.add_metric([ch], r["sent"])
                failures.add_metric([ch], r["fails"])
                gaveup.add_metric([ch], r["failed"])
                pending.add_metric([ch], r["pending"])
            yield sent
            yield failures
            yield gaveup
            yield pending

            hb = GaugeMetricFamily("opsstack_receiver_heartbeat_last_seen_timestamp_seconds",
                                   "When each heartbeat alert (Watchdog) last arrived.", labels=["alertname"])
            for r in q("select alertname, extract(epoch from last_seen) ts from ticket_heartbeats").fetchall():
                hb.add_metric([r["alertname"]], float(r["ts"]))
            yield hb

            pl = CounterMetricFamily("opsstack_receiver_payloads_stored",
                                     "Raw Alertmanager payloads stored (sequence value: survives retention pruning).")
            r = q("select coalesce(max(id), 0) n from ticket_payloads").fetchone()
            pl.add_metric([], r["n"])
            yield pl
            r = q("""select count(*) n, coalesce(extract(epoch from now() - min(received_at)), 0) age
                     from ticket_payloads where processed_at is null""").fetchone()
            pend = GaugeMetricFamily("opsstack_receiver_payloads_pending",
                                     "Stored payloads not yet turned into tickets (queued processing).")
            pend.add_metric([], r["n"])
            yield pend
            age = GaugeMetricFamily("opsstack_receiver_payloads_pending_age_seconds",
                                    "Age of the oldest payload not yet turned into tickets (0 when none).")
            age.add_metric([], float(r["age"]))
            yield age
            bad = GaugeMetricFamily("opsstack_receiver_payloads_failed",
                                    "Payloads that failed to apply (retrying, or set aside after 5 attempts).")
            bad.add_metric([], q("select count(*) n from ticket_payloads where error is not null").fetchone()["n"])
            yield bad


def exposition(db, collectors=(), channels=()) -> bytes:
    """The /metrics text; ``collectors``: the app's extra collector factories (state(app).
    metrics_collectors, e.g. automation's), each ``f(db) -> collector``, called per scrape;
    ``channels``: the configured notification channel names (their counters start at 0)."""
    reg = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(reg)
    else:
        from prometheus_client import PROCESS_COLLECTOR

        for c in (WEBHOOK, REQUEST_SECONDS, INTAKE_STORE_SECONDS, RECONCILE_RUNS, RECONCILE_CLOSED, PROCESS_COLLECTOR):
            reg.register(_Forward(c))
    reg.register(KpiCollector(db, channels))
    for factory in list(collectors):
        try:
            reg.register(_Safe(factory(db), getattr(factory, "__name__", "collector")))
        except Exception as exc:  # noqa: BLE001 - one broken collector must not take /metrics down
            log.warning("event=extra_collector_failed collector=%s error=%r", getattr(factory, "__name__", factory), str(exc))
    return generate_latest(reg)


class _Forward:
    """Expose an already-registered collector in another registry."""

    def __init__(self, c):
        self.c = c

    def collect(self):
        return self.c.collect()


class _Safe:
    """A collector whose failure is a log line, not a failed scrape."""

    def __init__(self, c, name: str):
        self.c, self.name = c, name

    def collect(self):
        try:
            return list(self.c.collect())
        except Exception as exc:  # noqa: BLE001
            log.warning("event=extra_collector_failed collector=%s error=%r", self.name, str(exc))
            return []
