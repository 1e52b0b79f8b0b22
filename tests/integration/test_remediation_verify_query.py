"""A playbook's own verify query (issue 14): verified on the condition the action changed.

A real Prometheus scrapes a /metrics we control (tests/support/fakehttp.py): `demo_errors` of
service "svc". The alert's own expression looks back 10 minutes
(`max by (service) (max_over_time(demo_errors[10m])) > 5`), like CacheHitRatioLow's 5m rate:
after a fix it keeps failing long after the service is healthy. A verify query over a short
window sees the recovery; the alert's expression does not.
"""
from __future__ import annotations

from datetime import datetime, timezone
from urllib.parse import quote

import pytest

from core.config import ConfigError, load_data
from core.prom import Prometheus as PromClient
from tests.support.fakehttp import FakeHTTP
from tests.support.servers import Prometheus
from tests.support.wait import wait_for
from webhook_receiver.remediation import Alert, Runner, store

pytestmark = pytest.mark.integration

SLOW_EXPR = "max by (service) (max_over_time(demo_errors[10m])) > 5"
PLATFORM = {"services": [{"name": "svc"}]}


class Service:
    def __init__(self):
        self.errors = 10.0
        self.http = FakeHTTP({"GET /metrics": self.metrics, "POST /fix": self.fix, "POST *": (200, "ok")})

    def metrics(self, req):
        return 200, f'# TYPE demo_errors gauge\ndemo_errors{{service="svc"}} {self.errors}\n'

    def fix(self, req):
        self.errors = 0.0
        return 200, "ok"

    @property
    def calls(self) -> list[str]:
        return [r.path for r in self.http.find("POST")]


@pytest.fixture(scope="module")
def service():
    s = Service()
    with s.http:
        yield s


