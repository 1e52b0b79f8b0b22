"""Shared fixtures: real PostgreSQL, Prometheus and Alertmanager on loopback.

PostgreSQL: OPSSTACK_TEST_DATABASE_URL, else the machine's server on 127.0.0.1:5432
when it answers, else an embedded cluster started here. Every test that writes gets a
fresh database of its own (pg_db) that is dropped afterwards.
"""
from __future__ import annotations

import os
import uuid

import psycopg
import pytest
from psycopg import sql

from core.pg import with_dbname
from stack.pgcluster import Cluster
from core.procs import free_port


def _answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2) as c:
            c.execute("select 1")
        return True
    except psycopg.OperationalError:
        return False


@pytest.fixture(scope="session")
def pg_cluster(tmp_path_factory):
    """An embedded cluster of our own (pg_stat_statements and hypopg preloaded)."""
    c = Cluster(tmp_path_factory.mktemp("pg") / "data", port=free_port())
    c.start()
    yield c
    c.stop()


@pytest.fixture(scope="session")
def pg_server_url(request, tmp_path_factory):
    """Admin URL (database 'postgres') of a server the tests may create databases on."""
    env = os.environ.get("OPSSTACK_TEST_DATABASE_URL")
    if env:
        return env
    local = "postgresql://postgres@127.0.0.1:5432/postgres"
    if _answers(local):
        return local
    return request.getfixturevalue("pg_cluster").url()


def _create_db(admin_url: str, prefix: str = "opsstack_test") -> tuple[str, str]:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as c:
        c.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    return name, with_dbname(admin_url, name)


def _drop_db(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as c:
        c.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


@pytest.fixture
def pg_db(pg_server_url):
    """URL of a fresh, empty database, dropped after the test."""
    name, url = _create_db(pg_server_url)
    yield url
    _drop_db(pg_server_url, name)


@pytest.fixture
def make_pg_db(pg_server_url):
    """Factory for more fresh databases in one test."""
    made = []

    def make(prefix: str = "opsstack_test") -> str:
        name, url = _create_db(pg_server_url, prefix)
        made.append(name)
        return url

    yield make
    for name in made:
        _drop_db(pg_server_url, name)
