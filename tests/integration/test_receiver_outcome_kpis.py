"""Outcome KPIs (webhook_receiver/kpis.py) from seeded ticket rows in a scratch database.

Every figure is computed by hand below from the rows the test writes; the receiver's /metrics
must show the same.
"""
from __future__ import annotations

import pytest
from psycopg.types.json import Jsonb

from tests.support import receiver as T
from webhook_receiver.app import close_app, create_app
from webhook_receiver.db import connect

pytestmark = pytest.mark.integration

PLATFORM = {"services": [{"name": "shop"}, {"name": "search"}]}
DAY = 86400.0



@pytest.fixture
def app(pg_db):
    a = create_app(T.config(pg_db, platform=PLATFORM, enrichment={"enabled": False}))
    yield a
    close_app(a)


def ticket(conn, n: int, service: str, alertname: str, opened: str, resolved: str | None = None,
           resolved_by: str = "alertmanager") -> int:
    """A ticket opened/resolved at SQL times relative to the base time (``b``)."""
    labels = {"alertname": alertname, "service": service}
    return conn.execute(
        f"""insert into tickets (incident_key, fingerprint, status, alertname, service, labels, starts_at, opened_at,
                                 resolved_at, resolved_by)
            values (%(k)s, %(k)s, %(st)s, %(a)s, %(s)s, %(l)s, {opened}, {opened},
                    {resolved or 'null'}, %(rb)s) returning id""",
        {"k": f"fp-{n}", "st": "resolved" if resolved else "open", "a": alertname, "s": service,
         "l": Jsonb(labels), "rb": resolved_by if resolved else None}).fetchone()["id"]


def episode(conn, tid: int, fp: str, alertname: str, service: str, starts: str, ends: str | None) -> None:
    conn.execute(f"""insert into ticket_alerts (ticket_id, fingerprint, starts_at, ends_at, status, labels)
                     values (%s, %s, {starts}, {ends or 'null'}, %s, %s)""",
                 (tid, fp, "resolved" if ends else "firing", Jsonb({"alertname": alertname, "service": service})))


def event(conn, tid: int, kind: str, actor: str, at: str) -> None:
    conn.execute(f"insert into ticket_events (ticket_id, kind, actor, at) values (%s, %s, %s, {at})", (tid, kind, actor))


def attempt(conn, tid: int, at: str, dry: bool = False) -> None:
    run = conn.execute("""insert into remediation_runs (ticket_id, playbook, target, alertname, fingerprint,
                              alert_starts_at, status, dry_run) values (%s, 'pb', %s, 'A', %s, now(), %s, %s)
                          returning id""", (tid, f"t{tid}", f"fp{tid}", "dry_run" if dry else "exhausted", dry)).fetchone()
    conn.execute(f"""insert into remediation_attempts (run_id, playbook, target, step, action, backend, operation,
                         dry_run, status, started_at, finished_at) values
                     (%s, 'pb', %s, 1, 'a', 'http', 'request', %s, %s, {at}, {at})""",
                 (run["id"], f"t{tid}", dry, "dry_run" if dry else "ok"))


