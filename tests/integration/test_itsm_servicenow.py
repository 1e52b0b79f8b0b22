"""ServiceNow forwarding against a local server that checks requests against the Table API
(incident create / query by correlation_id, PATCH work_notes and resolve, sys_journal_field)."""
from __future__ import annotations

import base64
import time
import uuid

import pytest

from tests.support import receiver as T
from tests.support.fakehttp import FakeHTTP
from webhook_receiver.app import close_app, create_app

pytestmark = pytest.mark.integration

AUTH = "Basic " + base64.b64encode(b"opsstack:sn-pass").decode()
FIELDS = {"short_description", "description", "urgency", "impact", "correlation_id", "correlation_display",
          "caller_id", "assignment_group", "category", "work_notes", "state", "close_code", "close_notes"}


class FakeServiceNow(FakeHTTP):
    """The Table API as routes of the one fake server; every request passes `check` first."""

    def __init__(self):
        self.incidents: dict[str, dict] = {}
        self.journal: list[dict] = []
        self.problems: list[str] = []
        super().__init__({"GET /api/now/table/incident": self.query_incidents,
                          "POST /api/now/table/incident": self.create_incident,
                          "PATCH /api/now/table/incident/*": self.update_incident,
                          "GET /api/now/table/sys_journal_field": self.journal_entries},
                         default=lambda req: (400, {"error": {"message": f"Invalid table or path {req.path}"},
                                                    "status": "failure"}),
                         guard=self.check, serial=True)

    def check(self, req):
        if req.headers.get("Authorization") != AUTH:
            return 401, {"error": {"message": "User Not Authenticated", "detail": ""}, "status": "failure"}
        if req.headers.get("Accept") != "application/json":
            self.problems.append(f"Accept {req.headers.get('Accept')}")
        return None

    def inject(self, method, path, status, apply_first):
        """The next `method` request on `path` (a glob) answers `status`; apply_first: after doing it."""
        self.fail(method, path, status, {"error": {"message": "injected"}, "status": "failure"}, apply=apply_first)

    def query_incidents(self, req):
        q = req.query
        query = q.get("sysparm_query", "")
        if not query.startswith("correlation_id="):
            self.problems.append(f"query {query}")
        cid = query.split("=", 1)[1]
        res = [i for i in self.incidents.values() if i["correlation_id"] == cid][: int(q.get("sysparm_limit", 10))]
        return 200, {"result": [{"sys_id": i["sys_id"], "number": i["number"], "state": i["state"]} for i in res]}

    def create_incident(self, req):
        body = req.json
        bad = set(body) - FIELDS
        if bad or not body.get("short_description") or body.get("urgency") not in ("1", "2", "3") \
                or body.get("impact") not in ("1", "2", "3") or not body.get("correlation_id"):
            self.problems.append(f"create {body}")
            return 400, {"error": {"message": "Invalid"}, "status": "failure"}
        sys_id = uuid.uuid4().hex
        inc = {**body, "sys_id": sys_id, "number": f"INC{10001 + len(self.incidents):07d}", "state": "1"}
        self.incidents[sys_id] = inc
        return 201, {"result": inc}

    def update_incident(self, req):
        body = req.json
        inc = self.incidents.get(req.path.rsplit("/", 1)[-1])
        if inc is None:
            return 404, {"error": {"message": "No Record found"}, "status": "failure"}
        if set(body) - FIELDS:
            self.problems.append(f"patch {body}")
        if body.get("state") == "6" and not (body.get("close_code") and body.get("close_notes")):
            return 403, {"error": {"message": "Data Policy Exception: close_code, close_notes mandatory"}}
        if "work_notes" in body:
            self.journal.append({"sys_id": uuid.uuid4().hex, "element_id": inc["sys_id"],
                                 "element": "work_notes", "value": body["work_notes"]})
        inc.update({k: v for k, v in body.items() if k != "work_notes"})
        return 200, {"result": inc}

    def journal_entries(self, req):
        parts = dict(p.split("=", 1) if "=" in p else (p[:p.index("LIKE")], p) for p in
                     req.query.get("sysparm_query", "").split("^"))
        like = parts.get("value", "")[len("valueLIKE"):]
        res = [j for j in self.journal if j["element_id"] == parts.get("element_id")
               and j["element"] == parts.get("element") and like in j["value"]]
        return 200, {"result": [{"sys_id": j["sys_id"]} for j in res]}


