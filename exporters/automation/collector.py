"""The automation exporter's collector (docs/automation.md, "Exporter").

At scrape time (a scrape within ``cache_ttl`` of the last read serves that read again, its age in
``opsstack_automation_cache_age_seconds``) it reads three sources, each on its own:

- **airflow** (exporters/automation/airflow.py): health, DAGs, the window's runs plus the queued
  and running ones, the failed task instances of the window -> the DAG and run series and the
  workflow KPIs (exporters/automation/kpis.py);
- **receiver** (exporters/automation/incidents.py): ``opsstack_automation_rate{kind="incidents"}``
  and ``opsstack_automation_response_seconds``;
- **event_requests** (exporters/automation/eventreq.py): ``rate{kind="event_requests"}`` and the
  approval queue.

A source that fails (refused, 401 after a new token, 5xx, timeout, not JSON, too large) is
``opsstack_automation_up{source} 0`` (and ``opsstack_exporter_up{exporter="automation",source}``)
with one log line naming the reason, and its series are absent; the scrape still answers. A
source that is not configured (no URL known) is absent altogether.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass

import requests
from prometheus_client.core import GaugeMetricFamily, Metric

from core.config import view
from core.exporter import ExporterCollector, Scrape
from exporters.automation import kpis as K
from exporters.automation.airflow import RUN_STATES, AirflowClient, Health
from exporters.automation.eventreq import EventRequestKpis, EventRequestSource
from exporters.automation.http import SourceError, session_for
from exporters.automation.incidents import IncidentKpis, ReceiverSource

log = logging.getLogger("opsstack.exporter.automation")

P = "opsstack_automation_"


@dataclass
class Snapshot:
    at: float
    errors: dict                                 # source -> reason (None: it worked)
    kpis: K.Kpis | None = None
    health: Health | None = None
    incidents: IncidentKpis | None = None
    event_requests: EventRequestKpis | None = None
    runs_read: int = 0
    runs_complete: bool = True


def _port_url(cfg: dict, port) -> str | None:
    if isinstance(port, bool) or not isinstance(port, int):
        return None  # 'auto' (not resolved by `opsstack up`) or absent
    return f"http://{cfg['stack']['host']}:{port}"


def urls(cfg: dict) -> dict:
    """The resolved URL of each source (None: not configured) and the receiver's token."""
    a = view(cfg, "exporters.automation")
    ports = cfg["stack"]["ports"]
    airflow = a.airflow.url or _port_url(cfg, ports.get("airflow"))
    password_file = a.airflow.password_file
    if password_file is None and a.airflow.url is None:  # the demo's Airflow (demo/airflow/launcher.py)
        password_file = os.path.join(cfg["stack"]["run_dir"], "airflow", "passwords.json")
    receiver = (a.receiver.url or _port_url(cfg, ports.get("receiver"))) if a.receiver.enabled else None
    token = a.receiver.token or cfg.get("receiver", {}).get("token")
    er = None
    if a.event_requests.enabled:
        er = a.event_requests.url
        if er is None and cfg["demo"]["enabled"]:
            admin = (cfg["demo"]["ports"].get(a.event_requests.service) or {}).get("admin")
            er = _port_url(cfg, admin)
    return {"airflow": airflow, "password_file": password_file, "receiver": receiver, "receiver_token": token, "event_requests": er}


def _summary(name: str, doc: str) -> Metric:
    """A family typed summary: its ``quantile`` samples (0.5, 0.95) plus ``_count`` and ``_sum`` over
    the window (gauges of the window, not counters: never rate() them). Typed summary because a
    ``quantile`` label belongs to a summary (promtool check metrics)."""
    return Metric(name, doc + " Quantiles, count and sum over the window.", "summary")


def _observe(m: Metric, labels: dict, values: list) -> None:
    if not values:
        return
    for q in K.QUANTILES:
        m.add_sample(m.name, {**labels, "quantile": str(q)}, K.quantile(values, q))
    m.add_sample(m.name + "_count", labels, float(len(values)))
    m.add_sample(m.name + "_sum", labels, float(sum(values)))


def _reason(exc: Exception) -> str:
    """The log line's reason: a SourceError says it; anything else (an answer of a shape the
    parsers did not expect) is named by its type."""
    if isinstance(exc, SourceError):
        return str(exc)
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"


