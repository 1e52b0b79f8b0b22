"""The `scale` action through the remediation runner: on the demo service's own replica knob
(a real `opsstack demo serve` process, POST /admin/replicas) and through the kubernetes backend
against a local API server that checks the request shapes (GET then merge-PATCH of
deployments/<name>/scale), with dry-run, cooldown, the target lock and the audit rows. A real
Prometheus scrapes the demo service (job platform) and the fake API server's
kube-state-metrics-like /metrics, so every action is verified on what it changed.
"""
from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from core.config import load_data
from tests.support.demo import REGIONS, DemoProcess
from tests.support.fakehttp import FakeHTTP
from tests.support.servers import Prometheus
from tests.support.wait import wait_for
from webhook_receiver.remediation import Alert, Runner, store
from webhook_receiver.remediation.verify import Prometheus as PromClient

pytestmark = pytest.mark.integration

SERVICE = "user-app"
T0 = datetime(2026, 11, 29, 14, 0, tzinfo=timezone.utc)


class FakeKube:
    """apps/v1 deployments/<name>/scale of namespace shop, as the API server answers it; every
    request shape it does not expect is a problem the test fails on."""

    def __init__(self):
        self.replicas = {SERVICE: 2}
        self.problems: list[str] = []
        self.release = threading.Event()
        self.hold = False

    def scale(self, req):
        if req.headers.get("Authorization") != "Bearer kube-token":
            return 401, {"kind": "Status", "status": "Failure", "message": "Unauthorized", "code": 401}
        name = req.path.split("/")[-2]
        if name not in self.replicas:
            return 404, {"kind": "Status", "status": "Failure", "code": 404,
                         "message": f'deployments.apps "{name}" not found'}
        if req.method == "PATCH":
            body = req.json
            if req.headers.get("Content-Type") != "application/merge-patch+json":
                self.problems.append(f"scale PATCH content type {req.headers.get('Content-Type')}")
            if set(body) != {"spec"} or set(body["spec"]) != {"replicas"} or not isinstance(body["spec"]["replicas"], int):
                self.problems.append(f"scale PATCH body {body}")
            if self.hold:
                self.release.wait(5)
            self.replicas[name] = body["spec"]["replicas"]
        elif req.method != "GET":
            self.problems.append(f"unexpected {req.method} {req.path}")
        return 200, {"kind": "Scale", "apiVersion": "autoscaling/v1",
                     "metadata": {"name": name, "namespace": "shop"},
                     "spec": {"replicas": self.replicas[name]}, "status": {"replicas": self.replicas[name]}}

    def metrics(self, req):
        lines = ["# TYPE kube_deployment_spec_replicas gauge"]
        lines += [f'kube_deployment_spec_replicas{{namespace="shop",deployment="{n}"}} {v}'
                  for n, v in self.replicas.items()]
        return 200, "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    d = DemoProcess(tmp_path_factory.mktemp("demo"), service=SERVICE, load=False,
                    replicas={"initial": 2, "min": 1, "max": 6})
    d.start()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def kube():
    api = FakeKube()
    with FakeHTTP({"GET /apis/apps/v1/namespaces/shop/deployments/*/scale": api.scale,
                   "PATCH /apis/apps/v1/namespaces/shop/deployments/*/scale": api.scale,
                   "GET /metrics": api.metrics}) as srv:
        api.http = srv
        yield api
        api.release.set()


class Forecaster:
    """Stands in for the forecaster's /metrics: the recommendation gauge, value set by the test."""

    def __init__(self):
        self.recommended: dict[str, int] = {}
        self.http = FakeHTTP({"GET /metrics": self.metrics})

    def metrics(self, req):
        lines = ["# TYPE opsstack_scaling_recommended_replicas gauge"]
        lines += [f'opsstack_scaling_recommended_replicas{{service="{SERVICE}",region="{r}"}} {n}'
                  for r, n in self.recommended.items()]
        return 200, "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def forecaster():
    f = Forecaster()
    with f.http:
        yield f


@pytest.fixture(scope="module")
def prom(demo, kube, forecaster, tmp_path_factory):
    p = Prometheus({"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "scrape_configs": [
                        {"job_name": "platform", "static_configs": [
                            {"targets": [f"127.0.0.1:{demo.ports['admin']}"], "labels": {"service": SERVICE}}]},
                        {"job_name": "kube", "static_configs": [{"targets": [kube.http.url.split("//")[1]]}]},
                        {"job_name": "opsstack_forecaster",
                         "static_configs": [{"targets": [forecaster.http.url.split("//")[1]]}]}]},
                   workdir=tmp_path_factory.mktemp("prom"))
    p.start()
    yield p
    p.stop()


