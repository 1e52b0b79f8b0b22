"""The incident console over HTTP (Flask test client, real PostgreSQL)."""
from __future__ import annotations

import json
import re

import pytest

from webhook_receiver import testing as T
from webhook_receiver.app import close_app, create_app
from webhook_receiver.auth import hash_password

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pw_hash():
    return hash_password("correct horse")


@pytest.fixture
def client(pg_db, pw_hash):
    app = create_app(T.config(pg_db, receiver={"console": {"users": [
        {"name": "alice", "password_hash": pw_hash, "display_name": "Alice"}]}}))
    yield app.test_client()
    close_app(app)


def login(c, user="alice", pw="correct horse"):
    return c.post("/console/login", data={"username": user, "password": pw})


def csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def test_requires_login(client):
    r = client.get("/console/")
    assert r.status_code == 302 and "/console/login" in r.headers["Location"]
    r = login(client, pw="wrong")
    assert r.status_code == 401 and "Wrong user name or password" in r.get_data(as_text=True)
    assert client.get("/console/").status_code == 302


def test_list_detail_and_actions(client):
    body = T.payload([T.alert(service="user-app"), T.alert(service="gate-management"),
                      T.alert("HighLatency", severity="warning", service="user-app")])
    client.post("/webhook/alertmanager", data=json.dumps(body), headers=T.auth())
    assert login(client).status_code == 302
    html = client.get("/console/").get_data(as_text=True)
    assert html.index('data-severity="critical"') < html.index('data-severity="warning"')
    assert "ops-oncall" in html and '<td class="level">L1 ops team</td>' in html
    assert re.search(r'<td class="next">in [45]m', html)
    tid = int(re.search(r'id="ticket-(\d+)"', html).group(1))
    page = client.get(f"/console/tickets/{tid}").get_data(as_text=True)
    assert 'id="acknowledge"' in page and "Same Alertmanager group" in page and "opened" in page
    # a POST without the CSRF token is refused
    assert client.post(f"/console/tickets/{tid}/acknowledge").status_code == 400
    tok = csrf(page)
    r = client.post(f"/console/tickets/{tid}/acknowledge", data={"csrf": tok}, follow_redirects=True)
    page = r.get_data(as_text=True)
    assert "Acknowledged." in page and 'id="status" class="st-acknowledged"' in page and "stopped" in page
    r = client.post(f"/console/tickets/{tid}/comment", data={"csrf": tok, "text": "restarting <b>it</b>"},
                    follow_redirects=True)
    page = r.get_data(as_text=True)
    assert "restarting &lt;b&gt;it&lt;/b&gt;" in page  # escaped
    r = client.post(f"/console/tickets/{tid}/reassign", data={"csrf": tok, "assignee": "cto"}, follow_redirects=True)
    assert 'id="owner">cto<' in r.get_data(as_text=True)
    r = client.post(f"/console/tickets/{tid}/resolve", data={"csrf": tok}, follow_redirects=True)
    assert 'class="st-resolved"' in r.get_data(as_text=True)
    events = [e["kind"] for e in client.get(f"/api/v1/tickets/{tid}").get_json()["events"]]
    assert events == ["opened", "acknowledged", "comment", "reassigned", "resolved"]
    assert client.get(f"/api/v1/tickets/{tid}").get_json()["acknowledged_by"] == "alice"
    assert client.get("/console/tickets/999999").status_code == 404
