"""Outcome KPIs of the incident process, read from the ticket tables at scrape time.

Each KPI is one SQL over the last ``receiver.kpis.window`` (30 days), clipped to when the
receiver's database began (its first migration), so a young stack is not credited with days
it never watched. Exported on the receiver's /metrics with its target (``alerts.kpi``):

- ``opsstack_kpi_uptime_ratio{service}``: 1 - (time a ``receiver.kpis.down_alerts`` alert
  (ServiceDown) of the service fired, overlapping episodes counted once) / observed time.
  Source: the alert episodes on the tickets (ticket_alerts starts_at..ends_at). This is the
  uptime the incident process saw: it misses outages shorter than the alert's ``for:`` and the
  minute before it fires, so it is an upper bound of what the probes measured
  (``avg_over_time(opsstack_probe_up[30d])`` in Prometheus is the probe-side figure, when its
  retention covers the window). Every configured service has a value once anything was observed.
- ``opsstack_kpi_mttr_seconds``: mean time from a ticket's (re)opening to its resolution, over
  the tickets resolved in the window.
- ``opsstack_kpi_mtbf_seconds{service}``: (observed time - downtime) / failures, a failure being
  a ticket of the service opened or reopened in the window; no value while a service had none,
  nor while it had one only and the receiver has watched less than the whole window (no verdict).
- ``opsstack_kpi_auto_recovery_ratio``: tickets closed by automation / tickets resolved in the
  window (``CLOSED_BY_AUTOMATION``; the rest, including alerts that cleared by themselves, count
  as people).
- ``opsstack_kpi_response_seconds``: mean time from a ticket's (re)opening to its first response:
  a person acknowledging, resolving, reassigning or commenting, or a playbook action running.
  A ticket nobody responded to counts with the time it waited unanswered (until it resolved,
  or until now while open).
- ``opsstack_kpi_target{kpi,objective}``: each KPI's target (objective at_least / at_most);
  ``opsstack_kpi_tickets{kpi}``: how many tickets (failures for mtbf) the figure is over;
  ``opsstack_kpi_observed_seconds``: the part of the window the figures cover.

No ticket in the window -> no sample for the means and ratios (never a division by zero).
"""
from __future__ import annotations

import logging

from prometheus_client.core import GaugeMetricFamily

from core.config import view
from webhook_receiver.ticket_store import SYSTEM_ACTOR

log = logging.getLogger(__name__)

# the actor of the remediation runner's ticket events (runner.ACTOR)
REMEDIATION_ACTOR = "remediation"
# what a person does to a ticket (tickets.acknowledge/resolve/reassign/comment); the system's
# own events of these kinds (the alert resolving, the runner's comments) are not a person's
PERSON_KINDS = ("acknowledged", "resolved", "reassigned", "comment")
SYSTEM_ACTORS = (SYSTEM_ACTOR, REMEDIATION_ACTOR)

# the current episode of a ticket began at its last reopening, else when it opened
_EPISODE_START = "coalesce(t.last_reopened_at, t.opened_at)"

# a person touched ticket t in its current episode before ``until``
_PERSON_ACTED = f"""exists (select 1 from ticket_events e where e.ticket_id = t.id
    and e.kind in ({", ".join(f"'{k}'" for k in PERSON_KINDS)})
    and e.actor not in ({", ".join(f"'{a}'" for a in SYSTEM_ACTORS)})
    and e.at >= {_EPISODE_START} and e.at <= {{until}})"""

# a playbook action ran (not a dry run) on ticket t in its current episode before ``until``
_PLAYBOOK_ACTED = f"""exists (select 1 from remediation_attempts a join remediation_runs r on r.id = a.run_id
    where r.ticket_id = t.id and a.phase = 'ladder' and not a.dry_run and a.status = 'ok'
    and a.started_at >= {_EPISODE_START} and a.started_at <= {{until}})"""

# Ticket t (resolved) was closed by automation: its alert resolved (not a person) after a
# playbook acted, and before any person acknowledged, resolved, reassigned or commented on it.
# The run's final status does not matter: a run verified on a slow expression may be marked
# exhausted and escalated although its action is what cleared the alert.
CLOSED_BY_AUTOMATION = (f"(t.status = 'resolved' and t.resolved_by = '{SYSTEM_ACTOR}' and "
                        + _PLAYBOOK_ACTED.format(until="t.resolved_at") + " and not "
                        + _PERSON_ACTED.format(until="t.resolved_at") + ")")

