"""Enrichment is rate-limited (enrichment.max_per_minute) and never holds up tickets or paging.

With the limit at N, many queued enrichment jobs: N run, the others stay pending (no attempt
spent, nothing dropped) until the minute's slots free up, then run. While enrichment is stuck
(Prometheus not answering), new tickets are still created and their notifications sent."""
from __future__ import annotations

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.support import receiver as T
from tests.support.fakehttp import FakeHTTP
from tests.support.wait import wait_for
from webhook_receiver import jobs, scheduler
from webhook_receiver.app import close_app, create_app, state

pytestmark = pytest.mark.integration

PROM = {"GET /api/v1/query_range": {"status": "success", "data": {"resultType": "matrix", "result": [
            {"metric": {"__name__": "up", "service": "svc-0"}, "values": [[1764400000, "1"], [1764400060, "0"]]}]}},
        "GET /api/v1/query": {"status": "success", "data": {"resultType": "vector", "result": []}},
        "GET /api/v1/alerts": {"status": "success", "data": {"alerts": []}},
        "POST /hook": (200, {})}


def rows(db, q, *args):
    with psycopg.connect(db, autocommit=True, row_factory=dict_row) as c:
        return c.execute(q, args).fetchall()


def fire(c, i: int) -> int:
    """One alert in a group of its own (so one ticket whatever receiver.incident_by says)."""
    body = T.payload([T.alert(f"RateAlert{i}", service=f"svc-{i}")], group_key=f'{{}}:{{rate="{i}"}}')
    r = c.post("/webhook/alertmanager", json=body, headers=T.auth())
    assert r.status_code == 200, r.get_data(as_text=True)
    [tid] = r.get_json()["opened"]
    return tid


def enrichment_jobs(db) -> dict:
    out = {"done": 0, "pending": 0, "failed": 0}
    for r in rows(db, "select status, count(*) n from automation_jobs where kind = 'enrichment' group by 1"):
        out[r["status"]] = r["n"]
    return out


def the_minute_passes(db) -> None:
    """Every slot taken so far is now older than the window (instead of waiting a real minute)."""
    rows(db, "update automation_rate set started_at = started_at - make_interval(secs => %s) returning id",
         jobs.RATE_WINDOW + 1)


def test_at_most_n_enrichments_start_in_a_minute_and_the_rest_run_later(pg_db):
    with FakeHTTP(PROM) as prom:
        cfg = T.config(pg_db, enrichment={"prometheus_url": prom.url, "alertmanager_url": None, "timeout": "5s",
                                          "max_per_minute": 3, "workers": 2})
        app = create_app(cfg)
        try:
            st, c = state(app), app.test_client()
            tickets = [fire(c, i) for i in range(8)]
            assert len(set(tickets)) == 8
            wait_for(lambda: enrichment_jobs(pg_db)["done"] == 3, timeout=120)
            # the limit holds: a pass over the queue now starts nothing, and nothing was spent on the waiting jobs
            with psycopg.connect(pg_db, autocommit=True, row_factory=dict_row) as conn:
                assert jobs.run_due(conn, st.automation.remediation, lambda tid: pytest.fail("enriched over the limit"),
                                    lambda: None, lane="enrichment", enrich_per_minute=3) == 0
            waiting = rows(pg_db, "select status, attempts from automation_jobs where kind = 'enrichment' "
                                  "and status <> 'done'")
            assert len(waiting) == 5 and all(w == {"status": "pending", "attempts": 0} for w in waiting)
            assert rows(pg_db, "select count(*) n from automation_rate")[0]["n"] == 3
            assert enrichment_jobs(pg_db) == {"done": 3, "pending": 5, "failed": 0}

            the_minute_passes(pg_db)
            scheduler.tick(st)  # the scheduler kicks the enrichment lane: three more
            wait_for(lambda: enrichment_jobs(pg_db)["done"] == 6, timeout=120)
            with psycopg.connect(pg_db, autocommit=True, row_factory=dict_row) as conn:
                assert jobs.run_due(conn, st.automation.remediation, lambda tid: pytest.fail("enriched over the limit"),
                                    lambda: None, lane="enrichment", enrich_per_minute=3) == 0
            the_minute_passes(pg_db)
            scheduler.tick(st)
            wait_for(lambda: enrichment_jobs(pg_db) == {"done": 8, "pending": 0, "failed": 0}, timeout=120)
            enriched = rows(pg_db, "select distinct ticket_id from ticket_attachments where name = 'graph.png'")
            assert sorted(r["ticket_id"] for r in enriched) == sorted(tickets)
            assert all(r["attempts"] == 1 for r in rows(pg_db, "select attempts from automation_jobs"))
        finally:
            close_app(app)


