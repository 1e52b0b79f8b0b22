"""Schemathesis against the automation endpoints (automation.openapi_paths()): no 5xx, documented answers."""
from __future__ import annotations

import pytest
import schemathesis
from flask import jsonify
from hypothesis import HealthCheck, settings

from tests.support import receiver as T
from webhook_receiver.app import close_app, create_app
from webhook_receiver.automation import openapi_paths

pytestmark = pytest.mark.integration

API_TOKEN = "schemathesis-automation-token"


@pytest.fixture
def api_app(pg_db):
    app = create_app(T.config(pg_db, receiver={"api": {"tokens": [{"name": "st", "token": API_TOKEN}]}}))
    doc = {"openapi": "3.0.3", "info": {"title": "automation", "version": "1"}, "servers": [{"url": "/"}],
           "paths": openapi_paths()}
    app.add_url_rule("/test/automation-openapi.json", "automation_openapi", lambda: jsonify(doc))
    c = app.test_client()
    c.post("/webhook/alertmanager", json=T.payload([T.alert()]), headers=T.auth())
    yield app
    app.extensions["opsstack.automation"].shutdown()
    close_app(app)


@pytest.fixture
def api_schema(api_app):
    return schemathesis.openapi.from_wsgi("/test/automation-openapi.json", api_app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_automation_api_never_5xx_and_matches_the_document(case):
    case.call_and_validate(headers={"Authorization": f"Bearer {API_TOKEN}"})
