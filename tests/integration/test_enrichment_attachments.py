"""Ticket enrichment against a real Prometheus (scraping a /metrics we control, with a rule file),
a real Alertmanager (the related alerts) and a Loki on the one fake HTTP server that checks
query_range requests."""
from __future__ import annotations

import io
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

import pytest
import requests

from tests.support import receiver as T
from tests.support.fakehttp import FakeHTTP
from tests.support.servers import Alertmanager, Prometheus
from webhook_receiver.app import close_app, create_app

pytestmark = pytest.mark.integration

EXPR = 'max by (service) (demo_value) > 5'


METRICS = (200, b'# TYPE demo_value gauge\ndemo_value{service="svc"} 9\ndemo_value{service="other"} 7\n',
           {"Content-Type": "text/plain"})


def loki(req):
    """Loki's documented query_range: nanosecond start/end, limit, direction; streams result."""
    q = req.query
    errors_only = q.get("query") == '{service="svc",level=~"error|critical"}'  # asked first
    ok = ((errors_only or q.get("query") == '{service="svc"}') and q.get("direction") == "backward"
          and q.get("limit") == "3"
          and q["start"].isdigit() and q["end"].isdigit() and int(q["end"]) > int(q["start"])
          and len(q["end"]) >= 19)
    if not ok:
        return 400, f"bad request {q}".encode(), {"Content-Type": "text/plain"}
    end = int(q["end"])
    body = {"status": "success", "data": {"resultType": "streams", "result": [
        {"stream": {"service": "svc", "level": "error"},
         "values": [[str(end - 1_000_000_000), "connection refused to db"], [str(end - 3_000_000_000), "retrying"]]},
        {"stream": {"service": "svc", "level": "info"},
         "values": [[str(end - 2_000_000_000), "healthcheck failed"], [str(end - 9_000_000_000), "old line"]]}],
        "stats": {}}}
    if errors_only:
        body["data"]["result"] = body["data"]["result"][:1]
    return 200, body


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    svc = FakeHTTP({"GET /metrics": METRICS}, default=(404, b"", {"Content-Type": "text/plain"})).start()
    lk = FakeHTTP({"GET /loki/api/v1/query_range": loki},
                  default=(404, b"404 page not found", {"Content-Type": "text/plain"})).start()
    d = tmp_path_factory.mktemp("enrich")
    rules = d / "rules.yml"
    rules.write_text("groups:\n- name: demo\n  rules:\n  - alert: DemoHigh\n    expr: " + EXPR + "\n")
    prom = Prometheus({"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                       "rule_files": [str(rules)],
                       "scrape_configs": [{"job_name": "svc", "static_configs": [
                           {"targets": [svc.address]}]}]}, workdir=d / "prom")
    am = Alertmanager({"route": {"receiver": "null"}, "receivers": [{"name": "null"}]}, workdir=d / "am")
    prom.start()
    am.start()
    now = datetime.now(timezone.utc)
    related = [{"labels": {"alertname": "ServiceLatencyHigh", "service": "svc", "severity": "warning"},
                "annotations": {"summary": "Slow."}, "startsAt": now.isoformat()},
               {"labels": {"alertname": "ServiceLatencyHigh", "service": "elsewhere", "severity": "warning"},
                "annotations": {"summary": "Slow."}, "startsAt": now.isoformat()}]
    requests.post(am.url + "/api/v2/alerts", json=related, timeout=5).raise_for_status()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r = requests.get(prom.url + "/api/v1/query", params={"query": EXPR}, timeout=5).json()
        if r["data"]["result"]:
            break
        time.sleep(0.2)
    yield {"prom": prom, "am": am, "loki": lk, "dir": d}
    prom.stop()
    am.stop()
    svc.stop()
    lk.stop()


@pytest.fixture
def client_for(pg_db, world):
    apps = []

    def make(sections=None, **enrichment):
        cfg = T.config(pg_db, enrichment={"prometheus_url": world["prom"].url,
                                          "alertmanager_url": world["am"].url, **enrichment}, **(sections or {}))
        app = create_app(cfg)
        apps.append(app)
        return T.reader(app.test_client())  # API reads need a credential
    yield make
    for a in apps:
        a.extensions["opsstack.automation"].shutdown()
        close_app(a)


def open_ticket(c, generator_url):
    a = T.alert("DemoHigh", service="svc", severity="warning",
                starts_at=datetime.now(timezone.utc) - timedelta(minutes=2))
    a["generatorURL"] = generator_url
    r = c.post("/webhook/alertmanager", json=T.payload([a]), headers=T.auth())
    assert r.status_code == 200
    return c.get("/api/v1/tickets").get_json()[0]["id"]


def attachments(c, tid, want):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        got = c.get(f"/api/v1/tickets/{tid}/attachments").get_json()["attachments"]
        if {a["name"] for a in got} >= want:
            return {a["name"]: a for a in got}
        time.sleep(0.1)
    raise AssertionError(f"attachments never arrived: {got}")


