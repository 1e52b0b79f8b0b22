"""The database the stack uses: OPSSTACK_DATABASE_URL's server, created when missing, or a clear error."""
from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg import sql

from core.pg import PostgresUnavailable, ensure_database, with_dbname
from core.procs import free_port

pytestmark = pytest.mark.integration


def test_creates_the_database_when_missing_and_is_idempotent(pg_server_url):
    name = f"opsstack_ensure_{uuid.uuid4().hex[:8]}"
    try:
        url = ensure_database(pg_server_url, name)
        assert url == with_dbname(pg_server_url, name)
        assert ensure_database(pg_server_url, name) == url  # second time: no error
        with psycopg.connect(url) as c:
            assert c.execute("select current_database()").fetchone()[0] == name
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as c:
            c.execute(sql.SQL("drop database if exists {}").format(sql.Identifier(name)))


def test_no_server_is_one_clear_message():
    port = free_port()
    with pytest.raises(PostgresUnavailable) as ei:
        ensure_database(f"postgresql://postgres@127.0.0.1:{port}/postgres", "opsstack", timeout=2)
    msg = str(ei.value)
    assert msg.startswith(f"no PostgreSQL server answers at 127.0.0.1:{port}")
    assert "\n" not in msg


def test_embedded_cluster_preloads_extensions(pg_cluster):
    with psycopg.connect(pg_cluster.url(), autocommit=True) as c:
        libs = c.execute("show shared_preload_libraries").fetchone()[0]
        assert "pg_stat_statements" in libs and "hypopg" in libs
        c.execute("create extension if not exists pg_stat_statements")
        c.execute("create extension if not exists hypopg")
