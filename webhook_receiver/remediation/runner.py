"""The playbook runner: safety gates, the action ladder, verification, audit, hand-over.

For one firing alert (usually: the alert of a ticket that just opened) the runner

1. finds the first playbook whose ``match`` selects the alert's labels and renders its target;
2. claims the episode: a row in ``remediation_runs`` unique on (playbook, target, fingerprint,
   startsAt). A second delivery, or a second receiver replica, finds the row and stops;
3. stops if the kill switch is on (config or run-time), then takes a PostgreSQL advisory lock
   on (playbook, target) so no two runs act on one target at once;
4. refuses when the target is in its cooldown (an action ran on it less than ``cooldown`` ago)
   or when ``max_attempts`` actions already ran on it within ``attempt_window``;
5. climbs the ladder: each action runs through its backend with a timeout and gets an audit row;
   then the runner waits up to the action's verify window for the condition to clear in
   Prometheus (or for the alert to resolve). Cleared -> recovered; else the next action;
6. when nothing helped (or a gate refused) the ticket is escalated to people at once, with what
   was tried in the reason.

In dry-run mode every action is rendered and recorded, none runs, nothing is verified.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from datetime import timezone as dtz
from typing import Callable

import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from core.clock import utcnow
from core.config import view
from core.prom import Prometheus, PrometheusError, base_url
from webhook_receiver import escalation, tickets
from webhook_receiver.db import connect
from webhook_receiver.ticket_store import add_event

from . import schedule as sched
from .backends import Backend, BackendError, BackendTimeout, Result, make, truncate
from .model import Action, Playbook, check_target, context, find, load_playbooks
from .store import RUN_LOCK_CLASS, kill_switch
from .template import TemplateError, render
from .verify import any_series, check, expr_from_generator_url

log = logging.getLogger(__name__)

ACTOR = "remediation"


@dataclass
class Alert:
    labels: dict
    fingerprint: str
    starts_at: datetime
    status: str = "firing"
    generator_url: str = ""
    annotations: dict = field(default_factory=dict)

    @property
    def alertname(self) -> str:
        return self.labels.get("alertname", "")


@dataclass
class Outcome:
    status: str            # recovered | exhausted | skipped | refused | dry_run | duplicate | no_playbook | not_firing
    reason: str = ""
    run_id: int | None = None
    playbook: str | None = None
    target: str | None = None
    attempts: list[dict] = field(default_factory=list)
    escalated: bool = False


def replica_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def receiver_escalate(cfg: dict, db_url: str, ticket_id: int, reason: str, ctx=None) -> bool:
    """Hand a ticket to people through the receiver's escalation (next level, paged now).
    ``ctx``: the receiver app's tickets.Context (its hooks fire); without one (bench, tests) a
    context is built from the config (no hook subscribers)."""
    ctx = ctx if ctx is not None else tickets.Context(cfg)
    with connect(db_url) as conn:
        return escalation.escalate_now(conn, ticket_id, reason, ACTOR, ctx=ctx) is not None


class Runner:
    def __init__(self, cfg: dict, db_url: str, playbooks: list[Playbook] | None = None,
                 escalate: Callable[[int, str], object] | None = None, sleep: Callable[[float], None] = time.sleep,
                 replica: str | None = None, ctx=None):
        # the whole dict stays for what needs several sections (stack, platform, demo): playbook
        # loading, target checks and template context (model.py), the backends, escalation
        self.cfg = cfg
        self.r = view(cfg, "remediation")  # typed view (core.config.view)
        self.db_url = db_url
        self.playbooks = load_playbooks(cfg) if playbooks is None else playbooks
        self._escalate = escalate if escalate is not None else (
            lambda tid, reason: receiver_escalate(cfg, db_url, tid, reason, ctx=ctx))
        self.sleep = sleep
        self.replica = replica or replica_name()
        url = base_url(cfg, self.r.prometheus_url)
        self.prom = Prometheus(url, timeout=min(10.0, max(1.0, self.r.verify_interval * 2))) if url else None
        self._backends: dict[str, Backend] = {}
        self._lock = threading.Lock()
        self._ticket_locks: dict[int, threading.Lock] = {}

    # ------------------------------------------------------------------ helpers
    def backend(self, name: str) -> Backend:
        with self._lock:
            if name not in self._backends:
                self._backends[name] = make(name, self.cfg)
            return self._backends[name]

    def _conn(self) -> psycopg.Connection:
        return connect(self.db_url, autocommit=True)

    def kill_switch_on(self, conn) -> bool:
        return bool(self.r.kill_switch) or kill_switch(conn)["enabled"]

    def dry_run(self, pb: Playbook) -> bool:
        return bool(self.r.dry_run or pb.dry_run)

    @staticmethod
    def alert_of_ticket(conn, ticket_id: int) -> tuple[Alert | None, str | None]:
        """(the ticket's current alert episode, ticket status)."""
        t = conn.execute("select status, labels, annotations, fingerprint, starts_at, generator_url "
                         "from tickets where id = %s", (ticket_id,)).fetchone()
        if t is None:
            return None, None
        a = conn.execute("select status, labels, annotations, fingerprint, starts_at from ticket_alerts "
                         "where ticket_id = %s order by starts_at desc, id desc limit 1", (ticket_id,)).fetchone()
        src = a or t
        status = (a["status"] if a else ("resolved" if t["status"] == "resolved" else "firing"))
        return Alert(labels=dict(src["labels"] or t["labels"] or {}), fingerprint=src["fingerprint"],
                     starts_at=src["starts_at"], status=status, generator_url=t["generator_url"] or "",
                     annotations=dict(src["annotations"] or {})), t["status"]

    def _ticket_resolved(self, conn, ticket_id: int | None) -> bool:
        if ticket_id is None:
            return False
        row = conn.execute("select status from tickets where id = %s", (ticket_id,)).fetchone()
        return row is not None and row["status"] == "resolved"

    def _alert_resolved(self, conn, alert: Alert, ticket_id: int | None) -> bool:
        """This alert's episode ended (an incident's other alerts may still fire), or its ticket resolved."""
        row = conn.execute("select status from ticket_alerts where fingerprint = %s and starts_at = %s",
                           (alert.fingerprint, alert.starts_at)).fetchone()
        if row is not None and row["status"] == "resolved":
            return True
        return self._ticket_resolved(conn, ticket_id)

    @staticmethod
    def _ticket_event(conn, ticket_id: int | None, details: dict) -> None:
        if ticket_id is None:
            return
        try:
            conn.execute("insert into ticket_events (ticket_id, kind, actor, details) values (%s, 'remediation', %s, %s)",
                         (ticket_id, ACTOR, Jsonb(details)))
        except psycopg.Error as exc:  # the audit rows in remediation_* are the record; this is the timeline
            log.warning("event=ticket_event_failed ticket_id=%s error=%s", ticket_id, exc)

    @staticmethod
    def firing_alerts_of_ticket(conn, ticket_id: int, limit: int) -> list[Alert]:
        """The firing alert episodes of an incident (ticket), oldest first, at most ``limit``."""
        t = conn.execute("select generator_url from tickets where id = %s", (ticket_id,)).fetchone()
        if t is None:
            return []
        rows = conn.execute("select status, labels, annotations, fingerprint, starts_at from ticket_alerts "
                            "where ticket_id = %s and status = 'firing' order by starts_at, fingerprint limit %s",
                            (ticket_id, limit)).fetchall()
        return [Alert(labels=dict(r["labels"] or {}), fingerprint=r["fingerprint"], starts_at=r["starts_at"],
                      status="firing", generator_url=t["generator_url"] or "",
                      annotations=dict(r["annotations"] or {})) for r in rows]

    # ------------------------------------------------------------------ entry points
    def handle_ticket(self, ticket_id: int) -> Outcome:
        """Run the matching playbook for a ticket that opened, reopened or that alerts joined;
        the outcome of its first alert (handle_incident has them all)."""
        out = self.handle_incident(ticket_id)
        acted = [o for o in out if o.status not in ("duplicate", "no_playbook")]
        return (acted or out)[0]

    def handle_incident(self, ticket_id: int) -> list[Outcome]:
        """A ticket is an incident of one or more alerts: the playbook acts for each firing alert
        (its own labels and target), once per rendered target, at most ``remediation.
        max_targets_per_incident`` targets; targets acted on for this incident already (an
        earlier job of it: the alerts that attached later come here again) are left alone.
        The targets run in parallel (a ladder waits for its verify windows)."""
        cap = int(self.r.max_targets_per_incident)
        with self._conn() as conn:
            alerts = self.firing_alerts_of_ticket(conn, ticket_id, cap * 20)
            if not alerts:  # no firing episode recorded: the ticket's latest alert (as before incidents)
                alert, status = self.alert_of_ticket(conn, ticket_id)
                if alert is None:
                    return [Outcome("no_playbook", f"ticket {ticket_id} not found")]
                if status == "resolved":
                    return [Outcome("not_firing", "ticket already resolved")]
                return [self.run_alert(alert, ticket_id)]
            status = conn.execute("select status from tickets where id = %s", (ticket_id,)).fetchone()["status"]
            if status == "resolved":
                return [Outcome("not_firing", "ticket already resolved")]
            done = {(r["playbook"], r["target"]) for r in conn.execute(
                """select r.playbook, r.target from remediation_runs r join tickets t on t.id = r.ticket_id
                   where r.ticket_id = %s and r.created_at >= coalesce(t.last_reopened_at, t.opened_at)""",
                (ticket_id,)).fetchall()}
        todo: list[tuple[Playbook, Alert]] = []
        out: list[Outcome] = []
        seen: set = set()
        for a in alerts:
            pb = find(self.playbooks, a.labels) if self.r.enabled else None
            if pb is None:
                continue
            key = (pb.name, self._target_key(pb, a))
            if key in seen:
                continue  # the same target through another alert of the incident: acted on once
            seen.add(key)
            if key in done:
                out.append(Outcome("duplicate", f"{key[1]} already handled for this incident", playbook=pb.name,
                                   target=key[1]))
                continue
            if len(todo) >= cap:
                log.warning("event=remediation_targets_capped ticket_id=%s cap=%s", ticket_id, cap)
                break
            todo.append((pb, a))
        if not todo:
            if not out and alerts:
                return [self.run_alert(alerts[0], ticket_id)]  # disabled / no playbook: say why
            return out
        if len(todo) == 1:
            return out + [self.run(todo[0][0], todo[0][1], ticket_id)]
        with ThreadPoolExecutor(max_workers=min(len(todo), 4), thread_name_prefix="remediation-target") as ex:
            return out + list(ex.map(lambda pa: self.run(pa[0], pa[1], ticket_id), todo))

    def _target_key(self, pb: Playbook, alert: Alert) -> str:
        """The rendered target of the playbook for this alert (the unrendered template when the
        labels cannot be trusted with it: run() refuses those)."""
        if check_target(self.cfg, pb, alert.labels) is not None:
            return f"{pb.target}|{alert.fingerprint}"
        try:
            return str(render(pb.target, context(self.cfg, alert.labels)))
        except TemplateError:
            return f"{pb.target}|{alert.fingerprint}"

    def run_alert(self, alert: Alert, ticket_id: int | None = None) -> Outcome:
        if not self.r.enabled:
            return Outcome("skipped", "remediation disabled")
        pb = find(self.playbooks, alert.labels)
        if pb is None:
            return Outcome("no_playbook", f"no playbook matches {alert.alertname}")
        return self.run(pb, alert, ticket_id)

    def run(self, pb: Playbook, alert: Alert, ticket_id: int | None = None) -> Outcome:
        if alert.status != "firing":
            return Outcome("not_firing", f"alert is {alert.status}: remediation acts on firing alerts only",
                           playbook=pb.name)
        ctx = context(self.cfg, alert.labels)
        # labels are attacker-controlled text: a playbook acts only on a target it can resolve to
        # a known service/region and plain names; anything else is refused (recorded, on the
        # ticket, and the ticket goes on to people)
        problem = check_target(self.cfg, pb, alert.labels)
        if problem is None:
            try:
                target = str(render(pb.target, ctx))
            except TemplateError as exc:
                problem = f"target: {exc}"
        if problem is not None:
            return self._refuse(pb, alert, ticket_id, problem)
        ctx["target"] = target
        dry = self.dry_run(pb)
        with self._conn() as conn:
            row = self._claim_run(conn, pb, alert, target, ticket_id, dry)
            if row is None:
                return Outcome("duplicate", "this alert episode is already handled", playbook=pb.name, target=target)
            run_id = row["id"]
            log.info("event=remediation_run_claimed run_id=%s playbook=%s target=%s ticket_id=%s dry_run=%s",
                     run_id, pb.name, target, ticket_id, dry)
            if pb.skip_if:
                hit, detail = self._guard(pb.skip_if, ctx)
                if hit:
                    return self._finish(conn, run_id, pb, target, ticket_id, "skipped",
                                        f"skip_if matched ({detail}): left to another playbook", escalate=False)
            def act() -> Outcome:
                if pb.schedule is not None:
                    later = self._schedule(conn, run_id, pb, alert, target, ctx, ticket_id, dry)
                    if later is not None:
                        return later
                return self._ladder(conn, run_id, pb, alert, target, ctx, ticket_id, dry)
            return self._guarded(conn, run_id, pb, target, ticket_id, act, busy_escalates=False)

    def _guarded(self, conn, run_id: int, pb: Playbook, target: str, ticket_id: int | None,
                 act: Callable[[], Outcome], busy_escalates: bool) -> Outcome:
        """``act()`` unless the kill switch is on or another run holds this target's lock (both end
        the run 'skipped'); the lock is held on a connection of its own while ``act`` runs. A busy
        target escalates when a person must look (a scheduled restart that could not act)."""
        if self.kill_switch_on(conn):
            return self._finish(conn, run_id, pb, target, ticket_id, "skipped",
                                "kill switch is on: no automatic action", escalate=True)
        key = (RUN_LOCK_CLASS, f"{pb.name}|{target}")
        lock = self._conn()
        try:
            if not lock.execute("select pg_try_advisory_lock(%s, hashtext(%s)) as ok", key).fetchone()["ok"]:
                return self._finish(conn, run_id, pb, target, ticket_id, "skipped",
                                    "another run is acting on this target right now", escalate=busy_escalates)
            try:
                return act()
            finally:
                lock.execute("select pg_advisory_unlock(%s, hashtext(%s))", key)
        finally:
            lock.close()

    def _claim_run(self, conn, pb: Playbook, alert: Alert, target: str, ticket_id: int | None, dry: bool):
        """The run row of this alert episode on this target ({'id'}), or None when another
        process or an earlier delivery already has it (the unique key makes it one run)."""
        return conn.execute(
            """insert into remediation_runs (ticket_id, playbook, target, alertname, fingerprint, alert_starts_at,
                                             labels, dry_run, replica)
               values (%s, %s, %s, %s, %s, %s, %s, %s, %s)
               on conflict (playbook, target, fingerprint, alert_starts_at) do nothing returning id""",
            (ticket_id, pb.name, target, alert.alertname, alert.fingerprint, alert.starts_at,
             Jsonb(alert.labels), dry, self.replica)).fetchone()

    def _refuse(self, pb: Playbook, alert: Alert, ticket_id: int | None, problem: str) -> Outcome:
        """Record a run that will not act (status refused), say why on the ticket, hand it to people."""
        target = pb.target  # unrendered: the labels could not be trusted to fill it in
        reason = f"refused: {problem}"
        with self._conn() as conn:
            row = self._claim_run(conn, pb, alert, target, ticket_id, self.dry_run(pb))
            if row is None:
                return Outcome("duplicate", "this alert episode is already handled", playbook=pb.name, target=target)
            log.warning("event=remediation_refused run_id=%s playbook=%s ticket_id=%s reason=%r",
                        row["id"], pb.name, ticket_id, reason[:300])
            self._ticket_event(conn, ticket_id, {"playbook": pb.name, "status": "refused", "reason": reason[:500]})
            return self._finish(conn, row["id"], pb, target, ticket_id, "refused", reason, escalate=True)

    # ------------------------------------------------------------------ scheduled runs
    def _timezone(self, pb: Playbook) -> str:
        tz = (pb.schedule or {}).get("timezone")
        return tz or (self.cfg.get("forecast") or {}).get("timezone") or (self.cfg.get("demo") or {}).get(
            "timezone") or "UTC"

    def plan(self, pb: Playbook, ctx: dict, now: float | None = None) -> sched.Plan:
        """When this playbook should act for the alert (schedule.plan): the deadline and the daily
        traffic profile from Prometheus; without them (no answer, no Prometheus) at once."""
        s = pb.schedule or {}
        now = time.time() if now is None else now
        tz = self._timezone(pb)
        deadline = profile = None
        if self.prom is not None:
            try:
                data = self.prom.query(str(render(s["deadline"], ctx)))
                vals = [float(r["value"][1]) for r in (data.get("result") or [])] if data.get(
                    "resultType") == "vector" else []
                vals = [v for v in vals if v == v and v != float("inf")]
                if vals:
                    deadline = now + max(0.0, min(vals))
            except (PrometheusError, TemplateError, ValueError, KeyError) as exc:
                log.warning("event=remediation_deadline_failed playbook=%s error=%s", pb.name, exc)
            try:
                step = float(s["bin"])
                data = self.prom.query_range(str(render(s["traffic"], ctx)), now - float(s["history"]), now, step)
                res = data.get("result") or []
                if res:
                    pts = np.array([(float(a), float(b)) for a, b in res[0]["values"]], float)
                    if len(pts):
                        profile = sched.daily_profile(pts[:, 0], pts[:, 1], tz, step)
            except (PrometheusError, TemplateError, ValueError, KeyError) as exc:
                log.warning("event=remediation_traffic_failed playbook=%s error=%s", pb.name, exc)
        return sched.plan(now, deadline, profile, tz, quiet_share=float(s.get("quiet_share", 0.25)),
                          min_lead=float(s.get("min_lead", 3600.0)), margin=float(s.get("margin", 1800.0)),
                          bin_seconds=float(s.get("bin", 900.0)))

    def _plan_text(self, p: sched.Plan, tz: str, now: float) -> str:
        oom = f"predicted OOM at {sched.hhmm(p.deadline, tz, now)}" if p.deadline else "no predicted deadline"
        return {
            "scheduled": f"restart scheduled at {sched.hhmm(p.at, tz, now)} (low traffic), {oom}",
            "imminent": f"restarting now: {oom}, too soon to wait for a low-traffic window",
            "quiet_now": f"restarting now (low traffic now), {oom}",
            "no_window": f"restarting now: no low-traffic window before the {oom}",
            "no_profile": f"restarting now: no daily traffic profile to choose a quiet time from ({oom})",
        }[p.reason]

    def _schedule(self, conn, run_id, pb: Playbook, alert: Alert, target: str, ctx: dict,
                  ticket_id: int | None, dry: bool) -> Outcome | None:
        """Schedule the run in the next low-traffic window before the deadline: record it as
        'scheduled', queue the delayed job, say so on the ticket; None = act now (the ladder)."""
        now = time.time()
        tz = self._timezone(pb)
        p = self.plan(pb, ctx, now)
        text = self._plan_text(p, tz, now)
        deadline = datetime.fromtimestamp(p.deadline, dtz.utc) if p.deadline else None
        if p.now or dry:
            if dry and not p.now:
                text = f"dry run: {text} (acting now instead, nothing runs)"
            conn.execute("update remediation_runs set deadline_at = %s where id = %s", (deadline, run_id))
            if ticket_id is not None:
                add_event(conn, ticket_id, "comment", ACTOR, {"text": f"{pb.name} on {target}: {text}"})
            log.info("event=remediation_plan run_id=%s playbook=%s target=%s reason=%s", run_id, pb.name, target,
                     p.reason)
            return None
        at = datetime.fromtimestamp(p.at, dtz.utc)
        conn.execute("update remediation_runs set status = 'scheduled', scheduled_for = %s, deadline_at = %s, "
                     "reason = %s where id = %s", (at, deadline, truncate(text, 2000), run_id))
        if ticket_id is not None:
            conn.execute(
                """insert into automation_jobs (ticket_id, kind, lane, dedup_key, payload, next_attempt_at)
                   values (%s, 'scheduled', 'scheduled', %s, %s, %s) on conflict (dedup_key) do nothing""",
                (ticket_id, f"scheduled:{ticket_id}:r{run_id}", Jsonb({"run_id": run_id}), at))
            add_event(conn, ticket_id, "comment", ACTOR, {"text": f"{pb.name} on {target}: {text}"})
        log.info("event=remediation_scheduled run_id=%s playbook=%s target=%s at=%s deadline=%s", run_id, pb.name,
                 target, at.isoformat(), deadline.isoformat() if deadline else None)
        return Outcome("scheduled", text, run_id, pb.name, target)

    def run_scheduled(self, ticket_id: int, payload: dict) -> Outcome:
        """The delayed job of a scheduled run, at its time: cancelled when the alert resolved
        meanwhile (or its condition cleared in Prometheus), else the ladder with every gate of a
        run at once: kill switch, the target's lock, cooldown, max attempts, dry run, verify."""
        run_id = int(payload.get("run_id") or 0)
        by_name = {p.name: p for p in self.playbooks}
        with self._conn() as conn:
            run = conn.execute("select * from remediation_runs where id = %s", (run_id,)).fetchone()
            if run is None or run["status"] != "scheduled":
                return Outcome("duplicate", f"run {run_id} is not scheduled (any more)", run_id)
            pb = by_name.get(run["playbook"])
            target = run["target"]
            t = conn.execute("select generator_url from tickets where id = %s", (ticket_id,)).fetchone()
            alert = Alert(labels=dict(run["labels"] or {}), fingerprint=run["fingerprint"],
                          starts_at=run["alert_starts_at"], generator_url=(t or {}).get("generator_url") or "")
            if pb is None:
                return self._cancel(conn, run_id, run["playbook"], target, ticket_id,
                                    "its playbook is no longer configured")
            if self._alert_resolved(conn, alert, ticket_id):
                return self._cancel(conn, run_id, pb.name, target, ticket_id,
                                    "the alert resolved before the scheduled time")
            ctx = context(self.cfg, alert.labels, {"target": target})
            expr = expr_from_generator_url(alert.generator_url)
            if expr and self.prom is not None:
                try:
                    if check(self.prom, expr, alert.labels).cleared:
                        return self._cancel(conn, run_id, pb.name, target, ticket_id,
                                            "the alert's condition no longer holds in Prometheus")
                except PrometheusError as exc:
                    log.warning("event=remediation_scheduled_check_failed run_id=%s error=%s", run_id, exc)
            dry = self.dry_run(pb) or run["dry_run"]
            # the status stays 'scheduled' until the ladder marks it running under the target's lock
            # (a 'pending' run without that lock would look orphaned: jobs.orphans)
            conn.execute("update remediation_runs set replica = %s where id = %s", (self.replica, run_id))
            return self._guarded(conn, run_id, pb, target, ticket_id,
                                 lambda: self._ladder(conn, run_id, pb, alert, target, ctx, ticket_id, dry),
                                 busy_escalates=True)

    def _cancel(self, conn, run_id: int, playbook: str, target: str, ticket_id: int | None, why: str) -> Outcome:
        reason = f"scheduled restart cancelled: {why}"
        conn.execute("update remediation_runs set status = 'cancelled', reason = %s, finished_at = now() "
                     "where id = %s and status = 'scheduled'", (reason, run_id))
        if ticket_id is not None:
            add_event(conn, ticket_id, "comment", ACTOR, {"text": f"{playbook} on {target}: {reason}"})
        log.info("event=remediation_schedule_cancelled run_id=%s playbook=%s target=%s why=%r", run_id, playbook,
                 target, why)
        return Outcome("cancelled", reason, run_id, playbook, target)

    def cancel_scheduled(self, conn, ticket_id: int, why: str = "the alert resolved before the scheduled time"
                         ) -> list[Outcome]:
        """Cancel every scheduled run of the ticket (it resolved): their jobs find them cancelled."""
        rows = conn.execute("select id, playbook, target from remediation_runs where ticket_id = %s "
                            "and status = 'scheduled' for update skip locked", (ticket_id,)).fetchall()
        return [self._cancel(conn, r["id"], r["playbook"], r["target"], ticket_id, why) for r in rows]

    # ------------------------------------------------------------------ the ladder
    def _ladder(self, conn, run_id, pb: Playbook, alert: Alert, target: str, ctx: dict,
                ticket_id: int | None, dry: bool) -> Outcome:
        if not dry:
            last = conn.execute(
                """select max(coalesce(a.finished_at, a.started_at)) as at from remediation_attempts a
                   where a.playbook = %s and a.target = %s and a.phase = 'ladder' and not a.dry_run
                     and a.status <> 'dry_run' and a.run_id <> %s""", (pb.name, target, run_id)).fetchone()["at"]
            if last is not None and (utcnow() - last).total_seconds() < pb.cooldown:
                left = pb.cooldown - (utcnow() - last).total_seconds()
                return self._finish(conn, run_id, pb, target, ticket_id, "skipped",
                                    f"cooldown: an action ran on {target} {int((utcnow() - last).total_seconds())}s "
                                    f"ago ({int(left)}s of cooldown left)", escalate=True)
        expr_alert = expr_from_generator_url(alert.generator_url)
        if not dry and self.prom is not None:
            # the alert may be on its way out (e.g. another playbook already fixed the cause):
            # act only while its condition still holds in Prometheus
            pre = self._verify_expr(pb.actions[0], pb, ctx, expr_alert)
            if pre:
                try:
                    c = check(self.prom, pre, alert.labels, self._recovered_when(pb.actions[0], pb))
                    if c.cleared:
                        return self._finish(conn, run_id, pb, target, ticket_id, "skipped",
                                            f"condition already cleared in Prometheus ({c.detail}): nothing to do",
                                            escalate=False)
                except PrometheusError as exc:
                    log.warning("event=remediation_precheck_failed playbook=%s error=%s", pb.name, exc)
        conn.execute("update remediation_runs set status = 'running', started_at = now() where id = %s", (run_id,))
        tried: list[dict] = []
        for step, action in enumerate(pb.actions, start=1):
            if not dry:
                if self.kill_switch_on(conn):
                    return self._finish(conn, run_id, pb, target, ticket_id, "exhausted",
                                        "kill switch turned on during the run", escalate=True, tried=tried)
                n = conn.execute(
                    """select count(*) as n from remediation_attempts where playbook = %s and target = %s
                       and phase = 'ladder' and not dry_run and status in ('ok', 'failed', 'timeout', 'running')
                       and started_at > now() - make_interval(secs => %s)""",
                    (pb.name, target, pb.attempt_window)).fetchone()["n"]
                if n >= pb.max_attempts:
                    return self._finish(conn, run_id, pb, target, ticket_id, "exhausted",
                                        f"max attempts: {n} actions on {target} within "
                                        f"{int(pb.attempt_window)}s (limit {pb.max_attempts})",
                                        escalate=True, tried=tried)
                if step > 1 and self._alert_resolved(conn, alert, ticket_id):
                    return self._finish(conn, run_id, pb, target, ticket_id, "recovered",
                                        "alert resolved", escalate=False, tried=tried)
            a = self._attempt(conn, run_id, pb, action, step, "ladder", ctx, dry)
            tried.append(a)
            self._ticket_event(conn, ticket_id, {"playbook": pb.name, "target": target, "action": action.name,
                                                 "status": a["status"], "dry_run": dry, "output": a["output"][:500]})
            if dry:
                continue
            expr = self._verify_expr(action, pb, ctx, expr_alert)
            if a["status"] == "ok":
                ok, detail = self._verify(conn, expr, alert, ticket_id, action.verify_window,
                                          self._recovered_when(action, pb))
            else:
                ok, detail = False, f"action {a['status']}"
            conn.execute("update remediation_attempts set verified = %s, verify_detail = %s, verify_expr = %s, "
                         "verified_at = now() where id = %s", (ok, truncate(detail, 2000), expr, a["id"]))
            a.update(verified=ok, verify_detail=detail)
            log.info("event=remediation_verified run_id=%s playbook=%s action=%s verified=%s detail=%r",
                     run_id, pb.name, action.name, ok, detail[:200])
            if ok:
                self._ticket_event(conn, ticket_id, {"playbook": pb.name, "target": target, "action": action.name,
                                                     "verified": True, "detail": detail[:500]})
                return self._finish(conn, run_id, pb, target, ticket_id, "recovered",
                                    f"{action.name} worked: {detail}", escalate=False, tried=tried)
        if dry:
            return self._finish(conn, run_id, pb, target, ticket_id, "dry_run",
                                f"dry run: planned {len(tried)} action(s), ran none", escalate=False, tried=tried)
        return self._finish(conn, run_id, pb, target, ticket_id, "exhausted",
                            "no action cleared the condition", escalate=True, tried=tried)

    def _guard(self, raw: str, ctx: dict) -> tuple[bool, str]:
        """Does the guard expression return any series? (False when it cannot be asked.)"""
        if self.prom is None:
            return False, "no Prometheus configured"
        try:
            return any_series(self.prom, str(render(raw, ctx)))
        except (PrometheusError, TemplateError) as exc:
            log.warning("event=remediation_guard_failed error=%s", exc)
            return False, str(exc)

    @staticmethod
    def _recovered_when(action: Action, pb: Playbook) -> str:
        """absent (the verify query says "still broken"; the alert's own expression) or present."""
        v = action.verify or pb.verify
        return v.recovered_when if v is not None else "absent"

    def _verify_expr(self, action: Action, pb: Playbook, ctx: dict, expr_alert: str | None) -> str | None:
        v = action.verify or pb.verify
        if v is not None:
            try:
                return str(render(v.query, ctx))
            except TemplateError as exc:
                log.warning("event=verify_template_failed playbook=%s error=%s", pb.name, exc)
                return None
        return expr_alert

    def _verify(self, conn, expr: str | None, alert: Alert, ticket_id: int | None, window: float,
                recovered_when: str = "absent") -> tuple[bool, str]:
        """Wait up to window for the condition to clear (or the alert to resolve)."""
        deadline = time.monotonic() + window
        need = int(self.r.verify_consecutive)
        streak = 0
        last = "no verify expression and the alert did not resolve" if (not expr or not self.prom) else ""
        while True:
            if self._alert_resolved(conn, alert, ticket_id):
                return True, "alert resolved"
            if expr and self.prom is not None:
                try:
                    c = check(self.prom, expr, alert.labels, recovered_when)
                    last = c.detail
                    streak = streak + 1 if c.cleared else 0
                    if streak >= need:
                        return True, f"cleared in Prometheus: {c.detail}"
                except PrometheusError as exc:
                    streak = 0
                    last = str(exc)
            if time.monotonic() >= deadline:
                return False, f"not cleared within {window:g}s: {last}"
            self.sleep(self.r.verify_interval)

    def _attempt(self, conn, run_id, pb: Playbook, action: Action, step: int, phase: str, ctx: dict,
                 dry: bool) -> dict:
        try:
            params = render(action.params, ctx)
        except TemplateError as exc:
            params, err = None, f"params: {exc}"
        else:
            err = None
        try:
            be = self.backend(action.backend)
            plan = be.describe(action.operation, params) if params is not None else {}
        except BackendError as exc:
            be, plan, err = None, {}, err or str(exc)
        row = conn.execute(
            """insert into remediation_attempts (run_id, playbook, target, phase, step, action, backend, operation,
                                                 command, dry_run, status)
               values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) returning id, started_at""",
            (run_id, pb.name, ctx["target"], phase, step, action.name, action.backend, action.operation,
             Jsonb(plan), dry, "dry_run" if dry else "running")).fetchone()
        a = {"id": row["id"], "step": step, "action": action.name, "backend": action.backend,
             "operation": action.operation, "command": plan}
        if dry:
            out = "dry run: not executed" + (f" ({err})" if err else "")
            conn.execute("update remediation_attempts set output = %s, finished_at = now(), duration_seconds = 0 "
                         "where id = %s", (out, row["id"]))
            log.info("event=remediation_dry_run playbook=%s action=%s plan=%s", pb.name, action.name, plan)
            return {**a, "status": "dry_run", "output": out}
        t0 = time.monotonic()
        if err is not None or be is None:
            status, out = "failed", err or "no backend"
        else:
            status, out = self._execute(be, action, params)
        dur = time.monotonic() - t0
        conn.execute("update remediation_attempts set status = %s, output = %s, finished_at = now(), "
                     "duration_seconds = %s where id = %s", (status, truncate(out, 8000), dur, row["id"]))
        log.info("event=remediation_action playbook=%s target=%s action=%s backend=%s status=%s duration=%.3f",
                 pb.name, ctx["target"], action.name, action.backend, status, dur)
        return {**a, "status": status, "output": out, "duration_seconds": dur}

    @staticmethod
    def _execute(be: Backend, action: Action, params: dict) -> tuple[str, str]:
        """Run with the backend's own timeout plus an outer guard (a stuck call is abandoned)."""
        box: dict = {}

        def work():
            try:
                box["res"] = be.run(action.operation, params, action.timeout)
            except BaseException as exc:  # noqa: BLE001 - reported in the audit row
                box["exc"] = exc

        th = threading.Thread(target=work, name=f"remediation-{action.name}", daemon=True)
        th.start()
        th.join(action.timeout + 5.0)
        if th.is_alive():
            return "timeout", f"no answer within {action.timeout:g}s (abandoned)"
        exc = box.get("exc")
        if isinstance(exc, BackendTimeout):
            return "timeout", str(exc)
        if isinstance(exc, BackendError):
            return "failed", str(exc)
        if exc is not None:
            return "failed", f"{exc.__class__.__name__}: {exc}"
        res: Result = box["res"]
        return ("ok" if res.ok else "failed"), res.output

    def _finish(self, conn, run_id, pb: Playbook, target: str, ticket_id: int | None, status: str, reason: str,
                escalate: bool, tried: list[dict] | None = None) -> Outcome:
        tried = tried or []
        escalated = False
        if escalate and ticket_id is not None and self.r.escalate_on_failure \
                and self._acknowledged(conn, ticket_id):
            # a person already owns the ticket: tell them on the ticket, do not page past them
            add_event(conn, ticket_id, "comment", "remediation",
                      {"text": f"automatic remediation {pb.name} on {target}: {reason} "
                               f"(not escalated: the ticket is acknowledged)"})
            escalate = False
        if escalate and ticket_id is not None and self.r.escalate_on_failure:
            with self._escalating(ticket_id):
                escalated = self._escalate_once(conn, run_id, pb, target, ticket_id, reason, tried)
        # the run's end is written last: who sees it finished sees its escalation too
        conn.execute("update remediation_runs set status = %s, reason = %s, finished_at = now() where id = %s",
                     (status, truncate(reason, 2000), run_id))
        log.info("event=remediation_run_finished run_id=%s playbook=%s target=%s status=%s escalated=%s reason=%r",
                 run_id, pb.name, target, status, escalated, reason[:300])
        return Outcome(status, reason, run_id, pb.name, target, tried, escalated)

    @contextmanager
    def _escalating(self, ticket_id: int):
        with self._lock:
            lock = self._ticket_locks.setdefault(ticket_id, threading.Lock())
        with lock:
            yield

    def _escalate_once(self, conn, run_id, pb: Playbook, target: str, ticket_id: int, reason: str,
                       tried: list[dict]) -> bool:
        """Hand the incident to people; once per incident episode: when another target's run of
        it already escalated, this failure goes on the ticket as a comment (the people paged
        know; one incident must not climb a level per alert)."""
        already = conn.execute(
            """select 1 from remediation_runs r join tickets t on t.id = r.ticket_id
               where r.ticket_id = %s and r.id <> %s and r.escalated
                 and r.created_at >= coalesce(t.last_reopened_at, t.opened_at) limit 1""",
            (ticket_id, run_id)).fetchone()
        if already is not None:
            add_event(conn, ticket_id, "comment", "remediation",
                      {"text": f"automatic remediation {pb.name} on {target}: {reason} "
                               f"(not escalated again: this incident was already handed to people)"})
            return False
        escalated = False
        steps = "; ".join(f"{a['action']} ({a['backend']} {a['operation']}): {a['status']}"
                          + ("" if a.get("verified") is None else
                             (", recovered" if a.get("verified") else ", not recovered"))
                          for a in tried) or "nothing"
        text = f"automatic remediation {pb.name} on {target} did not recover it: {reason}. Tried: {steps}."
        try:
            escalated = bool(self._escalate(ticket_id, text))
        except Exception:  # noqa: BLE001 - escalation timers still run; never lose the audit
            log.exception("event=remediation_escalate_failed ticket_id=%s", ticket_id)
        conn.execute("update remediation_runs set escalated = %s where id = %s", (escalated, run_id))
        return escalated

    @staticmethod
    def _acknowledged(conn, ticket_id: int) -> bool:
        row = conn.execute("select status from tickets where id = %s", (ticket_id,)).fetchone()
        if row is None:
            return False
        status = row["status"] if isinstance(row, dict) else row[0]
        return status == "acknowledged"

    # ------------------------------------------------------------------ resolved: restore
    def restore(self, ticket_id: int, wait_lock: float = 60.0) -> list[Outcome]:
        """Run the on_resolved actions of the ticket's runs that acted (e.g. restore routing)."""
        out = []
        by_name = {p.name: p for p in self.playbooks}
        with self._conn() as conn:
            out += self.cancel_scheduled(conn, ticket_id)
            runs = conn.execute(
                """update remediation_runs r set restored_at = now()
                   where r.ticket_id = %s and r.restored_at is null
                     and exists (select 1 from remediation_attempts a where a.run_id = r.id and a.phase = 'ladder')
                   returning r.id, r.playbook, r.target, r.labels, r.dry_run""", (ticket_id,)).fetchall()
            for run in runs:
                pb = by_name.get(run["playbook"])
                if pb is None or not pb.on_resolved:
                    continue
                dry = self.dry_run(pb) or run["dry_run"]
                if not dry and self.kill_switch_on(conn):
                    out.append(Outcome("skipped", "kill switch is on", run["id"], pb.name, run["target"]))
                    continue
                ctx = context(self.cfg, run["labels"], {"target": run["target"]})
                if pb.restore_after and not dry:
                    deadline = time.monotonic() + pb.restore_timeout
                    while True:
                        hit, detail = self._guard(pb.restore_after, ctx)
                        if not hit or time.monotonic() > deadline:
                            break
                        self.sleep(self.r.verify_interval)
                    if hit:
                        out.append(Outcome("skipped", f"restore_after still true after "
                                           f"{pb.restore_timeout:g}s: {detail}", run["id"], pb.name, run["target"]))
                        continue
                lock = self._conn()
                try:
                    key = (RUN_LOCK_CLASS, f"{pb.name}|{run['target']}")
                    deadline = time.monotonic() + wait_lock
                    while not lock.execute("select pg_try_advisory_lock(%s, hashtext(%s)) as ok", key).fetchone()["ok"]:
                        if time.monotonic() > deadline:
                            break
                        self.sleep(0.5)
                    else:
                        try:
                            tried = [self._attempt(conn, run["id"], pb, a, i, "on_resolved", ctx, dry)
                                     for i, a in enumerate(pb.on_resolved, start=1)]
                        finally:
                            lock.execute("select pg_advisory_unlock(%s, hashtext(%s))", key)
                        for a in tried:
                            self._ticket_event(conn, ticket_id, {"playbook": pb.name, "target": run["target"],
                                                                 "action": a["action"], "phase": "on_resolved",
                                                                 "status": a["status"], "output": a["output"][:500]})
                        out.append(Outcome("restored", "", run["id"], pb.name, run["target"], tried))
                        continue
                    out.append(Outcome("skipped", "target busy: restore not run", run["id"], pb.name, run["target"]))
                finally:
                    lock.close()
        return out
