"""Schemathesis against /api/v1/openapi.json: no 5xx, responses match the document."""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.support import receiver as T
from webhook_receiver import automation
from webhook_receiver.app import close_app, create_app
from webhook_receiver.openapi import spec

pytestmark = pytest.mark.integration

API_TOKEN = "schemathesis-token"


@pytest.fixture
def api_app(pg_db):
    app = create_app(T.config(pg_db, receiver={"api": {"tokens": [{"name": "st", "token": API_TOKEN}]}}))
    c = app.test_client()
    alerts = [T.alert(service=s) for s in ("user-app", "gate-management", "event-management")]
    c.post("/webhook/alertmanager", json=T.payload(alerts), headers=T.auth())
    yield app
    close_app(app)


@pytest.fixture
def api_schema(api_app):
    # as a reader: the document names the people reassign accepts only to a caller who may read
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", api_app,
                                          headers={"Authorization": f"Bearer {API_TOKEN}"})


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_never_5xx_and_matches_the_document(case):
    case.call_and_validate(headers={"Authorization": f"Bearer {API_TOKEN}"})


def test_document_is_served_and_lists_the_operations(api_app):
    doc = api_app.test_client().get("/api/v1/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    ops = {(p, m) for p, item in doc["paths"].items() for m in item}
    assert {("/api/v1/tickets", "get"), ("/api/v1/tickets/{id}", "get"), ("/api/v1/tickets/{id}/acknowledge", "post"),
            ("/api/v1/tickets/{id}/resolve", "post"), ("/api/v1/tickets/{id}/comment", "post"),
            ("/api/v1/tickets/{id}/reassign", "post")} <= ops
    # the automation endpoints (enrichment, remediation, ITSM) are part of the served document
    assert {("/api/v1/tickets/{tid}/attachments", "get"), ("/api/v1/tickets/{tid}/attachments/{name}", "get"),
            ("/api/v1/tickets/{tid}/remediation", "get"), ("/api/v1/remediation/runs", "get"),
            ("/api/v1/remediation/kill-switch", "get"), ("/api/v1/remediation/kill-switch", "put"),
            ("/api/v1/itsm/deliveries/{did}/retry", "post")} <= ops
    assert set(automation.openapi_paths()) <= set(doc["paths"])


def test_automation_paths_only_with_automation(api_app):
    """The document is read from the registered blueprints: the receiver's own document knows
    nothing of automation; an app whose factory registered the automation blueprint serves its
    paths, an app without that blueprint does not."""
    from flask import Flask

    from webhook_receiver import api
    from webhook_receiver.openapi import for_app

    assert not set(automation.openapi_paths()) & set(spec()["paths"])
    assert "automation" in api_app.blueprints
    assert set(automation.openapi_paths()) <= set(for_app(api_app)["paths"])
    bare = Flask("bare")
    bare.register_blueprint(api.bp)
    doc = for_app(bare)
    assert "/api/v1/tickets/{id}" in doc["paths"]
    assert "/api/v1/remediation/kill-switch" not in doc["paths"]
    assert doc == spec()


def test_writes_need_a_write_token(pg_db):
    app = create_app(T.config(pg_db, receiver={"api": {"anonymous_read": False, "tokens": [
        {"name": "ro", "token": "ro-token", "scopes": ["read"]}]}}))
    try:
        c = app.test_client()
        c.post("/webhook/alertmanager", json=T.payload([T.alert()]), headers=T.auth())
        assert c.get("/api/v1/tickets").status_code == 401
        ro = {"Authorization": "Bearer ro-token"}
        assert c.get("/api/v1/tickets", headers=ro).status_code == 200
        r = c.post("/api/v1/tickets/1/acknowledge", headers=ro)
        assert r.status_code == 403 and r.get_json()["error"] == "forbidden"
        assert c.post("/api/v1/tickets/1/acknowledge").status_code == 401
        assert c.post("/api/v1/tickets/1/acknowledge", headers={"Authorization": "Bearer nope"}).status_code == 401
        # the receiver token works as the stack's own API token ...
        r = c.post("/api/v1/tickets/1/acknowledge", headers=T.auth())
        assert r.status_code == 200 and r.get_json()["acknowledged_by"] == "api:stack"
    finally:
        close_app(app)
    # ... unless switched off
    app = create_app(T.config(pg_db, receiver={"api": {"accept_receiver_token": False}}))
    try:
        assert app.test_client().post("/api/v1/tickets/1/resolve", headers=T.auth()).status_code == 401
    finally:
        close_app(app)
