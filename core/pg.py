"""PostgreSQL helpers shared by every component: the one ``connect``, a server address with
another database (``with_dbname``, for URLs and key=value conninfo alike), and creating a
database when it is missing."""
from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import psycopg
from psycopg import conninfo, sql


class PostgresUnavailable(RuntimeError):
    pass


def connect(url: str, timeout: float = 5.0, **kwargs: Any) -> psycopg.Connection:
    """A psycopg connection to ``url`` (URL or conninfo) that gives up after ``timeout`` seconds
    (at least 1: libpq counts whole seconds). Other keyword arguments go to psycopg.connect
    (autocommit, row_factory, application_name, libpq parameters...)."""
    return psycopg.connect(url, connect_timeout=max(1, int(round(timeout))), **kwargs)


def ensure_database(url: str, name: str, timeout: float = 5) -> str:
    """Create database `name` on the server of `url` when missing; return its URL.

    Raises PostgresUnavailable with a clear message when no server answers.
    """
    info = conninfo.conninfo_to_dict(url)
    admin = dict(info, dbname=info.get("dbname") or "postgres")
    if admin["dbname"] == name:
        admin["dbname"] = "postgres"
    try:
        with connect(conninfo.make_conninfo(**admin), timeout, autocommit=True) as c:
            exists = c.execute("select 1 from pg_database where datname = %s", (name,)).fetchone()
            if not exists:
                c.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    except psycopg.OperationalError as exc:
        host = info.get("host", "localhost")
        port = info.get("port", "5432")
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PostgresUnavailable(f"no PostgreSQL server answers at {host}:{port} ({first})") from None
    return with_dbname(url, name)


def is_url(dsn: str) -> bool:
    return dsn.startswith(("postgresql://", "postgres://"))


def with_dbname(dsn: str, name: str) -> str:
    """The same server address with database ``name``, in the form it came in.

    A URL (postgresql://user:pw@host:port/db?opts) keeps its user, password, host (a unix
    socket too, %2F-encoded or as ?host=) and query string; only the path changes, and a
    ``dbname`` query parameter (which libpq prefers to the path) is replaced as well. A
    key=value conninfo string keeps every other key; values are re-quoted as libpq needs.
    """
    if is_url(dsn):
        parts = urlsplit(dsn)
        query = parts.query
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k == "dbname" for k, _ in pairs):
            query = urlencode([(k, name if k == "dbname" else v) for k, v in pairs], quote_via=quote, safe="/")
        # by hand: urlunsplit drops the '//' of an empty host (postgresql:///db?host=/sock)
        return f"{parts.scheme}://{parts.netloc}/{quote(name, safe='')}" + (f"?{query}" if query else "")
    info = conninfo.conninfo_to_dict(dsn)
    info["dbname"] = name
    return conninfo.make_conninfo(**info)
