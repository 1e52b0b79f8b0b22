"""The console's ticket page shows what automation did: the enrichment attachments (graph inline,
current values, related alerts, log excerpt) and the remediation runs with their attempts.

Real PostgreSQL; the attachments go in through the enrichment store API, the remediation run is a
real one (a playbook with the command backend, run by the receiver's automation on ticket open)."""
from __future__ import annotations

import json
import re
import time
from datetime import datetime, timedelta, timezone

import pytest

from tests.support import receiver as T
from webhook_receiver import enrichment
from webhook_receiver.app import close_app, create_app
from webhook_receiver.auth import hash_password
from webhook_receiver.remediation import store

pytestmark = pytest.mark.integration

PLAYBOOK = {"name": "restart-service", "match": {"alertname": "ServiceDown"}, "target": "demo-{service}",
            "actions": [{"name": "restart", "backend": "command",
                         "params": {"argv": ["echo", "restarted demo-{service}"]}, "verify_window": "0s"}]}


@pytest.fixture
def app(pg_db):
    cfg = T.config(pg_db,
                   receiver={"api": {"anonymous_read": False},
                             "console": {"users": [{"name": "alice", "password_hash": hash_password("pw")}]}},
                   remediation={"enabled": True, "playbooks": [PLAYBOOK], "verify_interval": "0.05s"})
    a = create_app(cfg)
    yield a
    close_app(a)


def console_login(c, user: str = "alice", pw: str = "pw"):
    """Log in through the form (it carries a CSRF token from the pre-login session)."""
    tok = re.search(r'name="csrf" value="([^"]+)"', c.get("/console/login").get_data(as_text=True)).group(1)
    return c.post("/console/login", data={"username": user, "password": pw, "csrf": tok})


def open_ticket(c, alertname: str, **labels) -> int:
    r = c.post("/webhook/alertmanager", data=json.dumps(T.payload([T.alert(alertname, **labels)])),
               headers=T.auth(), content_type="application/json")
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.get_json()["opened"][0]


def finished_runs(db_url: str, tid: int) -> list[dict]:
    """The ticket's remediation runs once none is still pending/running (it runs in a pool)."""
    deadline = time.monotonic() + 30
    while True:
        with store.connect(db_url, autocommit=True) as conn:
            runs = store.ticket_runs(conn, tid)
        if runs and all(r["status"] not in ("pending", "running") for r in runs):
            return runs
        if time.monotonic() > deadline:
            raise AssertionError(f"the remediation run did not finish: {runs}")
        time.sleep(0.1)


def attach(db_url: str, tid: int) -> None:
    now = datetime.now(timezone.utc)
    series = [{"metric": {"service": "user-app"},
               "values": [[(now - timedelta(minutes=10 - i)).timestamp(), str(0.5 + i / 20)] for i in range(10)]}]
    png = enrichment.draw_png(series, "ServiceDown service=user-app", "up", now - timedelta(minutes=3), 600, 240, 0.8)
    with store.connect(db_url, autocommit=True) as conn:
        enrichment.save(conn, tid, "graph.png", png, {"expr": "up == 0", "graph_expr": "up", "threshold": 0.8})
        enrichment.save(conn, tid, "values.json", json.dumps({"expr": "up == 0", "at": now.timestamp(), "values": [
            {"labels": {"service": "user-app", "region": "capital"}, "value": 0.25, "this_alert": True},
            {"labels": {"service": "user-app", "region": "provinces"}, "value": 0.75, "this_alert": False}]}).encode())
        enrichment.save(conn, tid, "related.json", json.dumps({"service": "user-app", "alerts": [
            {"labels": {"alertname": "HighLatency", "service": "user-app", "severity": "warning"},
             "startsAt": "2026-11-26T08:58:00Z", "state": "active", "summary": "Latency above 300ms."}]}).encode())
        enrichment.save(conn, tid, "logs.txt", b'09:59:58 level=error msg="connection refused to db"\n'
                                               b"09:59:59 level=info msg=<retrying>",
                        {"source": "loki", "explore_url": "http://127.0.0.1:3000/explore?orgId=1&panes=%7B%7D"})
        enrichment.save(conn, tid, "errors.json", json.dumps({"related.json": "Alertmanager timed out"}).encode())