# the part of the window the receiver watched: from its database's first migration
_START = """select greatest(now() - make_interval(secs => %(window)s),
                            (select min(applied_at) from ticket_schema_versions)) as start,
                   now() as now"""

# per service: the union of the down alerts' firing episodes inside [start, now]
_DOWNTIME = """
    select service, coalesce(sum(upper(r) - lower(r)), interval '0') as down from (
        select e.labels->>'service' as service,
               unnest(range_agg(tstzrange(greatest(e.starts_at, %(start)s),
                                          least(coalesce(e.ends_at, case when e.status = 'firing' then %(now)s
                                                                         else e.last_seen end), %(now)s)))) as r
        from ticket_alerts e
        where e.labels->>'alertname' = any(%(down_alerts)s) and coalesce(e.labels->>'service', '') <> ''
          and e.starts_at < %(now)s
          and coalesce(e.ends_at, case when e.status = 'firing' then %(now)s else e.last_seen end) > %(start)s
          and greatest(e.starts_at, %(start)s)
              < least(coalesce(e.ends_at, case when e.status = 'firing' then %(now)s else e.last_seen end), %(now)s)
        group by 1) u
    group by 1"""

_MTTR = f"""
    select count(*) as n, extract(epoch from avg(t.resolved_at - {_EPISODE_START})) as mean
    from tickets t where t.status = 'resolved' and t.resolved_at >= %(start)s"""

# failures: ticket openings and reopenings of each service in the window
_FAILURES = """
    select t.service, count(*) as n from ticket_events ev join tickets t on t.id = ev.ticket_id
    where ev.kind in ('opened', 'reopened') and ev.at >= %(start)s and t.service <> ''
    group by 1"""

_RESPONSE = f"""
    select count(*) as n, extract(epoch from avg(first_response - began)) as mean from (
        select {_EPISODE_START} as began,
               coalesce(least(
                   (select min(e.at) from ticket_events e where e.ticket_id = t.id
                        and e.kind in ({", ".join(f"'{k}'" for k in PERSON_KINDS)})
                        and e.actor not in ({", ".join(f"'{a}'" for a in SYSTEM_ACTORS)})
                        and e.at >= {_EPISODE_START}),
                   {{attempt}}),
                   case when t.status = 'resolved' then t.resolved_at else %(now)s end) as first_response
        from tickets t where {_EPISODE_START} >= %(start)s) x"""
_FIRST_ATTEMPT = f"""(select min(a.started_at) from remediation_attempts a join remediation_runs r on r.id = a.run_id
                        where r.ticket_id = t.id and a.phase = 'ladder' and not a.dry_run
                        and a.status <> 'dry_run' and a.started_at >= {_EPISODE_START})"""

_AUTO = f"""
    select count(*) as n, count(*) filter (where {{auto}}) as auto
    from tickets t where t.status = 'resolved' and t.resolved_at >= %(start)s"""


def automation_closed_sql(has_automation_tables: bool = True) -> str:
    """The CLOSED_BY_AUTOMATION predicate on ``tickets t`` (false while the automation tables
    do not exist yet)."""
    return CLOSED_BY_AUTOMATION if has_automation_tables else "false"


