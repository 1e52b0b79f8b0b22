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
