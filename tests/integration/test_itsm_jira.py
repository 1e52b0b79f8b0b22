"""JIRA forwarding against a local server that checks requests against the JIRA Cloud REST API v3
(issue create with ADF description and labels, enhanced JQL search, comments, transitions)."""
from __future__ import annotations

import base64
import itertools
import time

import pytest

from tests.support import receiver as T
from tests.support.fakehttp import FakeHTTP
from webhook_receiver.app import close_app, create_app

pytestmark = pytest.mark.integration

AUTH = "Basic " + base64.b64encode(b"bot@example.com:jira-api-token").decode()
WRITE = {"Authorization": "Bearer write-token-123"}


def is_adf(doc) -> bool:
    return (isinstance(doc, dict) and doc.get("type") == "doc" and doc.get("version") == 1
            and isinstance(doc.get("content"), list)
            and all(p.get("type") == "paragraph" and all(t.get("type") == "text" and isinstance(t.get("text"), str)
                                                         for t in p.get("content", []))
                    for p in doc["content"]))


def adf_text(doc) -> str:
    return "\n".join("".join(t["text"] for t in p.get("content", [])) for p in doc["content"])


class FakeJira(FakeHTTP):
    """JIRA Cloud REST API v3 as routes of the one fake server; every request passes `check` first."""

    def __init__(self):
        self.issues: dict[str, dict] = {}
        self.problems: list[str] = []
        self.ids = itertools.count(10001)
        super().__init__({"GET /rest/api/3/search/jql": self.search,
                          "POST /rest/api/3/issue": self.create_issue,
                          "/rest/api/3/issue/*": self.issue},
                         default=lambda req: (404, {"errorMessages": [f"no {req.method} {req.path}"]}),
                         guard=self.check, serial=True)

    def check(self, req):
        if req.headers.get("Authorization") != AUTH:
            return 401, {"errorMessages": ["You are not authenticated."]}
        if req.method == "POST" and req.content_type != "application/json":
            self.problems.append(f"{req.path} without JSON content type")
            return 415, {"errorMessages": ["Unsupported Media Type"]}
        return None

    def inject(self, method, path, status, apply_first):
        """The next `method` request on `path` (a glob) answers `status`; apply_first: after doing it."""
        self.fail(method, path, status, {"errorMessages": ["injected failure"]}, apply=apply_first)

    def search(self, req):
        q = req.query
        jql = q.get("jql", "")
        if not jql.startswith('labels = "') or "maxResults" not in q:
            self.problems.append(f"search {q}")
        label = jql.split('"')[1]
        found = [i for i in self.issues.values() if label in i["labels"]]
        return 200, {"issues": [{"id": i["id"], "key": i["key"], "fields": {"status": {"name": i["status"]}}}
                                for i in found][: int(q.get("maxResults", 50))], "isLast": True}

    def create_issue(self, req):
        f = (req.json or {}).get("fields", {})
        errors = {}
        if f.get("project") != {"key": "OPS"}:
            errors["project"] = "valid project is required"
        if not isinstance(f.get("summary"), str) or not f["summary"] or len(f["summary"]) > 255:
            errors["summary"] = "You must specify a summary of the issue."
        elif any(ch in f["summary"] for ch in "\r\n"):  # as JIRA Cloud answers
            errors["summary"] = "The summary is invalid because it contains newline characters."
        if f.get("issuetype") != {"name": "Task"}:
            errors["issuetype"] = "valid issue type is required"
        if not is_adf(f.get("description")):
            errors["description"] = "Operation value must be an Atlassian Document."
        if not isinstance(f.get("labels"), list) or any(" " in x for x in f["labels"]):
            errors["labels"] = "labels must be strings without spaces"
        if errors:
            return 400, {"errorMessages": [], "errors": errors}
        iid = str(next(self.ids))
        key = f"OPS-{len(self.issues) + 1}"
        self.issues[key] = {"id": iid, "key": key, "labels": f["labels"], "summary": f["summary"],
                            "description": adf_text(f["description"]), "status": "To Do", "comments": []}
        return 201, {"id": iid, "key": key, "self": f"{self.url}/rest/api/3/issue/{iid}"}

    def issue(self, req):
        """/rest/api/3/issue/{key}[/comment|/transitions]"""
        m, p, q, body = req.method, req.path.split("/"), req.query, req.json
        issue = self.issues.get(p[5])
        if issue is None:
            return 404, {"errorMessages": ["Issue does not exist or you do not have permission to see it."]}
        sub = p[6] if len(p) > 6 else None
        done = issue["status"] == "Done"
        if sub is None and m == "GET":
            return 200, {"id": issue["id"], "key": issue["key"], "fields": {"status": {
                "name": issue["status"], "statusCategory": {"key": "done" if done else "new"}}}}
        if sub == "comment" and m == "POST":
            if not is_adf((body or {}).get("body")):
                self.problems.append(f"comment body not ADF: {body}")
                return 400, {"errorMessages": ["Comment body is not valid"]}
            issue["comments"].append(body["body"])
            return 201, {"id": str(len(issue["comments"])), "body": body["body"]}
        if sub == "comment" and m == "GET":
            start = int(q.get("startAt", 0))
            cs = issue["comments"][start:start + int(q.get("maxResults", 50))]
            return 200, {"startAt": start, "maxResults": 100, "total": len(issue["comments"]),
                         "comments": [{"id": str(i), "body": c} for i, c in enumerate(cs)]}
        if sub == "transitions" and m == "GET":
            ts = [{"id": "11", "name": "To Do", "to": {"name": "To Do", "statusCategory": {"key": "new"}}},
                  {"id": "31", "name": "Done", "to": {"name": "Done", "statusCategory": {"key": "done"}}}]
            return 200, {"transitions": [t for t in ts if t["to"]["name"] != issue["status"]]}
        if sub == "transitions" and m == "POST":
            tid = ((body or {}).get("transition") or {}).get("id")
            if tid not in ("11", "31"):
                self.problems.append(f"transition {body}")
                return 400, {"errorMessages": ["Transition id is not valid"]}
            issue["status"] = "To Do" if tid == "11" else "Done"
            return 204, None
        return 404, {"errorMessages": [f"no {m} {req.path}"]}