def replicas_seen(prom, region="seoul") -> float | None:
    res = PromClient(prom.url).query(f'opsstack_demo_replicas{{job="platform",region="{region}"}}')["result"]
    return float(res[0]["value"][1]) if res else None


@pytest.fixture
def knob(demo, kube, prom):
    """Both knobs back at 2 replicas, and Prometheus has seen it."""
    assert demo.admin("POST", "/admin/replicas", {"replicas": 2})[0] == 200
    kube.replicas[SERVICE] = 2
    kube.problems.clear()
    kube.http.clear()
    kube.hold = False
    kube.release.clear()
    wait_for(lambda: replicas_seen(prom) == 2.0, timeout=30, what="Prometheus sees 2 replicas")
    q = PromClient(prom.url)
    wait_for(lambda: q.query(f'kube_deployment_spec_replicas{{deployment="{SERVICE}"}} == 2')["result"],
             timeout=30, what="Prometheus sees the deployment at 2")
    return demo


DEMO_PLAYBOOK = {
    "name": "scale-out", "match": {"alertname": "ScalingCpuHigh"}, "target": "scale-{service}-{region}",
    "cooldown": "10m",
    "actions": [{"name": "add-replica", "backend": "http",
                 "params": {"url": "{admin_url}/admin/replicas", "json": {"change": 1, "region": "{region}"}},
                 # verified on what it changed: the region runs more than 2 replicas
                 "verify": {"query": 'max by (service, region) (opsstack_demo_replicas{{job="platform",'
                                     'service="{service}",region="{region}"}}) <= 2', "window": "30s"}}],
}
KUBE_PLAYBOOK = {
    "name": "scale-out-k8s", "match": {"alertname": "ScalingCpuHighK8s"}, "target": "deploy-{service}",
    "cooldown": "10m",
    "actions": [{"name": "add-replica", "backend": "kubernetes", "operation": "scale",
                 "params": {"name": "{service}", "replicas": "+1", "min": 1, "max": 6},
                 # kube-state-metrics names the deployment: relabelled to the alert's service label
                 "verify": {"query": 'max by (service) (label_replace(kube_deployment_spec_replicas{{'
                                     'deployment="{service}"}}, "service", "$1", "deployment", "(.+)")) <= 2',
                            "window": "30s"}}],
}


def make_cfg(db, prom, demo, kube, **remediation):
    return load_data({
        "database": {"url": db},
        "platform": {"regions": REGIONS, "services": [{"name": SERVICE}]},
        "demo": {"ports": {SERVICE: demo.ports}},
        "remediation": {"prometheus_url": prom.url, "verify_interval": "0.2s", "verify_consecutive": 1,
                        "demo_playbooks": False, "playbooks": [DEMO_PLAYBOOK, KUBE_PLAYBOOK],
                        "backends": {"kubernetes": {"url": kube.http.url, "token": "kube-token",
                                                    "namespace": "shop"}}, **remediation}})


class Escalations(list):
    def __call__(self, ticket_id, reason):
        self.append((ticket_id, reason))
        return True


def alert(name="ScalingCpuHigh", n=0, fp="fp-1", region="seoul"):
    return Alert(labels={"alertname": name, "service": SERVICE, "region": region, "severity": "warning"},
                 fingerprint=fp, starts_at=T0 + timedelta(minutes=n), status="firing",
                 generator_url="http://prom/graph?g0.expr=up&g0.tab=1")


def rows(db, sql, *args):
    with psycopg.connect(db, row_factory=psycopg.rows.dict_row) as c:
        return c.execute(sql, args).fetchall()


def seoul_replicas(demo) -> int:
    return demo.admin("GET", "/admin/replicas")[1]["seoul"]["replicas"]


def test_dry_run_records_the_scale_and_changes_nothing(pg_db, prom, kube, knob):
    store.migrate_url(pg_db)
    r = Runner(make_cfg(pg_db, prom, knob, kube, dry_run=True), pg_db, escalate=Escalations())
    assert r.run_alert(alert()).status == "dry_run"
    assert r.run_alert(alert("ScalingCpuHighK8s", fp="fp-k")).status == "dry_run"
    assert seoul_replicas(knob) == 2 and kube.replicas[SERVICE] == 2 and kube.http.find("PATCH") == []
    atts = rows(pg_db, "select u.playbook, r.status, r.dry_run, r.command from remediation_attempts r "
                       "join remediation_runs u on u.id = r.run_id order by r.id")
    assert [(a["playbook"], a["status"], a["dry_run"]) for a in atts] == [
        ("scale-out", "dry_run", True), ("scale-out-k8s", "dry_run", True)]
    assert atts[0]["command"]["url"] == [f"{knob.url('admin')}/admin/replicas"]
    assert atts[0]["command"]["json"] == {"change": 1, "region": "seoul"}
    assert atts[1]["command"] == {"backend": "kubernetes", "operation": "scale", "namespace": "shop",
                                  "name": SERVICE, "replicas": "+1"}


