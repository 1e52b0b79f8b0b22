"""App state lives on the app: two receiver apps in one process (different databases) never see
each other's ticket hooks, automation or metrics collectors."""
from __future__ import annotations

import psycopg
import pytest
from psycopg.rows import dict_row

from core.procs import free_port
from tests.support import receiver as T
from webhook_receiver.app import close_app, create_app
from webhook_receiver.state import state

pytestmark = pytest.mark.integration


def _rows(db, q, *args):
    with psycopg.connect(db, autocommit=True, row_factory=dict_row) as c:
        return c.execute(q, args).fetchall()


def _app(db):
    # enrichment wanted (a Prometheus URL), jobs only queued here (background: process): the
    # queued row in automation_jobs shows which app's automation took the ticket
    enrichment = {"prometheus_url": f"http://127.0.0.1:{free_port()}", "alertmanager_url": None, "timeout": "1s"}
    return create_app(T.config(db, enrichment=enrichment, receiver={"background": "process"}))


def test_a_ticket_in_app_a_fires_only_a_s_hooks_and_automation(pg_db, make_pg_db):
    db_a, db_b = pg_db, make_pg_db()
    a = _app(db_a)
    b = _app(db_b)  # created last: it must not take over a's subscriptions
    open_apps = [a, b]
    seen_a, seen_b = [], []
    state(a).hooks.subscribe("ticket_opened", lambda **kw: seen_a.append(kw["ticket_id"]))
    state(b).hooks.subscribe("ticket_opened", lambda **kw: seen_b.append(kw["ticket_id"]))
    try:
        r = a.test_client().post("/webhook/alertmanager", json=T.payload([T.alert()]), headers=T.auth())
        assert r.status_code == 200, r.get_data(as_text=True)
        [tid] = r.get_json()["opened"]
        assert seen_a == [tid] and seen_b == []
        # a's automation queued the enrichment job in a's database; b's got nothing
        assert [x["kind"] for x in _rows(db_a, "select kind from automation_jobs where ticket_id = %s", tid)] \
            == ["enrichment"]
        assert _rows(db_b, "select id from automation_jobs") == []
        # each app's own automation, on each app's own hooks and /metrics
        auto_a, auto_b = state(a).automation, state(b).automation
        assert auto_a is not auto_b
        assert auto_a.on_opened in state(a).hooks.subscribers("ticket_opened")
        assert auto_b.on_opened not in state(a).hooks.subscribers("ticket_opened")
        # each app its own collectors (automation, KPIs), none shared
        ca, cb = state(a).metrics_collectors, state(b).metrics_collectors
        assert len(ca) == len(cb) >= 2 and not {id(x) for x in ca} & {id(x) for x in cb}
        close_app(open_apps.pop())  # closing b leaves a's subscriptions alone
        assert auto_a.on_opened in state(a).hooks.subscribers("ticket_opened")
    finally:
        for x in open_apps:
            close_app(x)
