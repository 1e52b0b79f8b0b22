"""`opsstack demo approver`: a simulated manager/executive for the event-request API, and, when
the demo runs Airflow, the dispatcher that starts the event-creation DAG for each new request.

Dispatch: every pass lists ``?status=received`` and triggers one run of ``event_creation`` per
request, named ``event-request-<id>`` (AirflowClient.trigger_event_creation(once=True)): Airflow
refuses a second run of that name (409), so a retry, a restart of this program or two of them
never start the pipeline twice, and a request taken in while Airflow was down is started when
it is back (nothing is lost: the request waits in PostgreSQL as "received").

Polls the Event Management service's ``GET /api/v1/event-requests?status=awaiting_approval``
and approves each request whose approval has been pending for ``demo.airflow_approver_delay``
(the server's own count of the wait: ``approval.waiting_seconds``), with the role its tier
needs, through ``POST /api/v1/event-requests/<id>/approval`` like a person would (each one
counts as a manual step). Runs until SIGTERM/SIGINT (docs/demo.md "Event-request API").
"""
from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request

from core.exporter import wait_until_stopped
from demo import eventreq
from demo.airflow.client import AirflowError

log = logging.getLogger("opsstack.demo.approver")

NAME = "approver-simulator"
POLL = 1.0


class Approver:
    def __init__(self, base_url: str, delay: float, interval: float = POLL, name: str = NAME,
                 timeout: float = 10.0):
        self.base = base_url.rstrip("/") + eventreq.PREFIX
        self.delay = delay
        self.interval = interval
        self.name = name
        self.timeout = timeout

    def _call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                return exc.code, json.loads(exc.read() or b"{}")
            except ValueError:
                return exc.code, {}

    def due(self) -> list[dict]:
        """The requests whose approval has waited at least the delay."""
        status, body = self._call("GET", "?status=awaiting_approval&limit=500")
        if status != 200:
            raise RuntimeError(f"listing pending requests answered {status}: {body.get('error', '')}")
        out = []
        for r in body.get("requests", []):
            a = r.get("approval") or {}
            waited = a.get("waiting_seconds")
            if a.get("state") == "pending" and a.get("requested") and waited is not None and waited >= self.delay:
                out.append(r)
        return out

    def once(self) -> list[int]:
        """One pass: approve what is due; returns the ids approved."""
        done = []
        for r in self.due():
            tier = r["approval_tier"]
            status, body = self._call("POST", f"/{int(r['id'])}/approval",
                                      {"decision": "approve", "approver": self.name, "role": tier})
            if status == 200:
                done.append(int(r["id"]))
                log.info("event=approver_approved id=%d tier=%s", int(r["id"]), tier)
            else:  # decided meanwhile, rolled back...: the next pass sees the new state
                log.warning("event=approver_refused id=%d status=%d error=%r", int(r["id"]), status,
                            str(body.get("error", ""))[:200])
        return done

    def run(self, stop: threading.Event, dispatcher: "Dispatcher | None" = None) -> None:
        passes = ([dispatcher.once] if dispatcher else []) + [self.once]
        while not stop.is_set():
            for one in passes:
                try:
                    one()
                except (OSError, RuntimeError, ValueError, KeyError, TypeError) as exc:  # next pass
                    log.warning("event=approver_poll_failed pass=%s error=%r", type(one.__self__).__name__,
                                str(exc)[:200])
            stop.wait(self.interval)


class Dispatcher:
    """Starts the event-creation DAG for each request the API took in (see the module doc)."""

    def __init__(self, approver: "Approver", airflow, api: str | None = None):
        self.approver = approver
        self.airflow = airflow          # demo.airflow.client.AirflowClient
        self.api = api
        self.started: set[int] = set()  # this process' memory only: Airflow's 409 is the real guard

    def once(self) -> list[int]:
        status, body = self.approver._call("GET", "?status=received&limit=500")
        if status != 200:
            raise RuntimeError(f"listing received requests answered {status}: {body.get('error', '')}")
        done = []
        for r in body.get("requests", []):
            rid = int(r["id"])
            if rid in self.started:
                continue
            try:
                run = self.airflow.trigger_event_creation(rid, self.api, once=True)
                log.info("event=dispatch_started id=%d run=%s", rid, run)
                done.append(rid)
            except AirflowError as exc:
                if exc.status != 409:  # Airflow down or refusing: the next pass tries again
                    log.warning("event=dispatch_failed id=%d error=%r", rid, str(exc)[:200])
                    continue
                log.info("event=dispatch_already id=%d", rid)
            self.started.add(rid)
        return done


def base_url(demo, platform, stack) -> str | None:
    """The admin URL of the Event Management service in the resolved config, or None."""
    for svc in platform.services:
        if eventreq.serves(svc):
            ports = demo.ports.get(svc.name) or {}
            if isinstance(ports.get("admin"), int):
                return f"http://{stack.host}:{ports['admin']}"
    return None


def run(url: str, delay: float, airflow=None) -> int:
    """Approve what is due at ``url`` (the Event Management admin URL) until SIGTERM/SIGINT;
    with ``airflow`` (an AirflowClient), also start the DAG for each new request (Dispatcher)."""
    stop = threading.Event()
    approver = Approver(url, delay)
    dispatcher = Dispatcher(approver, airflow, url) if airflow is not None else None
    log.info("event=approver_started url=%s delay=%.0fs dispatch=%s", url, approver.delay, airflow is not None)
    t = threading.Thread(target=approver.run, args=(stop, dispatcher), name="demo-approver", daemon=True)
    t.start()
    wait_until_stopped(stop)
    stop.set()
    t.join(timeout=15)
    return 0


def launcher_programs(resolved: dict) -> list[dict]:
    """The supervised `demo-approver` when the demo runs Airflow (demo.airflow), for the launcher's
    list of declared programs (stack/launcher.py, like demo.db.launcher_programs)."""
    d = resolved["demo"]
    if not d["enabled"] or not d.get("airflow"):
        return []
    return [{"name": "demo-approver", "args": ["demo", "approver"], "ready_url": None, "url": None,
             "reads": ["demo.enabled", "demo.airflow", "demo.airflow_approver_delay", "demo.ports", "platform",
                       "stack.ports"]}]
