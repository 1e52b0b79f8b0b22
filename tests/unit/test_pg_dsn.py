"""core.pg.with_dbname: one helper for URLs and key=value conninfo (no server needed)."""
from psycopg import conninfo

from core.pg import with_dbname


def parsed(dsn):
    return conninfo.conninfo_to_dict(dsn)


def test_url_keeps_user_password_host_port_and_query():
    out = with_dbname("postgresql://alice:s3cr%40t@db.example:6432/app?sslmode=require&application_name=x", "other")
    assert out == "postgresql://alice:s3cr%40t@db.example:6432/other?sslmode=require&application_name=x"
    assert parsed(out) == {"user": "alice", "password": "s3cr@t", "host": "db.example", "port": "6432",
                           "dbname": "other", "sslmode": "require", "application_name": "x"}


def test_url_without_path_or_with_dbname_parameter():
    assert with_dbname("postgresql://postgres@127.0.0.1:5432", "x") == "postgresql://postgres@127.0.0.1:5432/x"
    out = with_dbname("postgres://u@h/a?dbname=a&sslmode=disable", "b")
    assert parsed(out)["dbname"] == "b" and parsed(out)["sslmode"] == "disable"


def test_url_unix_socket_hosts():
    out = with_dbname("postgresql://postgres@%2Fvar%2Frun%2Fpostgresql/app", "other")
    assert parsed(out) == {"user": "postgres", "host": "/var/run/postgresql", "dbname": "other"}
    out = with_dbname("postgresql:///app?host=/tmp/pg%20sock&port=5433", "other")
    assert parsed(out) == {"host": "/tmp/pg sock", "port": "5433", "dbname": "other"}


def test_url_database_name_is_encoded():
    out = with_dbname("postgresql://u@h/app", "we ird/db?")
    assert parsed(out)["dbname"] == "we ird/db?"


def test_conninfo_keeps_every_key_and_quotes_values():
    out = with_dbname("host=/var/run/postgresql port=5433 user=bob password='p w\\'x' dbname=app sslmode=disable",
                      "other db")
    assert parsed(out) == {"host": "/var/run/postgresql", "port": "5433", "user": "bob", "password": "p w'x",
                           "dbname": "other db", "sslmode": "disable"}
    assert not out.startswith("postgres")


def test_conninfo_without_dbname_and_empty():
    assert parsed(with_dbname("host=127.0.0.1 user=postgres", "x")) == {"host": "127.0.0.1", "user": "postgres",
                                                                       "dbname": "x"}
    assert parsed(with_dbname("", "x")) == {"dbname": "x"}