@pytest.fixture
def sn():
    with FakeServiceNow() as s:
        yield s


@pytest.fixture
def client(pg_db, sn):
    cfg = T.config(pg_db, itsm={"retry_interval": "0.05s", "max_retry_interval": "0.2s", "poll_interval": "0.05s",
                                "max_attempts": 30,
                                "servicenow": {"enabled": True, "url": sn.url, "username": "opsstack",
                                               "password": "sn-pass", "assignment_group": "Platform Ops"}},
                   receiver={"api": {"anonymous_read": True, "tokens": [{"name": "ops", "token": "write-token-123",
                                                 "scopes": ["read", "write"]}]}})
    app = create_app(cfg)
    yield app.test_client()
    app.extensions["opsstack.automation"].shutdown()
    close_app(app)


def settle(c, tid, n, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = c.get(f"/api/v1/tickets/{tid}/itsm").get_json()
        if len(st["deliveries"]) >= n and all(d["status"] != "pending" for d in st["deliveries"]):
            assert all(d["status"] == "done" or d["attempts"] == 1 for d in st["deliveries"]), st
            return st
        time.sleep(0.05)
    raise AssertionError(f"deliveries did not settle: {st}")


def test_incident_created_noted_and_resolved(client, sn):
    a = T.alert()
    client.post("/webhook/alertmanager", json=T.payload([a]), headers=T.auth())
    [t] = client.get("/api/v1/tickets").get_json()
    st = settle(client, t["id"], 1)
    [inc] = sn.incidents.values()
    assert st["links"][0]["external_key"] == inc["number"] and st["links"][0]["external_id"] == inc["sys_id"]
    assert inc["correlation_id"] == f"OPS-{t['id']}" and inc["urgency"] == "1" and inc["impact"] == "1"
    assert inc["assignment_group"] == "Platform Ops" and inc["short_description"].startswith("[critical] ServiceDown")
    client.post(f"/api/v1/tickets/{t['id']}/comment", json={"text": "looking at it"},
                headers={"Authorization": "Bearer write-token-123"})
    settle(client, t["id"], 2)
    assert "comment by api:ops" in sn.journal[0]["value"] and "looking at it" in sn.journal[0]["value"]
    client.post("/webhook/alertmanager", json=T.payload([T.resolved(a)]), headers=T.auth())
    st = settle(client, t["id"], 3)
    assert inc["state"] == "6" and inc["close_code"] == "Solution provided" and "Resolved by" in inc["close_notes"]
    assert [d["status"] for d in st["deliveries"]] == ["done"] * 3 and sn.problems == []


def test_lost_answers_are_not_applied_twice(client, sn):
    sn.inject("POST", "/api/now/table/incident", 500, True)
    sn.inject("PATCH", "/api/now/table/incident/*", 504, True)
    client.post("/webhook/alertmanager", json=T.payload([T.alert()]), headers=T.auth())
    [t] = client.get("/api/v1/tickets").get_json()
    client.post(f"/api/v1/tickets/{t['id']}/comment", json={"text": "one note"},
                headers={"Authorization": "Bearer write-token-123"})
    st = settle(client, t["id"], 2)
    assert len(sn.incidents) == 1 and len(sn.journal) == 1, (sn.incidents, sn.journal)
    assert [(d["op"], d["attempts"]) for d in st["deliveries"]] == [("create", 2), ("comment", 2)]
    assert sn.problems == []


def test_crlf_in_labels_stays_out_of_the_one_line_short_description(client, sn):
    a = T.alert()
    a["annotations"]["summary"] = "Down.\r\nCaused-By: attacker\x07"
    client.post("/webhook/alertmanager", json=T.payload([a]), headers=T.auth())
    [t] = client.get("/api/v1/tickets").get_json()
    settle(client, t["id"], 1)
    [inc] = sn.incidents.values()
    assert inc["short_description"] == "[critical] ServiceDown: Down. Caused-By: attacker"
    assert "Down.\r\nCaused-By" in inc["description"]  # the long text keeps its lines (a body, not a header)