class OutcomeKpiCollector:
    """The outcome KPIs (module doc) for one receiver app; ``db``: its webhook_receiver.db.Database."""

    def __init__(self, cfg: dict, db):
        self.k = view(cfg, "receiver").kpis
        self.targets = view(cfg, "alerts").kpi
        self.services = tuple(s["name"] for s in cfg["platform"]["services"])
        self.db = db

    def describe(self):
        return []

    def collect(self):
        with self.db.connection() as conn:
            return list(self.families(conn))

    def families(self, conn):
        """The metric families, read on ``conn`` (a dict-row connection)."""
        t = self.targets
        target = GaugeMetricFamily("opsstack_kpi_target", "The target of each outcome KPI (alerts.kpi).",
                                   labels=["kpi", "objective"])
        for kpi, objective, value in (("uptime_ratio", "at_least", t.uptime_ratio),
                                      ("mttr_seconds", "at_most", t.mttr),
                                      ("mtbf_seconds", "at_least", t.mtbf),
                                      ("auto_recovery_ratio", "at_least", t.auto_recovery_ratio),
                                      ("response_seconds", "at_most", t.response)):
            target.add_metric([kpi, objective], float(value))
        yield target
        window = GaugeMetricFamily("opsstack_kpi_window_seconds", "The window the outcome KPIs are computed over.")
        window.add_metric([], float(self.k.window))
        yield window

        q = conn.execute
        span = q(_START, {"window": self.k.window}).fetchone()
        start, now = span["start"], span["now"]
        observed_s = max(0.0, (now - start).total_seconds()) if start is not None else 0.0
        observed = GaugeMetricFamily("opsstack_kpi_observed_seconds",
                                     "The part of the KPI window the receiver watched (since its database began).")
        observed.add_metric([], observed_s)
        yield observed
        if start is None or observed_s <= 0:
            return
        auto_tables = q("select to_regclass('remediation_attempts') is not null "
                        "and to_regclass('remediation_runs') is not null as ok").fetchone()["ok"]
        p = {"start": start, "now": now, "down_alerts": list(self.k.down_alerts)}
        count = GaugeMetricFamily("opsstack_kpi_tickets", "Tickets each outcome KPI is computed over "
                                  "(mtbf: failures, uptime: down episodes' services).", labels=["kpi"])

        down = {r["service"]: r["down"].total_seconds() for r in q(_DOWNTIME, p).fetchall()}
        uptime = GaugeMetricFamily("opsstack_kpi_uptime_ratio",
                                   "Share of the observed window no down alert (ServiceDown) of the service fired.",
                                   labels=["service"])
        services = sorted(set(self.services) | set(down))
        for svc in services:
            uptime.add_metric([svc], max(0.0, 1.0 - down.get(svc, 0.0) / observed_s))
        yield uptime

        r = q(_MTTR, p).fetchone()
        mttr = GaugeMetricFamily("opsstack_kpi_mttr_seconds", "Mean time from a ticket's (re)opening to its "
                                 "resolution, tickets resolved in the KPI window.")
        if r["n"]:
            mttr.add_metric([], float(r["mean"]))
        count.add_metric(["mttr_seconds"], r["n"])
        yield mttr

        failures = {r["service"]: r["n"] for r in q(_FAILURES, p).fetchall()}
        mtbf = GaugeMetricFamily("opsstack_kpi_mtbf_seconds", "Mean time between failures (tickets opened or "
                                 "reopened) per service: up time in the KPI window / failures.", labels=["service"])
        # one failure in a young window is no verdict (a stack an hour old with one incident would
        # read "MTBF 1 h" and page): a value needs a second failure (an interval between failures
        # was seen) or the whole window watched
        whole = observed_s >= float(self.k.window)
        for svc in sorted(failures):
            if failures[svc] >= 2 or whole:
                mtbf.add_metric([svc], max(0.0, observed_s - down.get(svc, 0.0)) / failures[svc])
        count.add_metric(["mtbf_seconds"], sum(failures.values()))
        yield mtbf

        r = q(_AUTO.format(auto=automation_closed_sql(auto_tables)), p).fetchone()
        auto = GaugeMetricFamily("opsstack_kpi_auto_recovery_ratio", "Share of the tickets resolved in the KPI "
                                 "window that automation closed (a playbook acted, no person touched it).")
        if r["n"]:
            auto.add_metric([], r["auto"] / r["n"])
        count.add_metric(["auto_recovery_ratio"], r["n"])
        yield auto

        r = q(_RESPONSE.format(attempt=_FIRST_ATTEMPT if auto_tables else "null"), p).fetchone()
        resp = GaugeMetricFamily("opsstack_kpi_response_seconds", "Mean time from a ticket's (re)opening to the "
                                 "first response: a person acting on it or a playbook action.")
        if r["n"]:
            resp.add_metric([], float(r["mean"]))
        count.add_metric(["response_seconds"], r["n"])
        count.add_metric(["uptime_ratio"], len(down))
        yield resp
        yield count


def collector_factory(cfg: dict):
    """For State.metrics_collectors: ``f(db) -> OutcomeKpiCollector``."""
    def _outcome_kpis(db):
        return OutcomeKpiCollector(cfg, db)
    return _outcome_kpis