def test_scale_out_on_the_demo_knob_verified_then_cooldown(pg_db, prom, kube, knob):
    store.migrate_url(pg_db)
    esc = Escalations()
    r = Runner(make_cfg(pg_db, prom, knob, kube), pg_db, escalate=esc)
    out = r.run_alert(alert())
    assert out.status == "recovered", out
    # the knob really moved: 3 replicas x 2 workers in seoul, the other regions untouched
    state = knob.admin("GET", "/admin/replicas")[1]
    assert state["seoul"]["replicas"] == 3 and state["tokyo"]["replicas"] == 2
    assert 'opsstack_demo_replica_cpu_cores{region="seoul"} 6.0' in knob.metrics()
    [att] = rows(pg_db, "select action, backend, status, verified, output from remediation_attempts")
    assert (att["action"], att["backend"], att["status"], att["verified"]) == ("add-replica", "http", "ok", True)
    assert '"after": 3' in att["output"] and '"before": 2' in att["output"]
    # a second alert episode inside the cooldown: no action, handed to people
    out2 = r.run_alert(alert(n=5, fp="fp-2"))
    assert out2.status == "skipped" and "cooldown" in out2.reason
    assert seoul_replicas(knob) == 3


def test_scale_out_through_kubernetes_checks_the_api_shapes(pg_db, prom, kube, knob):
    store.migrate_url(pg_db)
    r = Runner(make_cfg(pg_db, prom, knob, kube), pg_db, escalate=Escalations())
    out = r.run_alert(alert("ScalingCpuHighK8s"))
    assert out.status == "recovered", out
    assert kube.replicas[SERVICE] == 3 and kube.problems == []
    calls = [(q.method, q.path) for q in kube.http.find("*", "/apis/*")]
    path = f"/apis/apps/v1/namespaces/shop/deployments/{SERVICE}/scale"
    assert calls == [("GET", path), ("PATCH", path)]
    assert kube.http.find("PATCH")[0].json == {"spec": {"replicas": 3}}
    [att] = rows(pg_db, "select backend, status, verified, output from remediation_attempts")
    assert (att["backend"], att["status"], att["verified"]) == ("kubernetes", "ok", True)
    assert "to 3 from 2" in att["output"]


def test_the_target_lock_lets_one_of_two_episodes_scale(pg_db, prom, kube, knob):
    store.migrate_url(pg_db)
    cfg = make_cfg(pg_db, prom, knob, kube, cooldown="0s")
    a = Runner(cfg, pg_db, escalate=Escalations())
    b = Runner(cfg, pg_db, escalate=Escalations(), replica="replica-b")
    kube.hold = True           # the first PATCH waits: its run holds the target's lock meanwhile
    outs = []
    gate = threading.Barrier(2)

    def go(r, fp):
        gate.wait()
        outs.append(r.run_alert(alert("ScalingCpuHighK8s", fp=fp)))

    ts = [threading.Thread(target=go, args=x) for x in ((a, "fp-a"), (b, "fp-b"))]
    [t.start() for t in ts]
    wait_for(lambda: kube.http.find("PATCH") or len(outs) == 2, timeout=60, what="a PATCH or both done")
    wait_for(lambda: len(outs) == 1 or len(outs) == 2, timeout=60, what="the other run stands aside")
    kube.release.set()
    [t.join(60) for t in ts]
    assert sorted(o.status for o in outs) == ["recovered", "skipped"], outs
    assert "another run is acting" in next(o.reason for o in outs if o.status == "skipped")
    assert len(kube.http.find("PATCH")) == 1 and kube.replicas[SERVICE] == 3


def test_the_knob_is_clamped_and_checks_its_input(knob):
    assert knob.admin("POST", "/admin/replicas", {"replicas": 50, "region": "tokyo"})[1] == {
        "replicas": {"tokyo": {"before": 2, "after": 6}}}          # demo.replicas.max
    assert knob.admin("POST", "/admin/replicas", {"change": -10})[1]["replicas"]["seoul"]["after"] == 1
    for bad in ({}, {"replicas": 2, "change": 1}, {"replicas": "many"}, {"replicas": True},
                {"replicas": 2, "region": "mars"}):
        status, body = knob.admin("POST", "/admin/replicas", bad)
        assert status == 400, (bad, body)


