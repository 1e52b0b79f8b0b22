"""The runner against real PostgreSQL and a real Prometheus scraping a /metrics we control.

The "service" is the one fake HTTP server (tests/support/fakehttp.py): GET /metrics shows
demo_value{service="svc"}; its admin hooks (called by the http backend) fix the value, do nothing,
fail or hang. The alert's
condition is `max by (service) (demo_value) > 5`, put in its generatorURL as Prometheus does.
"""
from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

import psycopg
import pytest

from core.config import load_data
from tests.support import receiver as T
from tests.support.fakehttp import FakeHTTP
from tests.support.servers import Prometheus
from webhook_receiver.remediation import Alert, Runner, store
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

EXPR = "max by (service) (demo_value) > 5"
PLATFORM = {"services": [{"name": "svc"}]}


class Service:
    """The service's state behind its routes on the one fake HTTP server."""

    def __init__(self):
        self.value = 10.0
        self.release = threading.Event()
        self.http = FakeHTTP({"GET /metrics": self.metrics, "POST /fix": self.fix, "POST /slowfix": self.slowfix,
                              "POST /slowerfix": self.slowerfix, "POST /fail": (500, "broken"),
                              "POST /hang": self.hang, "POST *": (200, "ok")})

    @property
    def url(self) -> str:
        return self.http.url

    @property
    def calls(self) -> list[str]:
        """The admin hooks called (POST paths), in order."""
        return [r.path for r in self.http.find("POST")]

    def metrics(self, req):
        return 200, f'# TYPE demo_value gauge\ndemo_value{{service="svc"}} {self.value}\n'

    def fix(self, req):
        self.value = 0.0
        return 200, "ok"

    def slowfix(self, req):
        self.release.wait(1.0)
        return self.fix(req)

    def slowerfix(self, req):  # holds the lock long enough for any scheduling delay
        self.release.wait(4.0)
        return self.fix(req)

    def hang(self, req):
        self.release.wait(10)
        return 200, "ok"


@pytest.fixture(scope="module")
def service():
    s = Service()
    with s.http:
        yield s
        s.release.set()