def test_ticket_page_shows_attachments_and_remediation(app):
    db_url = app.extensions["opsstack"].cfg["database"]["url"]
    c = app.test_client()
    tid = open_ticket(c, "ServiceDown")
    runs = finished_runs(db_url, tid)
    assert runs[0]["status"] == "exhausted" and runs[0]["attempts"][0]["status"] == "ok"
    attach(db_url, tid)

    assert console_login(c).status_code == 302
    page = c.get(f"/console/tickets/{tid}").get_data(as_text=True)
    # the graph inline, from a URL the logged-in console user can read
    img = re.search(r'<figure class="graph" id="graph"><img src="([^"]+)"', page)
    assert img and img.group(1) == f"/api/v1/tickets/{tid}/attachments/graph.png"
    r = c.get(img.group(1))
    assert r.status_code == 200 and r.mimetype == "image/png" and r.data[:8] == b"\x89PNG\r\n\x1a\n"
    assert "threshold 0.8" in page
    # current values, related alerts, the log excerpt (escaped), what could not be attached
    values = page[page.index('<table id="values">'):]
    values = values[:values.index("</table>")]
    assert "0.25" in values and "region=capital" in values and "this alert" in values and "0.75" in values
    related = page[page.index('<table id="related">'):]
    related = related[:related.index("</table>")]
    assert "HighLatency" in related and "Latency above 300ms." in related and "severity=warning" in related
    assert 'connection refused to db' in page and "msg=&lt;retrying&gt;" in page and "<retrying>" not in page
    assert "Alertmanager timed out" in page
    assert '<a id="logs-explore" href="http://127.0.0.1:3000/explore?orgId=1&amp;panes=%7B%7D"' in page
    for name in ("graph.png", "values.json", "related.json", "logs.txt", "errors.json"):
        assert f'href="/api/v1/tickets/{tid}/attachments/{name}"' in page
    # the remediation run: what ran, the outcome, how long it took
    run = page[page.index(f'id="run-{runs[0]["id"]}"'):]
    run = run[:run.index("</table>")]
    assert "restart-service" in run and "demo-user-app" in run and "exhausted" in run and "escalated" in run
    assert "restart" in run and "command run" in run and "restarted demo-user-app" in run
    assert '<tr class="attempt attempt-ok">' in run and "not recovered" in run
    assert re.search(r"<td>\d[\d.e-]*s</td>", run), run

    # the API itself still wants a token (anonymous_read is off): it is the console login that lets the page in
    assert app.test_client().get(img.group(1)).status_code == 401


def test_ticket_page_without_automation_output(app):
    c = app.test_client()
    tid = open_ticket(c, "DiskAlmostFull", service="gate-management")  # no playbook matches
    assert console_login(c).status_code == 302
    page = c.get(f"/console/tickets/{tid}").get_data(as_text=True)
    assert 'id="no-attachments"' in page and 'id="no-remediation"' in page and "<img" not in page


def test_close_app_shuts_automation_down(pg_db):
    """close_app() stops the app's automation: its worker pools take no more work and it no longer
    listens to the ticket hooks (a closed app must not be handed tickets)."""
    from webhook_receiver import automation
    from webhook_receiver.state import state

    a = create_app(T.config(pg_db))
    auto = a.extensions[automation.EXT]
    pool = auto.pool("enrichment", 1)
    assert pool.submit(lambda: 1).result() == 1
    hooks = state(a).hooks
    assert auto.on_opened in hooks.subscribers("ticket_opened")
    close_app(a)
    with pytest.raises(RuntimeError):
        pool.submit(lambda: 1)
    assert auto.on_opened not in hooks.subscribers("ticket_opened")