@pytest.fixture(scope="module")
def prom(service, tmp_path_factory):
    host = service.http.url.split("//")[1]
    p = Prometheus({"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "scrape_configs": [{"job_name": "svc", "static_configs": [{"targets": [host]}]}]},
                   workdir=tmp_path_factory.mktemp("prom-verify"))
    p.start()
    yield p
    p.stop()


def value(prom, expr: str) -> list:
    return PromClient(prom.url).query(expr)["result"]


@pytest.fixture
def svc(service, prom):
    """Broken again (errors 10, seen by Prometheus) before each test."""
    service.errors = 10.0
    service.http.clear()
    wait_for(lambda: any(float(s["value"][1]) == 10.0 for s in value(prom, 'demo_errors{service="svc"}')),
             timeout=30, what="Prometheus sees the broken service")
    return service


class Escalations(list):
    def __call__(self, ticket_id, reason):
        self.append((ticket_id, reason))
        return True


def make_runner(db, prom, svc, actions, **pb):
    cfg = load_data({
        "database": {"url": db}, "platform": PLATFORM,
        "remediation": {"prometheus_url": prom.url, "verify_interval": "0.2s", "verify_consecutive": 2,
                        "verify_window": "3s", "cooldown": "0s",
                        "playbooks": [{"name": "fix-svc", "match": {"alertname": "DemoErrors"},
                                       "target": "svc-{service}", "actions": actions, **pb}]}})
    store.migrate_url(db)
    return Runner(cfg, db, escalate=Escalations())


def fix_action(svc, **kw):
    return {"name": "fix", "backend": "http", "params": {"url": svc.http.url + "/fix"}, **kw}


def alert(service="svc", n=0):
    return Alert(labels={"alertname": "DemoErrors", "service": service, "severity": "warning"},
                 fingerprint=f"fp-{n}", starts_at=datetime(2026, 11, 29, 9, n, tzinfo=timezone.utc),
                 generator_url=f"http://prom/graph?g0.expr={quote(SLOW_EXPR)}&g0.tab=1")


def attempts(db):
    with store.connect(db, autocommit=True) as c:
        return c.execute("select action, status, verified, verify_expr, verify_detail from remediation_attempts "
                         "order by id").fetchall()


def test_the_alerts_own_slow_expression_reports_a_fix_that_worked_as_exhausted(pg_db, prom, svc):
    """The bug: verified on the alert's 10m window, a fix that worked is 'exhausted'."""
    r = make_runner(pg_db, prom, svc, [fix_action(svc)])
    out = r.run_alert(alert())
    assert out.status == "exhausted", out
    assert svc.calls == ["/fix"] and svc.errors == 0.0
    [a] = attempts(pg_db)
    assert a["verify_expr"] == SLOW_EXPR and a["verified"] is False and "still match" in a["verify_detail"]


def test_an_action_verify_query_recovers_while_the_alert_expression_still_fails(pg_db, prom, svc):
    r = make_runner(pg_db, prom, svc, [fix_action(svc, verify={
        "query": 'max by (service) (max_over_time(demo_errors{{service="{service}"}}[2s])) > 5', "window": "30s"})])
    out = r.run_alert(alert())
    assert out.status == "recovered", out
    [a] = attempts(pg_db)
    assert a["verified"] is True and "cleared in Prometheus" in a["verify_detail"]
    # the rendered query, labels filled in
    assert a["verify_expr"] == 'max by (service) (max_over_time(demo_errors{service="svc"}[2s])) > 5'
    # and the alert's own expression is still failing at the moment it counted as recovered
    assert value(prom, SLOW_EXPR), "the alert's own expression should still return the service"


def test_a_playbook_success_query_with_recovered_when_present(pg_db, prom, svc):
    r = make_runner(pg_db, prom, svc, [fix_action(svc)], verify={
        "query": 'max by (service) (max_over_time(demo_errors{{service="{service}"}}[2s])) == 0',
        "recovered_when": "present", "window": "30s"})
    # before the fix the success query holds no series: the pre-check does not skip the run
    out = r.run_alert(alert(n=1))
    assert out.status == "recovered", out
    [a] = attempts(pg_db)
    assert a["verified"] is True and "show recovery" in a["verify_detail"]
    assert value(prom, SLOW_EXPR)


def test_a_success_query_that_never_holds_is_not_recovered(pg_db, prom, svc):
    """recovered_when: present is not 'no data = fine': a query for another service never recovers."""
    r = make_runner(pg_db, prom, svc, [fix_action(svc)], verify={
        "query": 'demo_errors{{service="{service}"}} == 0 and on () vector(0) > 1',
        "recovered_when": "present", "window": "2s"})
    out = r.run_alert(alert(n=2))
    assert out.status == "exhausted", out
    [a] = attempts(pg_db)  # it waited the verify block's window (2s), not remediation.verify_window (3s)
    assert a["verified"] is False and "not cleared within 2s" in a["verify_detail"]


def test_labels_used_only_by_the_verify_query_are_checked(pg_db, prom, svc):
    """A label that reaches only the verify query is attacker-controlled text too: refused."""
    r = make_runner(pg_db, prom, svc, [fix_action(svc, verify={
        "query": 'demo_errors{{service="{service}",shard="{shard}"}} > 5'})])
    a = alert()
    a.labels["shard"] = 'x"} or vector(1) #'
    out = r.run_alert(a)
    assert out.status == "refused" and "shard" in out.reason and svc.calls == []


# ------------------------------------------------------------------ the playbook schema

def playbook_cfg(**pb):
    return {"platform": PLATFORM, "remediation": {"playbooks": [
        {"name": "p", "match": {"alertname": "A"}, "actions": [{"name": "a", "backend": "http",
                                                                "params": {"url": "http://127.0.0.1:1/x"}}], **pb}]}}


@pytest.mark.parametrize("verify, key, problem", [
    ({"window": "1m"}, "verify.query", "is required"),
    ({"query": "up", "windw": "1m"}, "verify.windw", "unknown key"),
    ({"query": "up", "window": "soon"}, "verify.window", "expected a duration"),
    ({"query": "up", "recovered_when": "sometimes"}, "verify.recovered_when", "must be one of absent, present"),
    ({"query": "sum(rate(x{{a=\"{a}\"}}[1m])"}, "verify.query", "unclosed '('"),
    ({"query": "x{{a=\"{a}\"}}}"}, "verify.query", "unbalanced '}'"),
    (["up"], "verify", "expected a PromQL string or a mapping"),
])
def test_bad_verify_blocks_are_config_errors(verify, key, problem):
    with pytest.raises(ConfigError) as e:
        load_data(playbook_cfg(verify=verify))
    assert e.value.key == f"remediation.playbooks[0].{key}" and problem in e.value.problem, e.value
    # the same block on an action
    cfg = playbook_cfg()
    cfg["remediation"]["playbooks"][0]["actions"][0]["verify"] = verify
    with pytest.raises(ConfigError) as e:
        load_data(cfg)
    assert e.value.key == f"remediation.playbooks[0].actions[0].{key}" and problem in e.value.problem, e.value


def test_a_verify_block_in_a_playbook_file_names_the_file(tmp_path):
    from core.schema.remediation import parse_file

    f = tmp_path / "pb.yaml"
    f.write_text("- name: p\n  match: {alertname: A}\n  actions:\n    - name: a\n      backend: http\n"
                 "      params: {url: 'http://127.0.0.1:1/x'}\n      verify: {query: up, window: -1}\n")
    with pytest.raises(ConfigError) as e:
        parse_file(f)
    assert e.value.source == str(f) and e.value.key == "playbooks[0].actions[0].verify.window"


def test_a_string_verify_is_a_block_and_windows_take_precedence_in_order():
    from webhook_receiver.remediation.model import Verify, load_playbooks

    cfg = load_data(playbook_cfg(verify={"query": "pb_q", "window": "40s"}, actions=[
        {"name": "own-block", "backend": "http", "params": {"url": "http://127.0.0.1:1/x"},
         "verify": {"query": "a_q", "window": "10s"}, "verify_window": "20s"},
        {"name": "own-window", "backend": "http", "params": {"url": "http://127.0.0.1:1/x"},
         "verify": "s_q", "verify_window": "20s"},
        {"name": "playbook-block", "backend": "http", "params": {"url": "http://127.0.0.1:1/x"}}]))
    [pb] = load_playbooks(cfg)
    a, b, c = pb.actions
    assert (a.verify, a.verify_window) == (Verify("a_q", "absent", 10.0), 10.0)
    assert (b.verify, b.verify_window) == (Verify("s_q", "absent", None), 20.0)
    assert (c.verify, c.verify_window) == (Verify("pb_q", "absent", 40.0), 40.0)


def test_the_demo_cache_playbook_verifies_on_a_short_window_of_the_cache_counters(prom):
    from core.schema.remediation import parse_file
    from webhook_receiver.remediation.model import DEMO_FILE
    from webhook_receiver.remediation.template import render

    [pb] = [p for p in parse_file(DEMO_FILE) if p["name"] == "cache-miss-storm"]
    q = pb["verify"]["query"]
    assert "opsstack_cache_requests_total" in q and "[1m]" in q and "[5m]" not in q
    assert pb["verify"]["window"] == 120.0 and pb["verify"]["recovered_when"] == "absent"
    # rendered as the runner does, it is PromQL Prometheus accepts (an instant vector)
    data = PromClient(prom.url).query(render(q, {"service": "user-app", "region": "eu-west"}))
    assert data["resultType"] == "vector"


# ------------------------------------------------------------------ who closed it (KPIs)

def kpi_samples(text: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_tickets_closed_after_a_playbook_acted_count_as_automation(pg_db, prom, svc):
    """Real runs through the receiver: the first playbook run acts but is verified on the alert's slow
    expression (so it ends 'exhausted' and is escalated); the alert then resolves with nobody having
    touched the ticket -> closed by automation (it used to count as people). In the second incident a
    person comments before the alert resolves -> people."""
    from tests.support import receiver as T
    from webhook_receiver.app import close_app, create_app

    cfg = T.config(pg_db, platform=PLATFORM, enrichment={"enabled": False}, remediation={
        "prometheus_url": prom.url, "verify_interval": "0.2s", "verify_consecutive": 1, "verify_window": "1s",
        "cooldown": "0s", "playbooks": [{"name": "fix-svc", "match": {"alertname": "DemoErrors"},
                                         "target": "svc-{service}-{instance}", "actions": [fix_action(svc)]}]},
        receiver={"api": {"tokens": [{"name": "ops-bot", "token": "write-token-123", "scopes": ["read", "write"]}]}})
    app = create_app(cfg)
    try:
        c = T.reader(app.test_client())

        def incident(instance: str) -> tuple[dict, int]:
            a = T.alert("DemoErrors", service="svc", severity="warning", instance=instance)
            a["generatorURL"] = f"http://prom/graph?g0.expr={quote(SLOW_EXPR)}&g0.tab=1"
            r = c.post("/webhook/alertmanager", json=T.payload([a], group_key=f'{{}}:{{instance="{instance}"}}'),
                       headers=T.auth())
            assert r.status_code == 200, r.get_json()
            [t] = [t for t in c.get("/api/v1/tickets?status=open&status=acknowledged").get_json()
                   if t["labels"].get("instance") == instance]
            wait_for(lambda: [x for x in c.get(f"/api/v1/tickets/{t['id']}/remediation").get_json()["runs"]
                              if x["status"] not in ("pending", "running")], timeout=60, what="the run finishes")
            return a, t["id"]

        def resolve(a: dict, instance: str) -> None:
            r = c.post("/webhook/alertmanager", json=T.payload([T.resolved(a)], group_key=f'{{}}:{{instance="{instance}"}}'),
                       headers=T.auth())
            assert r.status_code == 200

        a1, t1 = incident("i1")
        [run] = c.get(f"/api/v1/tickets/{t1}/remediation").get_json()["runs"]
        assert run["status"] == "exhausted" and svc.calls == ["/fix"]  # it acted; the slow expression disagreed
        resolve(a1, "i1")

        svc.errors = 10.0
        a2, t2 = incident("i2")
        r = c.post(f"/api/v1/tickets/{t2}/comment", json={"text": "looking"}, headers=T.auth("write-token-123"))
        assert r.status_code == 200, r.get_json()
        resolve(a2, "i2")

        statuses = {t["id"]: t["status"] for t in c.get("/api/v1/tickets?status=resolved").get_json()}
        assert statuses == {t1: "resolved", t2: "resolved"}
        m = kpi_samples(c.get("/metrics/automation").get_data(as_text=True))
        assert m[("opsstack_remediation_tickets_resolved_total", (("closed_by", "automation"),))] == 1
        assert m[("opsstack_remediation_tickets_resolved_total", (("closed_by", "people"),))] == 1
        k = kpi_samples(c.get("/metrics").get_data(as_text=True))
        assert k[("opsstack_kpi_auto_recovery_ratio", ())] == 0.5
    finally:
        close_app(app)