def test_kubernetes_relative_scale_stays_within_its_bounds(kube):
    from webhook_receiver.remediation.backends import BackendError, make

    kube.replicas[SERVICE] = 5
    kube.http.clear()
    be = make("kubernetes", load_data({"remediation": {"backends": {"kubernetes": {
        "url": kube.http.url, "token": "kube-token", "namespace": "shop"}}}}))
    res = be.run("scale", {"name": SERVICE, "replicas": "+1", "max": 5}, timeout=10)
    assert res.ok and "stays at 5" in res.output and kube.http.find("PATCH") == []   # at max: no PATCH
    assert be.run("scale", {"name": SERVICE, "replicas": "-10", "min": 2}, timeout=10).detail == {
        "replicas": 2, "before": 5}
    assert be.run("scale", {"name": SERVICE, "replicas": 9, "max": 6}, timeout=10).detail["replicas"] == 6
    assert [q.json for q in kube.http.find("PATCH")] == [{"spec": {"replicas": 2}}, {"spec": {"replicas": 6}}]
    assert len(kube.http.find("GET", "/apis/*")) == 2 and kube.problems == []      # absolute: no GET
    for bad in ("many", True, -1, "+x"):
        with pytest.raises(BackendError, match="replicas must be"):
            be.run("scale", {"name": SERVICE, "replicas": bad}, timeout=10)
    with pytest.raises(BackendError, match="404"):
        be.run("scale", {"name": "other", "replicas": "+1"}, timeout=10)
    kube.replicas[SERVICE] = 2


# ---------------------------------------------------------------- the shipped demo playbooks
def shipped(db, prom, demo, kube, window=15.0):
    """The scaling playbooks of webhook_receiver/remediation/playbooks/demo.yaml as `opsstack up`
    loads them, with their verify windows cut to ``window`` seconds (the queries stay as shipped)."""
    import dataclasses

    from webhook_receiver.remediation import model

    cfg = make_cfg(db, prom, demo, kube, demo_playbooks=True, playbooks=[])
    out = []
    for pb in model.load_playbooks(cfg):
        if pb.name.startswith("scale-"):
            acts = tuple(dataclasses.replace(a, verify_window=window,
                                             verify=dataclasses.replace(a.verify, window=window)) for a in pb.actions)
            out.append(dataclasses.replace(pb, actions=acts))
    assert {p.name for p in out} == {"scale-out", "scale-in", "scale-ahead"}
    return cfg, out


def test_shipped_scale_ahead_adds_replicas_until_the_forecast_is_met(pg_db, prom, kube, forecaster, knob):
    store.migrate_url(pg_db)
    forecaster.recommended = {"seoul": 4, "tokyo": 1}
    q = PromClient(prom.url)
    wait_for(lambda: q.query('opsstack_scaling_recommended_replicas{region="seoul"} == 4')["result"], timeout=30,
             what="Prometheus sees the recommendation")
    cfg, pbs = shipped(pg_db, prom, knob, kube)
    r = Runner(cfg, pg_db, playbooks=pbs, escalate=Escalations())
    out = r.run_alert(alert("ScalingBelowForecast"))
    assert out.status == "recovered", out
    assert seoul_replicas(knob) == 4          # 2 -> 3 (still short) -> 4 (verified), the third step not needed
    atts = rows(pg_db, "select action, verified from remediation_attempts order by step")
    assert [(a["action"], a["verified"]) for a in atts] == [("add-replica", False), ("add-second-replica", True)]
    forecaster.recommended = {}


def test_shipped_scale_in_removes_idle_replicas_down_to_the_minimum(pg_db, prom, kube, knob):
    store.migrate_url(pg_db)
    # no load: the replicas idle; the knob's minimum is 1 in this demo, start at 3
    assert knob.admin("POST", "/admin/replicas", {"replicas": 3, "region": "seoul"})[0] == 200
    wait_for(lambda: replicas_seen(prom) == 3.0, timeout=30, what="Prometheus sees 3 replicas")
    cfg, pbs = shipped(pg_db, prom, knob, kube)
    r = Runner(cfg, pg_db, playbooks=pbs, escalate=Escalations())
    out = r.run_alert(alert("ScalingTrafficFalling"))
    assert out.status == "recovered", out
    assert seoul_replicas(knob) == 1          # idle all along: one at a time down to the minimum
    atts = rows(pg_db, "select action, verified from remediation_attempts order by step")
    assert [(a["action"], a["verified"]) for a in atts] == [("remove-replica", False),
                                                            ("remove-second-replica", True)]
