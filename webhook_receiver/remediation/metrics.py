"""Automation metrics, read from PostgreSQL at scrape time (same figures in every worker/replica).

- opsstack_remediation_runs_total{playbook,outcome}: runs by how they ended
  (recovered, exhausted, skipped, dry_run, running, pending, failed)
- opsstack_remediation_attempts_total{playbook,action,outcome}: actions by outcome
  (recovered = verified, not_recovered, failed, timeout, dry_run)
- opsstack_remediation_time_to_recover_seconds (summary: _sum/_count): alert start -> verified recovery
- opsstack_remediation_tickets_resolved_total{closed_by}: resolved tickets closed by automation
  (its alert resolved after a playbook acted and before any person acknowledged, resolved,
  reassigned or commented on it: webhook_receiver.kpis.CLOSED_BY_AUTOMATION) or by people (the rest)
- opsstack_remediation_kill_switch: 1 while the run-time kill switch (or the config one) is on
- opsstack_itsm_outbox{system,status}: ITSM deliveries pending / failed / done
- opsstack_ticket_attachments{kind}: enrichment attachments stored
"""
from __future__ import annotations

import logging

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily

from webhook_receiver.db import connect
from webhook_receiver.kpis import CLOSED_BY_AUTOMATION

from .store import kill_switch

log = logging.getLogger(__name__)

# every value remediation_runs.status / an attempt's outcome can take (store.py checks): the
# series of each configured playbook start at 0, so a panel shows 0 rather than "No data"
RUN_OUTCOMES = ("pending", "running", "recovered", "exhausted", "skipped", "dry_run", "failed", "refused",
                "scheduled", "cancelled")
ATTEMPT_OUTCOMES = ("recovered", "not_recovered", "failed", "timeout", "dry_run")


class AutomationCollector:
    def __init__(self, rem, it, db_url: str, playbooks=()):
        """``rem``/``it``: the typed remediation and itsm views (core.config.view); ``playbooks``:
        the loaded playbooks (model.Playbook), whose outcome series exist from the start."""
        self.rem = rem
        self.it = it
        self.db_url = db_url
        self.playbooks = tuple(playbooks)

    def describe(self):
        return []

    def collect(self):
        up = GaugeMetricFamily("opsstack_remediation_database_up",
                               "1 when the automation tables answered this scrape.")
        try:
            fams = list(self._families())
            up.add_metric([], 1)
        except Exception as exc:  # noqa: BLE001 - a failing source is up=0 and one log line
            log.warning("event=automation_scrape_failed error=%r", (str(exc).strip().splitlines() or [repr(exc)])[0])
            fams = []
            up.add_metric([], 0)
        yield up
        yield from fams

    def _families(self):
        with connect(self.db_url, autocommit=True, timeout=3) as conn:
            conn.execute("set statement_timeout = 3000")
            runs = CounterMetricFamily("opsstack_remediation_runs", "Remediation runs by outcome.",
                                       labels=["playbook", "outcome"])
            counts = {(pb.name, o): 0 for pb in self.playbooks for o in RUN_OUTCOMES}
            for r in conn.execute("select playbook, status, count(*) n from remediation_runs group by 1, 2 order by 1, 2"):
                counts[(r["playbook"], r["status"])] = r["n"]
            for (pb, outcome), n in sorted(counts.items()):
                runs.add_metric([pb, outcome], n)
            yield runs
            att = CounterMetricFamily("opsstack_remediation_attempts", "Remediation actions by outcome.",
                                      labels=["playbook", "action", "outcome"])
            counts = {(pb.name, a.name, o): 0 for pb in self.playbooks for a in pb.actions
                      for o in ATTEMPT_OUTCOMES}
            for r in conn.execute("""select playbook, action,
                                        case when status = 'ok' and verified then 'recovered'
                                             when status = 'ok' then 'not_recovered'
                                             else status end as outcome, count(*) n
                                     from remediation_attempts where phase = 'ladder' and status <> 'running'
                                     group by 1, 2, 3 order by 1, 2, 3"""):
                counts[(r["playbook"], r["action"], r["outcome"])] = r["n"]
            for (pb, action, outcome), n in sorted(counts.items()):
                att.add_metric([pb, action, outcome], n)
            yield att
            ttr = SummaryMetricFamily("opsstack_remediation_time_to_recover_seconds",
                                      "From the alert's start to the verified recovery, per playbook.",
                                      labels=["playbook"])
            for r in conn.execute("""select playbook, count(*) n,
                                        coalesce(sum(extract(epoch from finished_at - alert_starts_at)), 0) s
                                     from remediation_runs where status = 'recovered' and finished_at is not null
                                     group by 1 order by 1"""):
                ttr.add_metric([r["playbook"]], count_value=r["n"], sum_value=float(r["s"]))
            yield ttr
            closed = CounterMetricFamily("opsstack_remediation_tickets_resolved",
                                         "Resolved tickets by who closed them (automation: the alert resolved after "
                                         "a playbook acted and before any person acted on the ticket).",
                                         labels=["closed_by"])
            row = conn.execute(f"""select count(*) filter (where auto) a, count(*) filter (where not auto) p from (
                                    select t.id, {CLOSED_BY_AUTOMATION} auto
                                    from tickets t where t.status = 'resolved') x""").fetchone()
            closed.add_metric(["automation"], row["a"])
            closed.add_metric(["people"], row["p"])
            yield closed
            ks = GaugeMetricFamily("opsstack_remediation_kill_switch", "1 while automatic actions are switched off.")
            ks.add_metric([], 1 if (self.rem.kill_switch or kill_switch(conn)["enabled"]) else 0)
            yield ks
            ob = GaugeMetricFamily("opsstack_itsm_outbox", "ITSM deliveries by system and status.",
                                   labels=["system", "status"])
            counts = {(r["system"], r["status"]): r["n"] for r in
                      conn.execute("select system, status, count(*) n from ticket_itsm_outbox group by 1, 2")}
            for system in ("jira", "servicenow"):
                if getattr(self.it, system).enabled or any(k[0] == system for k in counts):
                    for st in ("pending", "failed", "done"):
                        ob.add_metric([system, st], counts.get((system, st), 0))
            yield ob
            at = GaugeMetricFamily("opsstack_ticket_attachments", "Enrichment attachments stored, by kind.",
                                   labels=["kind"])
            for r in conn.execute("select kind, count(*) n from ticket_attachments group by 1 order by 1"):
                at.add_metric([r["kind"]], r["n"])
            yield at
