"""KPIs on /metrics read from the ticket tables: MTTA, MTTR, MTBF, escalations per level."""
from __future__ import annotations

import psycopg
import pytest

from tests.support import receiver as T
from webhook_receiver.app import close_app, create_app

pytestmark = pytest.mark.integration



def test_kpis(pg_db):
    app = create_app(T.config(pg_db))
    try:
        c = app.test_client()
        # three incidents (three Alertmanager groups), the last one of two alerts
        for i in range(3):
            alerts = [T.alert(service="user-app", instance=f"{i}-{j}") for j in range(1 if i < 2 else 2)]
            c.post("/webhook/alertmanager", json=T.payload(alerts, group_key=f"{{}}:{{instance=\"{i}\"}}"),
                   headers=T.auth())
        with psycopg.connect(pg_db, autocommit=True) as conn:
            # three tickets an hour apart; acknowledged after 60/120/- s; resolved after 600/1200/- s
            conn.execute("""update tickets set opened_at = now() - interval '3 hours' + (id - 1) * interval '1 hour'""")
            conn.execute("""update tickets set status = 'resolved', acknowledged_at = opened_at + id * interval '60 s',
                            resolved_at = opened_at + id * interval '600 s' where id <= 2""")
            # MTTA comes from the acknowledged events: ticket 1 was reopened since (which clears
            # its acknowledged_at), its page was still answered after 60 s
            conn.execute("""insert into ticket_events (ticket_id, kind, actor, at)
                            select id, 'acknowledged', 'alice', acknowledged_at from tickets where id <= 2""")
            conn.execute("update tickets set acknowledged_at = null where id = 1")
            conn.execute("""insert into ticket_events (ticket_id, kind, actor, details) values
                            (3, 'escalated', 'scheduler', '{"level": 2}'), (3, 'escalated', 'scheduler', '{"level": 3}'),
                            (3, 'escalated', 'scheduler', '{"level": 3}')""")
        m = T.samples(c.get("/metrics").get_data(as_text=True))
        svc = (("service", "user-app"),)
        assert m[("opsstack_tickets_mtta_seconds", svc)] == pytest.approx(90)
        assert m[("opsstack_tickets_mttr_seconds", svc)] == pytest.approx(900)
        assert m[("opsstack_tickets_mtbf_seconds", svc)] == pytest.approx(3600)
        assert m[("opsstack_tickets_escalations_total", (("level", "3"),))] == 2
        assert m[("opsstack_tickets_escalations_total", (("level", "2"),))] == 1
        assert m[("opsstack_tickets_open", (("severity", "critical"), ("status", "open")))] == 1
        assert m[("opsstack_tickets_opened_total", (("service", "user-app"), ("severity", "critical")))] == 3
        # the open incident holds two firing alerts; four alerts came in, in three incidents
        assert m[("opsstack_tickets_open_alerts", (("severity", "critical"),))] == 2
        assert m[("opsstack_tickets_alerts_total", ())] == 4
    finally:
        close_app(app)


def test_a_persons_first_event_is_read_through_the_partial_index(pg_db):
    """MTTA (kpis._RESPONSE, on every scrape) looks for the first event a person made in each
    ticket's episode. A flapping incident gains an event per alert that joins it; the query must
    not walk them all (migration 8's partial index holds a person's events only)."""
    from webhook_receiver import db as rdb
    from webhook_receiver import kpis

    app = create_app(T.config(pg_db))
    try:
        c = app.test_client()
        c.post("/webhook/alertmanager", json=T.payload([T.alert(service="user-app")]), headers=T.auth())
        with psycopg.connect(pg_db, autocommit=True) as conn:
            # the index's predicate is the query's: the kinds and actors it was written with
            idx = conn.execute("select pg_get_indexdef('ticket_events_person'::regclass)").fetchone()[0]
            for word in kpis.PERSON_KINDS + kpis.SYSTEM_ACTORS:
                assert f"'{word}'" in idx, (word, idx)
            [(tid,)] = conn.execute("select id from tickets").fetchall()
            conn.execute("""insert into ticket_events (ticket_id, kind, actor, at)
                            select %s, 'alert_attached', 'alertmanager', now() + g * interval '1 ms'
                            from generate_series(1, 50000) g""", (tid,))
            conn.execute("insert into ticket_events (ticket_id, kind, actor, at) values "
                         "(%s, 'acknowledged', 'alice', now() + interval '1 minute')", (tid,))
            conn.execute("analyze ticket_events")
            sql = kpis._RESPONSE.format(attempt="null")
            p = {"start": "-infinity", "now": "infinity"}
            plan = conn.execute("explain (format json) " + sql, p).fetchone()[0]
            assert "ticket_events_person" in str(plan), plan
            n, mean = conn.execute(sql, p).fetchone()
            assert n == 1 and mean == pytest.approx(60, abs=5)
        assert rdb.MIGRATIONS[-1][0] >= 8
    finally:
        close_app(app)
