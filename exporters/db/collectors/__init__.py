"""The database exporter's collectors, one area per module (as postgres_exporter's collector/*.go).

Each module defines a `Collector` subclass (exporters/db/collectors/base.py): a ``name``
(the `collector` label of `opsstack_db_collector_success` and `..._duration_seconds`), a
``scope`` (server-wide, own connection, or per database), ``enabled(spec, dbc)`` and
``collect(q, scope) -> Families`` (``spec`` and ``dbc``: the config views of the target and of
the exporters.db section). The executor (exporters/db/executor.py) runs every enabled
one per target, isolated from the others.

COLLECTORS is the order they run in: server-wide (live) collectors in this order on the
server's connection (`server` first: the target is down without it; `databases` before `activity`,
`server` before `replication`), per-database ones in this order on each database
(`indexes` before `tables`).
"""
from __future__ import annotations

from exporters.db.collectors.activity import ActivityCollector
from exporters.db.collectors.archiver import ArchiverCollector
from exporters.db.collectors.backup import BackupCollector
from exporters.db.collectors.base import DATABASE, OWN, SERVER, Collector, Queries, QueryFailed, Scope
from exporters.db.collectors.bgwriter import BgwriterCollector
from exporters.db.collectors.databases import DatabasesCollector
from exporters.db.collectors.indexes import IndexesCollector
from exporters.db.collectors.locks import LocksCollector
from exporters.db.collectors.partitions import PartitionsCollector
from exporters.db.collectors.pgbouncer import PgbouncerCollector
from exporters.db.collectors.replication import ReplicationCollector
from exporters.db.collectors.retention import RetentionCollector
from exporters.db.collectors.server import ServerCollector
from exporters.db.collectors.settings import SettingsCollector
from exporters.db.collectors.statements import StatementsCollector
from exporters.db.collectors.tables import TablesCollector

COLLECTORS: tuple[type[Collector], ...] = (
    # server-wide, on the server's connection, in this order
    ServerCollector, DatabasesCollector, ActivityCollector, LocksCollector,
    BgwriterCollector, ArchiverCollector, ReplicationCollector, BackupCollector, PgbouncerCollector,
    # in the background, on a connection of their own
    SettingsCollector, StatementsCollector,
    # per database, in this order
    IndexesCollector, TablesCollector, PartitionsCollector, RetentionCollector,
)

__all__ = ["COLLECTORS", "Collector", "Queries", "QueryFailed", "Scope", "SERVER", "OWN", "DATABASE"]