def test_kpis_equal_hand_computed_values(app, pg_db):
    b = "(now() - interval '5 days')"
    with connect(pg_db, autocommit=True) as conn:
        # the receiver's database began 10 days ago: the 30-day window covers 10 days of it
        conn.execute("update ticket_schema_versions set applied_at = now() - interval '10 days'")
        # T1 shop ServiceDown 10 min; a playbook acted at +1m, the alert resolved, no person -> automation;
        # the runner's own comment is not a person's
        t1 = ticket(conn, 1, "shop", "ServiceDown", b, f"{b} + interval '10 minutes'")
        episode(conn, t1, "fp-1", "ServiceDown", "shop", b, f"{b} + interval '10 minutes'")
        attempt(conn, t1, f"{b} + interval '1 minute'")
        event(conn, t1, "comment", "remediation", f"{b} + interval '2 minutes'")
        # T2 shop ServiceDown, two overlapping alerts (0-30 min and 10-30 min: 30 min down); a
        # playbook acted at +1m but alice acknowledged at +2m -> people
        o2 = f"({b} + interval '1 day')"
        t2 = ticket(conn, 2, "shop", "ServiceDown", o2, f"{o2} + interval '30 minutes'")
        episode(conn, t2, "fp-2a", "ServiceDown", "shop", o2, f"{o2} + interval '30 minutes'")
        episode(conn, t2, "fp-2b", "ServiceDown", "shop", f"{o2} + interval '10 minutes'", f"{o2} + interval '30 minutes'")
        attempt(conn, t2, f"{o2} + interval '1 minute'")
        event(conn, t2, "acknowledged", "alice", f"{o2} + interval '2 minutes'")
        # T3 search cache alert (not a down alert), resolved by bob by hand at +20m -> people
        o3 = f"({b} + interval '2 days')"
        t3 = ticket(conn, 3, "search", "CacheHitRatioLow", o3, f"{o3} + interval '20 minutes'", resolved_by="bob")
        episode(conn, t3, "fp-3", "CacheHitRatioLow", "search", o3, f"{o3} + interval '20 minutes'")
        event(conn, t3, "resolved", "bob", f"{o3} + interval '20 minutes'")
        # T4 search, open for an hour, nobody answered
        t4 = ticket(conn, 4, "search", "ServiceErrorRatioHigh", "(now() - interval '1 hour')")
        # T5 shop, only a dry-run plan, the alert resolved after 5 min -> people (no playbook acted)
        o5 = f"({b} + interval '3 days')"
        t5 = ticket(conn, 5, "shop", "ServiceMemoryHigh", o5, f"{o5} + interval '5 minutes'")
        attempt(conn, t5, f"{o5} + interval '1 minute'", dry=True)
        # T0: long before the receiver began: outside every KPI
        t0 = ticket(conn, 0, "shop", "ServiceDown", "(now() - interval '40 days')", "(now() - interval '39 days')")
        episode(conn, t0, "fp-0", "ServiceDown", "shop", "(now() - interval '40 days')", "(now() - interval '39 days')")
        for tid in (t0, t1, t2, t3, t4, t5):
            event(conn, tid, "opened", "alertmanager", f"(select opened_at from tickets where id = {tid})")

    m = T.samples(T.reader(app.test_client()).get("/metrics").get_data(as_text=True))
    observed = 10 * DAY
    assert m[("opsstack_kpi_observed_seconds", ())] == pytest.approx(observed, rel=1e-5)
    # uptime: shop down 10 + 30 min; search had no down alert
    assert m[("opsstack_kpi_uptime_ratio", (("service", "shop"),))] == pytest.approx(1 - 2400 / observed, rel=1e-6)
    assert m[("opsstack_kpi_uptime_ratio", (("service", "search"),))] == 1.0
    # MTTR over T1, T2, T3, T5: (600 + 1800 + 1200 + 300) / 4
    assert m[("opsstack_kpi_mttr_seconds", ())] == pytest.approx(975)
    assert m[("opsstack_kpi_tickets", (("kpi", "mttr_seconds"),))] == 4
    # MTBF: shop 3 failures over its up time, search 2
    assert m[("opsstack_kpi_mtbf_seconds", (("service", "shop"),))] == pytest.approx((observed - 2400) / 3, rel=1e-5)
    assert m[("opsstack_kpi_mtbf_seconds", (("service", "search"),))] == pytest.approx(observed / 2, rel=1e-5)
    assert m[("opsstack_kpi_tickets", (("kpi", "mtbf_seconds"),))] == 5
    # auto-recovery: T1 of the four resolved
    assert m[("opsstack_kpi_auto_recovery_ratio", ())] == 0.25
    # response: T1 60 s (action), T2 60 s (action before the ack), T3 1200 s (bob), T4 3600 s
    # (still unanswered), T5 300 s (a dry run is no response: it waited until it resolved)
    assert m[("opsstack_kpi_response_seconds", ())] == pytest.approx((60 + 60 + 1200 + 3600 + 300) / 5, rel=1e-4)
    assert m[("opsstack_kpi_tickets", (("kpi", "response_seconds"),))] == 5
    # targets, from alerts.kpi
    assert m[("opsstack_kpi_target", (("kpi", "uptime_ratio"), ("objective", "at_least")))] == 0.999
    assert m[("opsstack_kpi_target", (("kpi", "mttr_seconds"), ("objective", "at_most")))] == 900
    assert m[("opsstack_kpi_target", (("kpi", "mtbf_seconds"), ("objective", "at_least")))] == 720 * 3600
    assert m[("opsstack_kpi_target", (("kpi", "auto_recovery_ratio"), ("objective", "at_least")))] == 0.95
    assert m[("opsstack_kpi_target", (("kpi", "response_seconds"), ("objective", "at_most")))] == 300
    assert m[("opsstack_kpi_window_seconds", ())] == 30 * DAY
    # the same attribution on the automation counter
    assert m[("opsstack_remediation_tickets_resolved_total", (("closed_by", "automation"),))] == 1
    assert m[("opsstack_remediation_tickets_resolved_total", (("closed_by", "people"),))] == 4  # T0 too (all time)


