"""Alert labels cannot steer a playbook outside what it may act on (issue 10, path traversal).

An alert whose ``service`` was ``../../../../tmp/x`` made the shipped disk-filling playbook run
``find <run_dir>/demo-volumes/../../../../tmp/x ... -delete`` and delete files outside the demo
volumes. Here the real receiver (real PostgreSQL, the shipped demo playbooks, the command backend
running the real ``find``) gets such alerts through its webhook: the canary files that the
traversal would hit survive, the run is recorded as ``refused``, the ticket says why, and the
ticket still goes on to people. A valid service is cleaned as before (the control).
"""
from __future__ import annotations

import time

import psycopg
import pytest
from psycopg.rows import dict_row

from core.procs import free_port
from tests.support import receiver as T
from webhook_receiver.app import close_app, create_app

pytestmark = pytest.mark.integration

SERVICES = ["gate-management", "user-app", "event-management", "integrated-platform"]
REGIONS = ["seoul", "singapore", "tokyo"]


@pytest.fixture
def world(tmp_path):
    """A run folder with demo volumes, and a victim folder outside it holding files the
    disk-filling cleanup would delete (fill-*.bin) if a label could point it there."""
    run_dir = tmp_path / "run"
    for s in SERVICES:
        (run_dir / "demo-volumes" / s).mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.mkdir()
    canaries = [victim / "fill-00001.bin", victim / "fill-canary.bin"]
    for c in canaries:
        c.write_bytes(b"precious")
    return run_dir, victim, canaries


@pytest.fixture
def receiver(pg_db, world):
    run_dir, _victim, _c = world
    dead = free_port()  # the demo admin hooks (2nd action) do not answer: only the command matters
    ports = {s: {"admin": dead, **{r: dead for r in REGIONS}} for s in SERVICES}
    cfg = T.config(pg_db, stack={"run_dir": str(run_dir)},
                   demo={"enabled": True, "ports": ports},
                   enrichment={"enabled": False},
                   remediation={"verify_window": "0.2s", "verify_interval": "0.05s", "action_timeout": "5s"})
    app = create_app(cfg)
    yield app
    close_app(app)


def rows(db, sql, *args):
    with psycopg.connect(db, row_factory=dict_row) as c:
        return c.execute(sql, args).fetchall()


def fire(app, db, alertname, **labels) -> dict:
    """Post the alert through the webhook; wait for its remediation run to finish; return it."""
    a = T.alert(alertname, **labels)
    r = app.test_client().post("/webhook/alertmanager", json=T.payload([a]), headers=T.auth())
    assert r.status_code == 200, r.get_json()
    deadline = time.monotonic() + 60
    while True:
        done = rows(db, "select * from remediation_runs where status not in ('pending', 'running')")
        if done:
            return done[0]
        assert time.monotonic() < deadline, rows(db, "select * from remediation_runs")
        time.sleep(0.1)


def traversal_to(run_dir, victim) -> str:
    """A relative path from <run_dir>/demo-volumes to the victim folder ('../../..' enough to reach /)."""
    depth = len((run_dir / "demo-volumes").resolve().parts)
    return "../" * depth + str(victim.resolve()).lstrip("/")


ATTACKS = {
    "service-traversal": ("ServiceDiskAlmostFull", lambda run_dir, victim: {"service": traversal_to(run_dir, victim)}),
    "service-shell": ("ServiceDiskAlmostFull", lambda run_dir, victim: {
        "service": f"$(touch {victim}/pwned)`touch {victim}/pwned2`;rm -f {victim}/fill-canary.bin"}),
    "region-traversal": ("CacheHitRatioLow", lambda run_dir, victim: {
        "service": "user-app", "region": "../" * 8 + str(victim.resolve()).lstrip("/")}),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_a_label_cannot_point_a_playbook_outside_its_targets(attack, receiver, world, pg_db):
    run_dir, victim, canaries = world
    alertname, make = ATTACKS[attack]
    labels = make(run_dir, victim)
    run = fire(receiver, pg_db, alertname, **labels)

    # nothing outside the demo volumes was touched, nothing was run by a shell
    assert all(c.read_bytes() == b"precious" for c in canaries)
    assert sorted(p.name for p in victim.iterdir()) == sorted(c.name for c in canaries)
    # the run is recorded as refused, with no action attempted
    assert run["status"] == "refused", run
    assert "refused" in run["reason"] and ("not a service" in run["reason"] or "not a region" in run["reason"])
    assert rows(pg_db, "select * from remediation_attempts") == []
    # the ticket says why, and goes on to people (escalated now, not waiting on automation)
    [t] = rows(pg_db, "select * from tickets")
    ev = [e for e in rows(pg_db, "select * from ticket_events where ticket_id = %s order by id", t["id"])
          if e["kind"] == "remediation"]
    assert ev and ev[0]["details"]["status"] == "refused" and "refused" in ev[0]["details"]["reason"], ev
    assert run["escalated"] is True
    assert t["level"] >= 2


def test_a_known_service_is_still_cleaned_and_only_inside_its_volume(receiver, world, pg_db):
    run_dir, victim, canaries = world
    vol = run_dir / "demo-volumes" / "event-management"
    (vol / "fill-00001.bin").write_bytes(b"x" * 1024)
    (vol / "keep.db").write_bytes(b"data")
    run = fire(receiver, pg_db, "ServiceDiskAlmostFull", service="event-management")
    assert run["status"] != "refused", run
    cleanup = rows(pg_db, "select * from remediation_attempts where action = 'cleanup'")
    assert cleanup and cleanup[0]["status"] == "ok", cleanup
    assert cleanup[0]["command"]["argv"][1] == str(vol.resolve())
    assert not (vol / "fill-00001.bin").exists() and (vol / "keep.db").exists()
    assert all(c.read_bytes() == b"precious" for c in canaries)