@pytest.fixture(scope="module")
def prom(service, tmp_path_factory):
    host = service.url.split("//")[1]
    p = Prometheus({"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "scrape_configs": [{"job_name": "svc", "static_configs": [{"targets": [host]}]}]},
                   workdir=tmp_path_factory.mktemp("prom"))
    p.start()
    yield p
    p.stop()


@pytest.fixture
def svc(service, prom):
    """The service broken again (value 10, seen by Prometheus) before each test."""
    service.value = 10.0
    service.http.clear()
    service.release.clear()
    wait_value(prom, lambda v: v == 10.0)
    return service


def wait_value(prom, ok, timeout=20):
    from webhook_receiver.remediation.verify import Prometheus as P

    q = P(prom.url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        res = q.query('demo_value{service="svc"}')["result"]
        if res and ok(float(res[0]["value"][1])):
            return
        time.sleep(0.2)
    raise AssertionError("Prometheus never saw the expected value")


def action(name, path, **kw):
    return {"name": name, "backend": "http", "params": {"url": "{base}" + path}, **kw}


def make_cfg(db, prom, actions, **pb):
    remediation = {k: pb.pop(k) for k in list(pb) if k in ("dry_run", "kill_switch")}
    return load_data({
        "database": {"url": db},
        "platform": PLATFORM,  # the playbooks act on service "svc": a service of the platform
        "remediation": {"prometheus_url": prom.url, "verify_interval": "0.2s", "verify_consecutive": 1,
                        "verify_window": "15s", **remediation,
                        "playbooks": [{"name": "fix-svc", "match": {"alertname": "DemoHigh"},
                                       "target": "svc-{service}", "actions": actions, **pb}]}})


class Escalations(list):
    def __call__(self, ticket_id, reason):
        self.append((ticket_id, reason))
        return True


def runner(cfg, db, svc, esc=None):
    store.migrate_url(db)
    r = Runner(cfg, db, escalate=esc if esc is not None else Escalations())
    # the service URL is not a label: give it to the templates the way demo ports are
    import webhook_receiver.remediation.runner as rmod

    orig = rmod.context

    def ctx(cfg_, labels, extra=None):
        return orig(cfg_, labels, {"base": svc.url, **(extra or {})})
    rmod.context = ctx
    return r


@pytest.fixture(autouse=True)
def _restore_context():
    import webhook_receiver.remediation.runner as rmod

    orig = rmod.context
    yield
    rmod.context = orig


T0 = datetime(2026, 11, 26, 9, 0, tzinfo=timezone.utc)


def alert(n=0, fp="fp-1", status="firing"):
    return Alert(labels={"alertname": "DemoHigh", "service": "svc", "severity": "warning"}, fingerprint=fp,
                 starts_at=T0 + timedelta(minutes=n), status=status,
                 generator_url=f"http://prom/graph?g0.expr={quote(EXPR)}&g0.tab=1")


def ticket(db, a: Alert) -> int:
    with psycopg.connect(db) as c:
        tid = c.execute("insert into tickets (incident_key, fingerprint, status, alertname, service, labels, "
                        "starts_at, generator_url) values (%s, %s, 'open', %s, 'svc', %s, %s, %s) returning id",
                        (a.fingerprint, a.fingerprint, a.alertname, psycopg.types.json.Jsonb(a.labels), a.starts_at,
                         a.generator_url)).fetchone()[0]
        c.execute("insert into ticket_alerts (ticket_id, fingerprint, starts_at, status, labels) "
                  "values (%s, %s, %s, 'firing', %s)", (tid, a.fingerprint, a.starts_at,
                                                       psycopg.types.json.Jsonb(a.labels)))
    return tid


def rows(db, sql, *args):
    with psycopg.connect(db, row_factory=psycopg.rows.dict_row) as c:
        return c.execute(sql, args).fetchall()


# ---------------------------------------------------------------------------------- tests
def test_recovered_by_the_first_action_verified_in_prometheus(pg_db, prom, svc):
    esc = Escalations()
    r = runner(make_cfg(pg_db, prom, [action("fix", "/fix")]), pg_db, svc, esc)
    a = alert()
    tid = ticket(pg_db, a)
    out = r.handle_ticket(tid)
    assert out.status == "recovered", out
    assert svc.calls == ["/fix"] and esc == []
    [run] = rows(pg_db, "select * from remediation_runs")
    assert (run["status"], run["playbook"], run["target"], run["ticket_id"]) == ("recovered", "fix-svc", "svc-svc", tid)
    [att] = rows(pg_db, "select * from remediation_attempts")
    assert (att["status"], att["verified"], att["backend"], att["step"]) == ("ok", True, "http", 1)
    assert att["verify_expr"] == EXPR and "cleared in Prometheus" in att["verify_detail"]
    assert att["command"] == {"backend": "http", "method": "POST", "url": [svc.url + "/fix"]}
    assert att["duration_seconds"] >= 0 and att["finished_at"] is not None
    kinds = [e["details"]["action"] for e in rows(pg_db, "select details from ticket_events where kind = 'remediation'")]
    assert kinds == ["fix", "fix"]


def test_the_ladder_climbs_until_the_condition_clears(pg_db, prom, svc):
    r = runner(make_cfg(pg_db, prom, [action("restart", "/noop", verify_window="1s"),
                                     action("fail", "/fail"), action("replace", "/fix")]), pg_db, svc)
    out = r.run_alert(alert())
    assert out.status == "recovered" and svc.calls == ["/noop", "/fail", "/fix"]
    atts = rows(pg_db, "select action, status, verified, verify_detail from remediation_attempts order by step")
    assert [(x["action"], x["status"], x["verified"]) for x in atts] == [
        ("restart", "ok", False), ("fail", "failed", False), ("replace", "ok", True)]
    assert "not cleared within 1s" in atts[0]["verify_detail"] and "1 series still match" in atts[0]["verify_detail"]


def test_exhausted_ladder_escalates_with_what_was_tried(pg_db, prom, svc):
    esc = Escalations()
    r = runner(make_cfg(pg_db, prom, [action("restart", "/noop", verify_window="0.5s")]), pg_db, svc, esc)
    tid = ticket(pg_db, alert())
    out = r.handle_ticket(tid)
    assert out.status == "exhausted" and out.escalated
    [(t, reason)] = esc
    assert t == tid and "restart (http request): ok, not recovered" in reason and "fix-svc on svc-svc" in reason
    assert rows(pg_db, "select escalated from remediation_runs")[0]["escalated"] is True


def test_a_second_fault_inside_the_cooldown_is_handed_to_people(pg_db, prom, svc):
    esc = Escalations()
    r = runner(make_cfg(pg_db, prom, [action("fix", "/fix")], cooldown="10m"), pg_db, svc, esc)
    assert r.handle_ticket(ticket(pg_db, alert(0))).status == "recovered"
    svc.value = 10.0
    wait_value(prom, lambda v: v == 10.0)
    tid2 = ticket(pg_db, alert(5, fp="fp-2"))
    out = r.handle_ticket(tid2)
    assert out.status == "skipped" and "cooldown" in out.reason and out.escalated
    assert svc.calls == ["/fix"]                                  # no second action
    assert esc[0][0] == tid2 and "cooldown" in esc[0][1]


def test_an_acknowledged_ticket_gets_a_comment_not_an_escalation(pg_db, prom, svc):
    esc = Escalations()
    r = runner(make_cfg(pg_db, prom, [action("fix", "/fix")], cooldown="10m"), pg_db, svc, esc)
    assert r.handle_ticket(ticket(pg_db, alert(0))).status == "recovered"
    svc.value = 10.0
    wait_value(prom, lambda v: v == 10.0)
    tid2 = ticket(pg_db, alert(5, fp="fp-2"))
    with psycopg.connect(pg_db) as c:  # someone already took it
        c.execute("update tickets set status = 'acknowledged', acknowledged_at = now() where id = %s", (tid2,))
    out = r.handle_ticket(tid2)
    assert out.status == "skipped" and "cooldown" in out.reason and not out.escalated
    assert esc == [] and svc.calls == ["/fix"]
    [ev] = rows(pg_db, "select actor, details from ticket_events where ticket_id = %s and kind = 'comment'", tid2)
    assert ev["actor"] == "remediation" and "not escalated" in ev["details"]["text"]
    assert rows(pg_db, "select escalated from remediation_runs where ticket_id = %s and status = 'skipped'",
                tid2)[0]["escalated"] is False


def test_max_attempts_per_window(pg_db, prom, svc):
    esc = Escalations()
    r = runner(make_cfg(pg_db, prom, [action("noop", "/noop", verify_window="0s")], cooldown="0s",
                        max_attempts=2, attempt_window="1h"), pg_db, svc, esc)
    assert r.run_alert(alert(0)).status == "exhausted"
    assert r.run_alert(alert(1)).status == "exhausted"
    out = r.run_alert(alert(2))
    assert out.status == "exhausted" and "max attempts: 2 actions" in out.reason
    assert svc.calls == ["/noop", "/noop"]
    assert rows(pg_db, "select count(*) n from remediation_attempts")[0]["n"] == 2


def test_dry_run_plans_and_records_but_runs_nothing(pg_db, prom, svc):
    esc = Escalations()
    r = runner(make_cfg(pg_db, prom, [action("restart", "/fix"), action("replace", "/fix")], dry_run=True),
               pg_db, svc, esc)
    out = r.handle_ticket(ticket(pg_db, alert()))
    assert out.status == "dry_run" and not out.escalated
    assert svc.calls == [] and esc == []
    atts = rows(pg_db, "select action, status, dry_run, command, output from remediation_attempts order by step")
    assert [(x["action"], x["status"], x["dry_run"]) for x in atts] == [("restart", "dry_run", True),
                                                                       ("replace", "dry_run", True)]
    assert atts[0]["command"]["url"] == [svc.url + "/fix"] and "not executed" in atts[0]["output"]
    # a dry run does not start a cooldown: a real run right after acts
    r2 = runner(make_cfg(pg_db, prom, [action("restart", "/fix")]), pg_db, svc, esc)
    assert r2.run_alert(alert(1)).status == "recovered"


def test_kill_switch_at_run_time_and_in_config(pg_db, prom, svc):
    esc = Escalations()
    r = runner(make_cfg(pg_db, prom, [action("fix", "/fix")]), pg_db, svc, esc)
    with store.connect(pg_db, autocommit=True) as c:
        store.set_setting(c, "kill_switch", True, "test")
    tid = ticket(pg_db, alert())
    out = r.handle_ticket(tid)
    assert out.status == "skipped" and "kill switch" in out.reason and out.escalated and svc.calls == []
    with store.connect(pg_db, autocommit=True) as c:
        store.set_setting(c, "kill_switch", False, "test")
    r2 = runner(make_cfg(pg_db, prom, [action("fix", "/fix")], kill_switch=True), pg_db, svc, esc)
    assert r2.run_alert(alert(1)).status == "skipped" and svc.calls == []


def test_acts_on_firing_alerts_only(pg_db, prom, svc):
    r = runner(make_cfg(pg_db, prom, [action("fix", "/fix")]), pg_db, svc)
    assert r.run_alert(alert(status="resolved")).status == "not_firing"
    assert svc.calls == [] and rows(pg_db, "select count(*) n from remediation_runs")[0]["n"] == 0


def test_two_runners_on_one_database_act_once(pg_db, prom, svc):
    """Two receiver replicas get the same alert (clustered Alertmanagers): one action."""
    cfg = make_cfg(pg_db, prom, [action("fix", "/slowfix")])
    a, b = runner(cfg, pg_db, svc), Runner(cfg, pg_db, escalate=Escalations(), replica="replica-b")
    gate = threading.Barrier(2)
    outs = []

    def go(r):
        gate.wait()
        outs.append(r.run_alert(alert()))

    ts = [threading.Thread(target=go, args=(x,)) for x in (a, b)]
    [t.start() for t in ts]
    [t.join(60) for t in ts]
    assert sorted(o.status for o in outs) == ["duplicate", "recovered"]
    assert svc.calls == ["/slowfix"]


def test_the_advisory_lock_keeps_two_episodes_off_one_target(pg_db, prom, svc):
    """Two alerts (different fingerprints) for the same target at once: one acts, one stands aside."""
    cfg = make_cfg(pg_db, prom, [action("fix", "/slowerfix")], cooldown="0s")
    a, b = runner(cfg, pg_db, svc), Runner(cfg, pg_db, escalate=Escalations(), replica="replica-b")
    gate = threading.Barrier(2)
    outs = []

    def go(r, fp):
        gate.wait()
        outs.append(r.run_alert(alert(fp=fp)))

    ts = [threading.Thread(target=go, args=(x, fp)) for x, fp in ((a, "fp-a"), (b, "fp-b"))]
    [t.start() for t in ts]
    [t.join(60) for t in ts]
    statuses = sorted(o.status for o in outs)
    assert statuses == ["recovered", "skipped"], outs
    assert "another run is acting" in next(o.reason for o in outs if o.status == "skipped")
    assert svc.calls == ["/slowerfix"]


def test_action_timeout_is_recorded_and_the_ladder_goes_on(pg_db, prom, svc):
    r = runner(make_cfg(pg_db, prom, [action("hang", "/hang", timeout="0.5s"), action("fix", "/fix")]), pg_db, svc)
    out = r.run_alert(alert())
    assert out.status == "recovered"
    atts = rows(pg_db, "select action, status, output from remediation_attempts order by step")
    assert (atts[0]["status"], atts[1]["status"]) == ("timeout", "ok") and "timed out" in atts[0]["output"]
    svc.release.set()


def test_skip_if_stands_aside_without_escalating(pg_db, prom, svc):
    esc = Escalations()
    r = runner(make_cfg(pg_db, prom, [action("fix", "/fix")], skip_if='demo_value{{service="{service}"}} > 1'),
               pg_db, svc, esc)
    out = r.run_alert(alert())
    assert out.status == "skipped" and "skip_if matched" in out.reason and not out.escalated
    assert svc.calls == [] and esc == []


def test_on_resolved_restores_once_after_the_guard_clears(pg_db, prom, svc):
    r = runner(make_cfg(pg_db, prom, [action("reroute", "/fix")],
                        on_resolved=[action("restore", "/restore")],
                        restore_after='demo_value{{service="{service}"}} > 5'), pg_db, svc)
    tid = ticket(pg_db, alert())
    assert r.handle_ticket(tid).status == "recovered"
    with psycopg.connect(pg_db) as c:
        c.execute("update tickets set status = 'resolved', resolved_at = now() where id = %s", (tid,))
    [out] = r.restore(tid)
    assert out.status == "restored" and svc.calls == ["/fix", "/restore"]
    assert r.restore(tid) == []                                   # once
    att = rows(pg_db, "select phase, action, status from remediation_attempts where phase = 'on_resolved'")
    assert att == [{"phase": "on_resolved", "action": "restore", "status": "ok"}]


# ------------------------------------------------------------- wired into the receiver


@pytest.fixture
def receiver(pg_db, prom, svc):
    from webhook_receiver.app import close_app, create_app

    apps = []

    def make(actions, **pb):
        cfg = T.config(pg_db, remediation={
            "prometheus_url": prom.url, "verify_interval": "0.2s", "verify_consecutive": 1, "verify_window": "15s",
            "playbooks": [{"name": "fix-svc", "match": {"alertname": "DemoHigh"}, "target": "svc-{service}",
                           "actions": [{**a, "params": {"url": svc.url + a["params"]["url"][len("{base}"):]}}
                                       for a in actions], **pb}]},
            enrichment={"enabled": False}, platform=PLATFORM,
            receiver={"api": {"tokens": [{"name": "ops-bot", "token": "write-token-123", "scopes": ["read", "write"]}]}})
        app = create_app(cfg)
        apps.append(app)
        return T.reader(app.test_client())  # API reads need a credential
    yield make
    for a in apps:
        close_app(a)


def webhook_alert(status="firing"):
    a = T.alert("DemoHigh", status=status, service="svc", severity="warning")
    a["generatorURL"] = f"http://prom/graph?g0.expr={quote(EXPR)}&g0.tab=1"
    return a


def post(client, alerts):
    r = client.post("/webhook/alertmanager", json=T.payload(alerts), headers=T.auth())
    assert r.status_code == 200, r.get_json()
    return r.get_json()


def test_receiver_runs_the_playbook_when_a_ticket_opens(receiver, svc, pg_db):
    c = receiver([action("fix", "/fix")])
    post(c, [webhook_alert()])
    [t] = c.get("/api/v1/tickets").get_json()
    runs = wait_for(lambda: [r for r in c.get(f"/api/v1/tickets/{t['id']}/remediation").get_json()["runs"]
                             if r["status"] not in ("pending", "running")])
    assert runs[0]["status"] == "recovered" and runs[0]["attempts"][0]["verified"] is True
    assert svc.calls == ["/fix"]
    # Alertmanager then says resolved: the ticket closes without a human
    post(c, [{**webhook_alert(), "status": "resolved", "endsAt": "2026-11-26T09:05:00Z"}])
    text = c.get("/metrics/automation").get_data(as_text=True)
    assert 'opsstack_remediation_runs_total{outcome="recovered",playbook="fix-svc"} 1.0' in text
    assert 'opsstack_remediation_attempts_total{action="fix",outcome="recovered",playbook="fix-svc"} 1.0' in text
    assert 'opsstack_remediation_tickets_resolved_total{closed_by="automation"} 1.0' in text
    assert "opsstack_remediation_time_to_recover_seconds_count{playbook=\"fix-svc\"} 1.0" in text
    import subprocess

    from core.procs import binary

    lint = subprocess.run([binary("promtool"), "check", "metrics"], input=text.encode(), capture_output=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    # the receiver's own /metrics carries them too (state(app).metrics_collectors)
    assert 'opsstack_remediation_runs_total{outcome="recovered",playbook="fix-svc"} 1.0' in \
        c.get("/metrics").get_data(as_text=True)
    events = [e["kind"] for e in c.get(f"/api/v1/tickets/{t['id']}").get_json()["events"]]
    assert events[0] == "opened" and "remediation" in events and events[-1] == "resolved"


def test_receiver_escalates_to_people_when_the_ladder_is_exhausted(receiver, svc, pg_db):
    c = receiver([action("restart", "/noop", verify_window="0.5s")])
    post(c, [webhook_alert()])
    [t] = c.get("/api/v1/tickets").get_json()
    assert t["level"] == 1
    wait_for(lambda: c.get(f"/api/v1/tickets/{t['id']}").get_json()["level"] == 2)
    got = c.get(f"/api/v1/tickets/{t['id']}").get_json()
    esc = [e for e in got["events"] if e["kind"] == "escalated"]
    assert esc and esc[0]["actor"] == "remediation"
    assert "restart (http request): ok, not recovered" in str(esc[0]["details"])


def test_kill_switch_api_needs_the_write_scope(receiver, svc):
    c = receiver([action("fix", "/fix")])
    anonymous = c.application.test_client()
    assert anonymous.put("/api/v1/remediation/kill-switch", json={"enabled": True}).status_code == 401
    r = c.put("/api/v1/remediation/kill-switch", json={"enabled": True},
              headers={"Authorization": "Bearer write-token-123"})
    assert r.status_code == 200 and r.get_json()["enabled"] is True and r.get_json()["updated_by"] == "api:ops-bot"
    assert c.put("/api/v1/remediation/kill-switch", json={"enabled": "yes"},
                 headers={"Authorization": "Bearer write-token-123"}).status_code == 400
    post(c, [webhook_alert()])
    [t] = c.get("/api/v1/tickets").get_json()
    runs = wait_for(lambda: [r for r in c.get(f"/api/v1/tickets/{t['id']}/remediation").get_json()["runs"]
                             if r["status"] == "skipped"])
    assert "kill switch" in runs[0]["reason"] and svc.calls == []
    assert "opsstack_remediation_kill_switch 1.0" in c.get("/metrics/automation").get_data(as_text=True)
    pbs = c.get("/api/v1/remediation/playbooks").get_json()["playbooks"]
    assert pbs[0]["name"] == "fix-svc" and pbs[0]["actions"] == [{"name": "fix", "backend": "http",
                                                                 "operation": "request"}]


def test_no_action_when_the_condition_already_cleared(pg_db, prom, svc):
    """The alert is on its way out (something else fixed it): nothing to do, nobody paged."""
    esc = Escalations()
    r = runner(make_cfg(pg_db, prom, [action("fix", "/fix")]), pg_db, svc, esc)
    svc.value = 0.0
    wait_value(prom, lambda v: v == 0.0)
    out = r.run_alert(alert())
    assert out.status == "skipped" and "already cleared" in out.reason and not out.escalated
    assert svc.calls == [] and esc == []


# ------------------------------------------------------------- incidents of several alerts


def region_alert(region, n=0):
    return Alert(labels={"alertname": "DemoHigh", "service": "svc", "severity": "warning", "region": region},
                 fingerprint=f"fp-{region}-{n}", starts_at=T0 + timedelta(minutes=n),
                 generator_url=f"http://prom/graph?g0.expr={quote(EXPR)}&g0.tab=1")


def add_episode(db, tid, a: Alert) -> None:
    with psycopg.connect(db) as c:
        c.execute("insert into ticket_alerts (ticket_id, fingerprint, starts_at, status, labels) "
                  "values (%s, %s, %s, 'firing', %s)", (tid, a.fingerprint, a.starts_at,
                                                       psycopg.types.json.Jsonb(a.labels)))


def test_an_incident_acts_for_each_alerts_own_target_once(pg_db, prom, svc):
    """A service down in three regions is one incident: the playbook acts for each region
    (deduplicated by rendered target), and for a region that joins later, once more."""
    cfg = make_cfg(pg_db, prom, [action("fix", "/fix")], dry_run=True, target="svc-{service}-{region}")
    r = runner(cfg, pg_db, svc)
    tid = ticket(pg_db, region_alert("seoul"))
    add_episode(pg_db, tid, region_alert("singapore"))
    add_episode(pg_db, tid, region_alert("seoul", 1))  # a second alert of the same target
    out = r.handle_incident(tid)
    assert sorted(o.target for o in out if o.status == "dry_run") == ["svc-svc-seoul", "svc-svc-singapore"]
    # tokyo joins the open incident: its job acts for tokyo only
    add_episode(pg_db, tid, region_alert("tokyo", 2))
    out = r.handle_incident(tid)
    assert [o.target for o in out if o.status == "dry_run"] == ["svc-svc-tokyo"]
    assert sorted(o.status for o in out) == ["dry_run", "duplicate", "duplicate"]
    runs = rows(pg_db, "select target from remediation_runs where ticket_id = %s order by target", tid)
    assert [x["target"] for x in runs] == ["svc-svc-seoul", "svc-svc-singapore", "svc-svc-tokyo"]
    assert svc.calls == []  # dry run


def test_an_incident_acts_on_at_most_max_targets(pg_db, prom, svc):
    cfg = make_cfg(pg_db, prom, [action("fix", "/fix")], dry_run=True, target="svc-{service}-{region}")
    cfg["remediation"]["max_targets_per_incident"] = 2
    r = runner(cfg, pg_db, svc)
    tid = ticket(pg_db, region_alert("seoul"))
    for i, region in enumerate(("singapore", "tokyo"), start=1):
        add_episode(pg_db, tid, region_alert(region, i))
    assert len([o for o in r.handle_incident(tid) if o.status == "dry_run"]) == 2


def test_a_failing_incident_is_escalated_once(pg_db, prom, svc):
    """Two targets of one incident both exhausted: one escalation, the other failure a comment."""
    esc = Escalations()
    cfg = make_cfg(pg_db, prom, [action("restart", "/noop", verify_window="0.5s")], target="svc-{service}-{region}",
                   cooldown="0s")
    r = runner(cfg, pg_db, svc, esc)
    tid = ticket(pg_db, region_alert("seoul"))
    add_episode(pg_db, tid, region_alert("tokyo", 1))
    out = r.handle_incident(tid)
    assert sorted(o.status for o in out) == ["exhausted", "exhausted"]
    assert len(esc) == 1 and esc[0][0] == tid
    notes = rows(pg_db, "select details from ticket_events where ticket_id = %s and kind = 'comment'", tid)
    assert len(notes) == 1 and "not escalated again" in notes[0]["details"]["text"]


def test_receiver_remediates_each_region_of_a_group_incident(receiver, svc, pg_db):
    c = receiver([action("fix", "/fix")], dry_run=True, target="svc-{service}-{region}")

    def region(r):
        a = webhook_alert()
        a["labels"]["region"] = r
        a["fingerprint"] = T.fingerprint(a["labels"])
        return a
    gk = '{}:{alertname="DemoHigh", service="svc"}'
    r = c.post("/webhook/alertmanager", json=T.payload([region("seoul"), region("singapore")], group_key=gk),
               headers=T.auth())
    assert r.status_code == 200 and len(r.get_json()["opened"]) == 1
    [t] = c.get("/api/v1/tickets").get_json()

    def targets():
        runs = c.get(f"/api/v1/tickets/{t['id']}/remediation").get_json()["runs"]
        return sorted(x["target"] for x in runs if x["status"] == "dry_run")
    wait_for(lambda: targets() == ["svc-svc-seoul", "svc-svc-singapore"], what="a run per region")
    # tokyo joins the incident: remediation acts for it too; no second "opened"
    r = c.post("/webhook/alertmanager",
               json=T.payload([region("seoul"), region("singapore"), region("tokyo")], group_key=gk), headers=T.auth())
    assert r.get_json()["attached_alerts"] == 1
    wait_for(lambda: targets() == ["svc-svc-seoul", "svc-svc-singapore", "svc-svc-tokyo"], what="tokyo's run")
    kinds = [e["kind"] for e in c.get(f"/api/v1/tickets/{t['id']}").get_json()["events"]]
    assert kinds.count("opened") == 1 and kinds.count("alert_attached") == 1
