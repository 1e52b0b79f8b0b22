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
