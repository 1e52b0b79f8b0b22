"""Migrations: in code, idempotent, safe when several processes start at once."""
from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import psycopg
import pytest
import yaml

from webhook_receiver.db import MIGRATIONS, migrate

pytestmark = pytest.mark.integration


def test_concurrent_and_repeated_migrations(pg_db):
    errors, barrier = [], threading.Barrier(4)

    def run():
        try:
            with psycopg.connect(pg_db, autocommit=True) as c:
                barrier.wait()
                migrate(c)
                migrate(c)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
    ts = [threading.Thread(target=run) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert errors == []
    with psycopg.connect(pg_db) as c:
        versions = [r[0] for r in c.execute("select version from ticket_schema_versions order by 1").fetchall()]
    assert versions == [v for v, _ in MIGRATIONS]


def test_cli_migrate_and_hash_password(pg_db, tmp_path):
    cfg = tmp_path / "opsstack.yaml"
    cfg.write_text(yaml.safe_dump({"database": {"url": pg_db}}))
    exe = str(Path(sys.executable).with_name("opsstack"))
    res = subprocess.run([exe, "-c", str(cfg), "receiver", "migrate"], capture_output=True, text=True)
    assert res.returncode == 0 and "version" in res.stdout, res.stderr
    res = subprocess.run([exe, "receiver", "hash-password", "--password", "pw"], capture_output=True, text=True)
    assert res.returncode == 0
    from werkzeug.security import check_password_hash

    assert check_password_hash(res.stdout.strip(), "pw")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"database": {"url": "postgresql://postgres@127.0.0.1:1/none"}}))
    res = subprocess.run([exe, "-c", str(bad), "receiver", "migrate"], capture_output=True, text=True)
    assert res.returncode == 1 and "Traceback" not in res.stderr and "migrate failed" in res.stderr


def test_tickets_from_before_incidents_become_incidents_of_their_fingerprint(pg_db):
    """Step 5: a ticket was one per fingerprint; its incident key is that fingerprint, its counts
    come from its episodes, and the group model then resolves it when its alert resolves."""
    from core.migrations import apply
    from tests.support import receiver as T
    from webhook_receiver.app import close_app, create_app
    from webhook_receiver.db import MIGRATE_LOCK

    a = T.alert()
    with psycopg.connect(pg_db, autocommit=True) as c:
        apply(c, [m for m in MIGRATIONS if m[0] < 5], "ticket_schema_versions", MIGRATE_LOCK, "receiver")
        tid = c.execute("insert into tickets (fingerprint, status, alertname, starts_at) "
                        "values (%s, 'open', 'ServiceDown', %s) returning id",
                        (a["fingerprint"], a["startsAt"])).fetchone()[0]
        c.execute("insert into ticket_alerts (ticket_id, fingerprint, starts_at, status) values (%s, %s, %s, 'firing')",
                  (tid, a["fingerprint"], a["startsAt"]))
        migrate(c)
        assert c.execute("select incident_key, alert_count, firing_count from tickets").fetchall() == \
            [(a["fingerprint"], 1, 1)]
        idx = {r[0] for r in c.execute("select indexname from pg_indexes where tablename = 'tickets'").fetchall()}
        assert "tickets_one_active_incident" in idx and "tickets_one_active" not in idx
    app = create_app(T.config(pg_db))  # incident_by: group
    try:
        r = app.test_client().post("/webhook/alertmanager", json=T.payload([T.resolved(a)]), headers=T.auth())
        assert r.get_json()["resolved"] == [tid]
    finally:
        close_app(app)
