"""PostgreSQL helpers shared by every component: a server URL with another database, and
creating a database when it is missing."""
from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql


class PostgresUnavailable(RuntimeError):
    pass


def ensure_database(url: str, name: str, timeout: float = 5) -> str:
    """Create database `name` on the server of `url` when missing; return its URL.

    Raises PostgresUnavailable with a clear message when no server answers.
    """
    info = psycopg.conninfo.conninfo_to_dict(url)
    admin = dict(info, dbname=info.get("dbname") or "postgres")
    if admin["dbname"] == name:
        admin["dbname"] = "postgres"
    try:
        with psycopg.connect(psycopg.conninfo.make_conninfo(**admin), autocommit=True,
                             connect_timeout=int(timeout)) as c:
            exists = c.execute("select 1 from pg_database where datname = %s", (name,)).fetchone()
            if not exists:
                c.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    except psycopg.OperationalError as exc:
        host = info.get("host", "localhost")
        port = info.get("port", "5432")
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PostgresUnavailable(f"no PostgreSQL server answers at {host}:{port} ({first})") from None
    return with_dbname(url, name)


def with_dbname(url: str, name: str) -> str:
    """The same server URL with another database name."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))