def test_ticket_gets_graph_values_related_and_loki_logs(client_for, world):
    c = client_for(logs={"source": "loki", "loki_url": world["loki"].url, "lines": 3})
    tid = open_ticket(c, f"http://prom/graph?g0.expr={quote(EXPR)}&g0.tab=1")
    got = attachments(c, tid, {"graph.png", "values.json", "related.json", "logs.txt"})
    assert "errors.json" not in got
    g = got["graph.png"]
    assert g["kind"] == "graph" and g["content_type"] == "image/png" and g["meta"]["expr_source"] == "generatorURL"
    assert g["meta"]["graph_expr"] == "max by (service) (demo_value)" and g["meta"]["threshold"] == 5
    assert g["meta"]["expr"] == EXPR and g["meta"]["end"] - g["meta"]["start"] == pytest.approx(3600)
    png = c.get(g["url"])
    assert png.status_code == 200 and png.mimetype == "image/png" and png.data[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image as mpimg

    img = mpimg.imread(io.BytesIO(png.data), format="png")
    assert img.shape[0] == 360 and img.shape[1] == 900
    vals = c.get(got["values.json"]["url"]).get_json()
    assert vals["expr"] == EXPR
    assert vals["values"][0] == {"labels": {"service": "svc"}, "value": 9.0, "this_alert": True}
    assert {"labels": {"service": "other"}, "value": 7.0, "this_alert": False} in vals["values"]
    rel = c.get(got["related.json"]["url"]).get_json()
    assert [a["labels"]["alertname"] for a in rel["alerts"]] == ["ServiceLatencyHigh"]
    assert rel["alerts"][0]["labels"]["service"] == "svc"
    logs = c.get(got["logs.txt"]["url"]).get_data(as_text=True).splitlines()
    assert len(logs) == 3 and logs[-1].endswith("connection refused to db") and "old line" not in "".join(logs)
    assert "level=error" in logs[-1]
    queries = [r.query["query"] for r in world["loki"].requests if r.path.endswith("query_range")]
    assert queries[-2:] == ['{service="svc",level=~"error|critical"}', '{service="svc"}']  # errors first
    meta = got["logs.txt"]["meta"]
    assert meta["explore_url"].startswith("http://127.0.0.1:3000/explore?") and "%22uid%22%3A%22loki%22" in meta[
        "explore_url"]
    # the alert's window: since (15m) before it started (2 min ago) up to now
    assert meta["end"] - meta["start"] == pytest.approx(17 * 60, abs=30)
    assert c.get(f"/api/v1/tickets/{tid}/attachments/nope").status_code == 404
    assert c.get("/api/v1/tickets/999999/attachments").status_code == 404


def test_expression_from_the_rule_and_a_file_tail(client_for, world, tmp_path):
    log = tmp_path / "svc.log"
    log.write_text("".join(f"line {i}\n" for i in range(200)))
    c = client_for(logs={"source": "file", "file": str(tmp_path / "{service}.log"), "lines": 5})
    tid = open_ticket(c, "http://prom/graph")  # no g0.expr: the rule named DemoHigh gives it
    got = attachments(c, tid, {"graph.png", "values.json", "logs.txt"})
    assert got["graph.png"]["meta"]["expr_source"] == "rule" and got["graph.png"]["meta"]["expr"] == EXPR
    assert c.get(got["logs.txt"]["url"]).get_data(as_text=True) == "\n".join(f"line {i}" for i in range(195, 200))


def test_a_failing_source_is_recorded_and_the_rest_attached(client_for, world, tmp_path):
    c = client_for(logs={"source": "file", "file": str(tmp_path / "missing-{service}.log")},
                   alertmanager_url="http://127.0.0.1:9/")
    tid = open_ticket(c, f"http://prom/graph?g0.expr={quote(EXPR)}")
    got = attachments(c, tid, {"graph.png", "values.json", "related.json", "errors.json"})
    errors = c.get(got["errors.json"]["url"]).get_json()
    assert list(errors) == ["logs.txt"] and "does not exist" in errors["logs.txt"]
    # Alertmanager down: related alerts came from Prometheus instead (the rule's own alert is this ticket)
    rel = c.get(got["related.json"]["url"]).get_json()
    assert rel["service"] == "svc" and all(a["labels"].get("service") == "svc" for a in rel["alerts"])


def test_loki_down_says_logs_unavailable_and_the_rest_is_attached(client_for, world):
    """The default source (auto) on a stack whose Loki runs (logs.loki resolved to on) but does
    not answer: the ticket says so, every other part is attached."""
    with FakeHTTP({}) as gone:
        port = gone.port  # closed again: nothing listens there
    c = client_for(sections={"logs": {"loki": "on"}, "stack": {"ports": {"loki": port}}})
    tid = open_ticket(c, f"http://prom/graph?g0.expr={quote(EXPR)}")
    got = attachments(c, tid, {"graph.png", "values.json", "related.json", "logs.txt", "errors.json"})
    text = c.get(got["logs.txt"]["url"]).get_data(as_text=True)
    assert text.startswith("logs unavailable: loki unreachable") and got["logs.txt"]["meta"]["unavailable"]
    assert list(c.get(got["errors.json"]["url"]).get_json()) == ["logs.txt"]


def test_auto_source_without_a_stack_loki_attaches_no_logs(pg_db):
    from webhook_receiver.enrichment import log_excerpt, loki_url_of

    off = T.config(pg_db, logs={"loki": "off"}, stack={"ports": {"loki": 3100}})
    assert loki_url_of(off) is None and log_excerpt(off, {"service": "svc"}, time.time(), 1) is None
    on = T.config(pg_db, logs={"loki": "on"}, stack={"ports": {"loki": 3100}})
    assert loki_url_of(on) == "http://127.0.0.1:3100"
    mine = T.config(pg_db, enrichment={"logs": {"source": "loki", "loki_url": "http://127.0.0.1:9/"}})
    assert loki_url_of(mine) == "http://127.0.0.1:9/"