@pytest.fixture
def jira():
    with FakeJira() as j:
        yield j


@pytest.fixture
def client(pg_db, jira):
    cfg = T.config(pg_db, itsm={"retry_interval": "0.05s", "max_retry_interval": "0.2s", "poll_interval": "0.05s",
                                "max_attempts": 30,
                                "jira": {"enabled": True, "url": jira.url, "email": "bot@example.com",
                                         "api_token": "jira-api-token"}},
                   receiver={"api": {"anonymous_read": True, "tokens": [{"name": "ops", "token": "write-token-123",
                                                 "scopes": ["read", "write"]}]}})
    app = create_app(cfg)
    yield app.test_client()
    app.extensions["opsstack.automation"].shutdown()
    close_app(app)


def settle(c, tid, n, timeout=20):
    """Wait until n deliveries exist and none is pending; returns the ticket's ITSM status."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = c.get(f"/api/v1/tickets/{tid}/itsm").get_json()
        if len(st["deliveries"]) >= n and all(d["status"] != "pending" for d in st["deliveries"]):
            assert all(d["status"] == "done" or d["attempts"] == 1 for d in st["deliveries"]), st
            return st
        time.sleep(0.05)
    raise AssertionError(f"deliveries did not settle: {st}")


def fire(c, **kw):
    a = T.alert(**kw)
    assert c.post("/webhook/alertmanager", json=T.payload([a]), headers=T.auth()).status_code == 200
    return a


def test_ticket_lifecycle_is_forwarded_to_jira(client, jira):
    a = fire(client)
    [t] = client.get("/api/v1/tickets").get_json()
    st = settle(client, t["id"], 1)
    assert st["links"][0]["external_key"] == "OPS-1" and st["links"][0]["url"].endswith("/browse/OPS-1")
    issue = jira.issues["OPS-1"]
    assert issue["labels"] == [f"opsstack-{t['id']}", "opsstack"]
    assert issue["summary"].startswith("[critical] ServiceDown") and "service=user-app" in issue["description"]
    assert client.post(f"/api/v1/tickets/{t['id']}/acknowledge", json={}, headers=WRITE).status_code == 200
    settle(client, t["id"], 2)
    assert "acknowledged by api:ops" in adf_text(issue["comments"][0])
    client.post("/webhook/alertmanager", json=T.payload([T.resolved(a)]), headers=T.auth())
    settle(client, t["id"], 3)
    assert issue["status"] == "Done" and "Resolved by" in adf_text(issue["comments"][-1])
    from datetime import datetime, timezone

    fire(client, starts_at=datetime(2026, 11, 26, 9, 30, tzinfo=timezone.utc))     # re-fire: reopen
    st = settle(client, t["id"], 4)
    assert issue["status"] == "To Do" and "reopened" in adf_text(issue["comments"][-1])
    assert [d["op"] for d in st["deliveries"]] == ["create", "comment", "resolve", "reopen"]
    assert all(d["status"] == "done" for d in st["deliveries"]) and len(jira.issues) == 1
    assert jira.problems == []


def test_lost_answers_and_5xx_are_retried_without_duplicates(client, jira):
    jira.inject("POST", "/rest/api/3/issue", 500, True)             # created, but the answer is lost
    jira.inject("POST", "*/comment", 503, True)                      # commented, answer lost
    jira.inject("POST", "*/transitions", 502, False)                 # plain outage
    a = fire(client)
    [t] = client.get("/api/v1/tickets").get_json()
    client.post(f"/api/v1/tickets/{t['id']}/acknowledge", json={}, headers=WRITE)
    client.post("/webhook/alertmanager", json=T.payload([T.resolved(a)]), headers=T.auth())
    st = settle(client, t["id"], 3)
    assert len(jira.issues) == 1, jira.issues
    issue = jira.issues["OPS-1"]
    texts = [adf_text(c) for c in issue["comments"]]
    assert sum("acknowledged" in x for x in texts) == 1 and sum("Resolved" in x for x in texts) == 1
    assert issue["status"] == "Done"
    assert [(d["op"], d["status"], d["attempts"]) for d in st["deliveries"]] == [
        ("create", "done", 2), ("comment", "done", 2), ("resolve", "done", 2)]
    assert jira.problems == []


def test_a_rejected_delivery_is_visible_and_can_be_retried(client, jira):
    jira.inject("POST", "/rest/api/3/issue", 400, False)
    fire(client)
    [t] = client.get("/api/v1/tickets").get_json()
    st = settle(client, t["id"], 1)
    [d] = st["deliveries"]
    assert d["status"] == "failed" and d["attempts"] == 1 and "-> 400" in d["last_error"]
    text = client.get("/metrics/automation").get_data(as_text=True)
    assert 'opsstack_itsm_outbox{status="failed",system="jira"} 1.0' in text
    assert client.post(f"/api/v1/itsm/deliveries/{d['id']}/retry", headers=WRITE).status_code == 200
    st = settle(client, t["id"], 1)
    assert st["deliveries"][0]["status"] == "done" and list(jira.issues) == ["OPS-1"]
    assert client.post(f"/api/v1/itsm/deliveries/{d['id']}/retry", headers=WRITE).status_code == 404


def test_crlf_in_labels_reaches_no_single_line_field(client, jira):
    """JIRA refuses a summary with a line break (400, not retried): a CR/LF in an alert's summary
    once made the issue never exist. The summary is one clean line now."""
    a = T.alert()
    a["annotations"]["summary"] = "Down.\r\nX-Injected: yes\x1b[31m"
    assert client.post("/webhook/alertmanager", json=T.payload([a]), headers=T.auth()).status_code == 200
    [t] = client.get("/api/v1/tickets").get_json()
    st = settle(client, t["id"], 1)
    assert st["deliveries"][0]["status"] == "done"
    assert jira.issues["OPS-1"]["summary"] == "[critical] ServiceDown: Down. X-Injected: yes [31m"


def test_a_delivery_that_raises_anything_fails_alone(client, jira, pg_db):
    """The ITSM user of the shared outbox: a row whose delivery raises something unexpected (here a
    payload that is not an object) is retried, then failed; the rows of other tickets flow."""
    import psycopg

    fire(client)
    [t1] = client.get("/api/v1/tickets").get_json()
    settle(client, t1["id"], 1)
    with psycopg.connect(pg_db, autocommit=True) as conn:  # a comment row with a broken payload, due first
        conn.execute("""insert into ticket_itsm_outbox (ticket_id, system, op, dedup_key, payload)
                        values (%s, 'jira', 'comment', 'jira:broken', '["not", "an", "object"]')""", (t1["id"],))
    fire(client, alertname="HighLatency", service="gate-management")
    t2 = next(t for t in client.get("/api/v1/tickets").get_json() if t["id"] != t1["id"])
    assert settle(client, t2["id"], 1)["deliveries"][0]["status"] == "done"
    deadline = time.monotonic() + 60
    while True:
        broken = client.get(f"/api/v1/tickets/{t1['id']}/itsm").get_json()["deliveries"][1]
        if broken["status"] != "pending" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert broken["status"] == "failed" and broken["attempts"] == 30 and "AttributeError" in broken["last_error"]
    assert len(jira.issues) == 2