class AutomationCollector(ExporterCollector):
    exporter = "automation"

    def __init__(self, settings, airflow_url: str | None, receiver_url: str | None = None,
                 receiver_token: str | None = None, event_requests_url: str | None = None,
                 clock=time.time, session: requests.Session | None = None, password_file: str | None = None):
        """``settings``: the view of exporters.automation; the URLs: the sources (None: absent)."""
        self.s = settings
        self.clock = clock

        def http(url):  # one session per source (its proxy resolved once), or the one given
            return session or session_for(url)
        self.airflow = AirflowClient(settings, airflow_url, http(airflow_url), password_file) if airflow_url else None
        self.receiver = (ReceiverSource(settings, receiver_url, receiver_token, http(receiver_url))
                         if receiver_url else None)
        self.event_requests = (EventRequestSource(settings, event_requests_url, http(event_requests_url))
                               if event_requests_url else None)
        self.lock = threading.Lock()
        self.snapshot: Snapshot | None = None

    @classmethod
    def from_config(cls, cfg: dict, **kw) -> "AutomationCollector":
        u = urls(cfg)
        return cls(view(cfg, "exporters.automation"), u["airflow"], u["receiver"], u["receiver_token"],
                   u["event_requests"], password_file=u["password_file"], **kw)

    # ------------------------------------------------------------------ reading
    def read(self) -> Snapshot:
        now = self.clock()
        since = now - self.s.window
        snap = Snapshot(at=now, errors={})
        if self.airflow is not None:
            try:
                snap.health = self.airflow.health()
                dags = self.airflow.dags()
                runs, snap.runs_complete = self.airflow.runs(
                    since, None if self.s.runs_query == "batch" else [d.dag_id for d in dags], self.s.max_runs)
                snap.runs_read = len(runs)
                if not snap.runs_complete:
                    log.warning("event=airflow_runs_capped read=%d max_runs=%d", len(runs), self.s.max_runs)
                failures = self.airflow.task_failures(since, self.s.max_runs)
                snap.kpis = K.compute(dags, runs, failures, now=now, since=since,
                                      manual_minutes=dict(self.s.manual_minutes),
                                      manual_default=self.s.manual_minutes_default,
                                      max_dags=self.s.max_dags, max_tasks=self.s.max_tasks)
                snap.errors["airflow"] = None
            except Exception as exc:  # noqa: BLE001 - a source's answer must never fail the scrape
                snap.errors["airflow"] = _reason(exc)
        if self.receiver is not None:
            try:
                snap.incidents = self.receiver.read(now, since)
                snap.errors["receiver"] = None
            except Exception as exc:  # noqa: BLE001 - a source's answer must never fail the scrape
                snap.errors["receiver"] = _reason(exc)
        if self.event_requests is not None:
            try:
                snap.event_requests = self.event_requests.read(now, since)
                snap.errors["event_requests"] = None
            except Exception as exc:  # noqa: BLE001 - a source's answer must never fail the scrape
                snap.errors["event_requests"] = _reason(exc)
        return snap

    def current(self) -> Snapshot:
        with self.lock:  # one read at a time; a scrape meanwhile waits for it and serves it
            snap = self.snapshot
            if snap is None or self.clock() - snap.at >= self.s.cache_ttl:
                snap = self.snapshot = self.read()
            return snap

    # ------------------------------------------------------------------ collection
    def collect_sources(self, scrape: Scrape):
        started = time.perf_counter()
        snap = self.current()
        up = GaugeMetricFamily(P + "up", "1 if the last read of the source worked, else 0 (reason in the log).",
                               labels=["source"])
        for src, err in sorted(snap.errors.items()):
            scrape.set_up(src, err is None, err)
            up.add_metric([src], 1.0 if err is None else 0.0)
        yield up
        yield GaugeMetricFamily(P + "window_seconds", "The window of the run, ticket and request figures.",
                                value=float(self.s.window))
        yield GaugeMetricFamily(P + "cache_age_seconds", "Age of the sources' read this scrape serves.",
                                value=max(0.0, self.clock() - snap.at))
        if snap.health is not None:
            yield from self._health(snap.health, snap.at)
        if snap.kpis is not None:
            yield from self._airflow(snap.kpis, snap)
        yield from self._rates(snap)
        yield GaugeMetricFamily(P + "scrape_duration_seconds", "Time this scrape took (reads included).",
                                value=time.perf_counter() - started)

    def _health(self, h: Health, at: float):
        parts = [("scheduler", h.scheduler, h.scheduler_heartbeat, True),
                 ("dag_processor", h.dag_processor, h.dag_processor_heartbeat, h.has_dag_processor)]
        for name, status, beat, present in parts:
            if not present:
                continue
            yield GaugeMetricFamily(P + f"{name}_healthy", f"1 if Airflow's health says the {name} is healthy.",
                                    value=1.0 if status == "healthy" else 0.0)
            if beat is not None:
                yield GaugeMetricFamily(P + f"{name}_heartbeat_age_seconds",
                                        f"Age of the {name}'s latest heartbeat.", value=max(0.0, at - beat))

    def _airflow(self, k: K.Kpis, snap: Snapshot):
        d = GaugeMetricFamily(P + "dags", "DAGs known to Airflow, active (not paused) or paused.", labels=["state"])
        d.add_metric(["active"], k.dags_active)
        d.add_metric(["paused"], k.dags_paused)
        yield d
        yield GaugeMetricFamily(P + "dag_runs_read", "DAG runs read from Airflow by the last read.",
                                value=snap.runs_read)
        runs = GaugeMetricFamily(P + "dag_runs", "DAG runs in the window (queued and running: now) by state.",
                                 labels=["dag_id", "state"])
        ratio = GaugeMetricFamily(P + "dag_run_success_ratio", "Successful / finished runs of the DAG in the window.",
                                  labels=["dag_id"])
        dur = _summary(P + "dag_run_duration_seconds", "Duration of the DAG's finished runs in the window.")
        queued = _summary(P + "dag_run_queued_seconds", "Time the DAG's runs waited queued (window).")
        oldest = GaugeMetricFamily(P + "oldest_running_seconds", "Age of the DAG's oldest running run.",
                                   labels=["dag_id"])
        saved = GaugeMetricFamily(P + "time_saved_seconds", "Manual minutes x successful runs in the window, in seconds.",
                                  labels=["dag_id"])
        for dag, st in sorted(k.per_dag.items()):
            for state in RUN_STATES:
                runs.add_metric([dag, state], st.runs[state])
            if st.finished:
                ratio.add_metric([dag], st.runs["success"] / st.finished)
            _observe(dur, {"dag_id": dag}, st.durations)
            _observe(queued, {"dag_id": dag}, st.queued)
            if st.oldest_running is not None:
                oldest.add_metric([dag], st.oldest_running)
            if st.manual:
                saved.add_metric([dag], st.time_saved_seconds)
        yield from (runs, ratio, dur, queued, oldest, saved)
        sp = GaugeMetricFamily(P + "speedup_ratio", "Manual minutes / mean minutes of the DAG's successful runs.",
                               labels=["dag_id"])
        for dag, v in sorted(k.speedup.items()):
            sp.add_metric([dag], v)
        yield sp
        tf = GaugeMetricFamily(P + "task_failures", "Failed task instances in the window.",
                               labels=["dag_id", "task_id"])
        for (dag, task), n in sorted(k.task_failures.items()):
            tf.add_metric([dag, task], n)
        yield tf
        yield GaugeMetricFamily(P + "workflows_in_operation", "Active (not paused) DAGs.",
                                value=k.workflows_in_operation)
        err = GaugeMetricFamily(P + "error_ratio", "Failed / finished runs of every DAG in the window.")
        if k.error_ratio is not None:
            err.add_metric([], k.error_ratio)
        yield err
        avg = GaugeMetricFamily(P + "processing_seconds_avg", "Mean duration of the successful runs in the window.")
        if k.processing_seconds_avg is not None:
            avg.add_metric([], k.processing_seconds_avg)
        yield avg

    def _rates(self, snap: Snapshot):
        rate = GaugeMetricFamily(P + "rate", "Share of the work done without a person, in the window.",
                                 labels=["kind"])
        inc, er = snap.incidents, snap.event_requests
        if inc is not None and inc.resolved:
            rate.add_metric(["incidents"], inc.auto / inc.resolved)
        if er is not None and er.completed:
            rate.add_metric(["event_requests"], er.without_person / er.completed)
        yield rate
        if inc is not None:
            resp = _summary(P + "response_seconds", "Time from an incident's start to its first action "
                            "(a person or a playbook), tickets begun in the window.")
            _observe(resp, {}, inc.responses)
            yield resp
            n = GaugeMetricFamily(P + "incidents", "Tickets the incident figures are over.", labels=["kind"])
            n.add_metric(["resolved"], inc.resolved)
            n.add_metric(["responded"], len(inc.responses))
            n.add_metric(["left_out"], inc.left_out)
            yield n
        if er is not None:
            pend = GaugeMetricFamily(P + "approvals_pending", "Event requests waiting for an approval, by tier.",
                                     labels=["tier"])
            old = GaugeMetricFamily(P + "approval_oldest_seconds", "Wait of the oldest pending approval, by tier.",
                                    labels=["tier"])
            for tier, count in sorted(er.pending.items()):
                pend.add_metric([tier], count)
                if tier in er.oldest:
                    old.add_metric([tier], er.oldest[tier])
            yield from (pend, old)