def test_tickets_and_notifications_do_not_wait_for_a_stuck_enrichment(pg_db):
    with FakeHTTP(PROM) as fake:
        fake.hang(path="/api/v1/*")  # Prometheus takes every enrichment query and answers none
        cfg = T.config(pg_db, enrichment={"prometheus_url": fake.url, "alertmanager_url": None, "timeout": "60s",
                                          "workers": 2},
                       notifications={"channels": [{"name": "hook", "type": "webhook", "url": fake.url + "/hook"}],
                                      "rules": [{"severities": ["critical"], "levels": [1, 2, 3],
                                                 "channels": ["hook"]}]})
        app = create_app(cfg)
        try:
            st, c = state(app), app.test_client()
            first = [fire(c, i) for i in range(2)]
            # both enrichment workers are now stuck on Prometheus
            wait_for(lambda: len([r for r in fake.requests if r.path.startswith("/api/v1/")]) >= 2, timeout=120)
            later = [fire(c, i) for i in range(2, 6)]  # more tickets while enrichment is stuck
            assert len(set(first + later)) == 6
            scheduler.tick(st)  # notifications go out
            sent = wait_for(lambda: {r.json["ticket"]["id"] if isinstance(r.json.get("ticket"), dict)
                                     else r.json.get("ticket") for r in fake.requests if r.path == "/hook"}
                            if len([r for r in fake.requests if r.path == "/hook"]) >= 6 else None, timeout=120)
            assert sent == set(first + later)
            assert rows(pg_db, "select count(*) n from ticket_attachments")[0]["n"] == 0  # none enriched yet
            assert enrichment_jobs(pg_db)["done"] == 0
            fake.release()
            scheduler.tick(st)
            wait_for(lambda: enrichment_jobs(pg_db) == {"done": 6, "pending": 0, "failed": 0}, timeout=180)
            assert len(rows(pg_db, "select ticket_id from ticket_attachments where name = 'graph.png'")) == 6
        finally:
            fake.release()
            close_app(app)


def test_a_waiting_enrichment_of_a_ticket_resolved_meanwhile_is_skipped(pg_db):
    with FakeHTTP(PROM) as prom:
        cfg = T.config(pg_db, enrichment={"prometheus_url": prom.url, "alertmanager_url": None, "timeout": "5s",
                                          "max_per_minute": 1, "workers": 1})
        app = create_app(cfg)
        try:
            st, c = state(app), app.test_client()
            first, gone, live = (fire(c, i) for i in range(3))
            wait_for(lambda: enrichment_jobs(pg_db)["done"] == 1, timeout=120)
            # the second incident ends while its enrichment waits for a slot
            body = T.payload([T.resolved(T.alert("RateAlert1", service="svc-1"))], group_key='{}:{rate="1"}')
            assert c.post("/webhook/alertmanager", json=body, headers=T.auth()).status_code == 200
            assert rows(pg_db, "select status from tickets where id = %s", gone)[0]["status"] == "resolved"
            the_minute_passes(pg_db)
            scheduler.tick(st)
            wait_for(lambda: enrichment_jobs(pg_db) == {"done": 3, "pending": 0, "failed": 0}, timeout=120)
            enriched = {r["ticket_id"] for r in rows(pg_db, "select ticket_id from ticket_attachments")}
            assert enriched == {first, live}  # the minute's one slot went to the incident still going on
            [job] = rows(pg_db, "select payload from automation_jobs where ticket_id = %s and kind = 'enrichment'", gone)
            assert job["payload"]["skipped"]
        finally:
            close_app(app)