def test_no_tickets_no_division_by_zero(app, pg_db):
    text = T.reader(app.test_client()).get("/metrics").get_data(as_text=True)
    m = T.samples(text)
    # every configured service is up all the time it was watched; the means have no sample
    assert m[("opsstack_kpi_uptime_ratio", (("service", "shop"),))] == 1.0
    assert m[("opsstack_kpi_uptime_ratio", (("service", "search"),))] == 1.0
    for name in ("opsstack_kpi_mttr_seconds", "opsstack_kpi_auto_recovery_ratio", "opsstack_kpi_response_seconds"):
        assert (name, ()) not in m, name
    assert not [k for k in m if k[0] == "opsstack_kpi_mtbf_seconds"]
    assert m[("opsstack_kpi_tickets", (("kpi", "mttr_seconds"),))] == 0
    assert m[("opsstack_kpi_target", (("kpi", "mttr_seconds"), ("objective", "at_most")))] == 900
    assert "nan" not in text.lower()


def test_the_window_and_targets_come_from_the_config(pg_db):
    a = create_app(T.config(pg_db, platform=PLATFORM, enrichment={"enabled": False},
                            receiver={"kpis": {"window": "7d"}}, alerts={"kpi": {"mttr": "1h"}}))
    try:
        with connect(pg_db, autocommit=True) as conn:
            conn.execute("update ticket_schema_versions set applied_at = now() - interval '10 days'")
            tid = ticket(conn, 1, "shop", "ServiceDown", "(now() - interval '8 days')", "(now() - interval '7 days')")
            event(conn, tid, "opened", "alertmanager", "(now() - interval '8 days')")
        m = T.samples(T.reader(a.test_client()).get("/metrics").get_data(as_text=True))
        assert m[("opsstack_kpi_window_seconds", ())] == 7 * DAY
        assert m[("opsstack_kpi_observed_seconds", ())] == pytest.approx(7 * DAY, rel=1e-5)
        assert m[("opsstack_kpi_target", (("kpi", "mttr_seconds"), ("objective", "at_most")))] == 3600
        assert m[("opsstack_kpi_tickets", (("kpi", "mttr_seconds"),))] == 0  # resolved 7 days ago + a moment
    finally:
        close_app(a)


def test_one_failure_in_a_young_window_is_no_mtbf_verdict(app, pg_db):
    """A stack a day old with one incident must not read "MTBF 1 day" (KpiMtbfLow would page); a
    second failure, or the whole window watched, gives the figure."""
    with connect(pg_db, autocommit=True) as conn:
        conn.execute("update ticket_schema_versions set applied_at = now() - interval '1 day'")
        t1 = ticket(conn, 1, "shop", "ServiceDown", "(now() - interval '2 hours')", "(now() - interval '1 hour')")
        event(conn, t1, "opened", "alertmanager", "(now() - interval '2 hours')")
    m = T.samples(T.reader(app.test_client()).get("/metrics").get_data(as_text=True))
    assert not [k for k in m if k[0] == "opsstack_kpi_mtbf_seconds"]
    assert m[("opsstack_kpi_tickets", (("kpi", "mtbf_seconds"),))] == 1
    with connect(pg_db, autocommit=True) as conn:
        t2 = ticket(conn, 2, "shop", "ServiceDown", "(now() - interval '30 minutes')")
        event(conn, t2, "opened", "alertmanager", "(now() - interval '30 minutes')")
    m = T.samples(T.reader(app.test_client()).get("/metrics").get_data(as_text=True))
    assert ("opsstack_kpi_mtbf_seconds", (("service", "shop"),)) in m
    with connect(pg_db, autocommit=True) as conn:  # the whole 30-day window watched: one failure is a figure
        conn.execute("delete from tickets where id = %s", (t2,))
        conn.execute("update ticket_schema_versions set applied_at = now() - interval '40 days'")
    m = T.samples(T.reader(app.test_client()).get("/metrics").get_data(as_text=True))
    assert ("opsstack_kpi_mtbf_seconds", (("service", "shop"),)) in m
