"""The database faults of the demo's backups and replica (demo/backups.py, docs/demo.md) fire
their alerts on the native stack and heal:

- replica-lag (replay paused on the streaming replica while the primary writes) ->
  PostgresReplicationLagHigh (the DB exporter's warning) and ReplicaLagHigh (behind by more than
  the RPO: a failover would lose more than it);
- backup-stale (`pgbackrest stop`: every archive-push and backup fails) -> PostgresWalArchiveFailing
  (the recovery point stops moving), which the first successful archive after heal ends.

The fast settings (tests/e2e/conftest.py) shorten the thresholds: a replication lag of 10s, an RPO
of 20s, `for:` of 3s. Remediation is switched off meanwhile (the kill switch)."""
from __future__ import annotations

import pytest

from tests.support.harness import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def db_stack(native_stack):
    if not native_stack.resolved["runtime"]["embedded_database"]:
        pytest.skip("the demo's replica and pgBackRest repository belong to the embedded database")
    r = native_stack.api("PUT", "/api/v1/remediation/kill-switch", json={"enabled": True})
    assert r.status_code == 200, r.text
    try:
        yield native_stack
    finally:
        native_stack.cli("demo", "heal", "--kind", "replica-lag", check=False)
        native_stack.cli("demo", "heal", "--kind", "backup-stale", check=False)
        native_stack.api("PUT", "/api/v1/remediation/kill-switch", json={"enabled": False})


def test_replica_lag_fires_both_lag_alerts_and_heal_ends_them(db_stack):
    names = ("PostgresReplicationLagHigh", "ReplicaLagHigh")
    assert not [n for n in names if db_stack.firing_alerts(n)], "lag alerts before the fault"
    res = db_stack.cli("demo", "fault", "replica-lag", "--duration", "10m")
    assert "replica-lag injected" in res.stdout, res.stdout
    for name in names:
        alerts = wait_for(lambda n=name: db_stack.firing_alerts(n), timeout=240, interval=1, what=f"{name} firing")
        assert alerts[0]["labels"].get("replica"), alerts
    db_stack.cli("demo", "heal", "--kind", "replica-lag")
    wait_for(lambda: not any(db_stack.firing_alerts(n) for n in names), timeout=240, interval=1,
             what="the lag alerts end after heal")


def test_backup_stale_fires_wal_archive_failing_and_heal_ends_it(db_stack):
    assert not db_stack.firing_alerts("PostgresWalArchiveFailing"), "archiving fails before the fault"
    res = db_stack.cli("demo", "fault", "backup-stale", "--duration", "10m")
    assert "backup-stale injected" in res.stdout, res.stdout
    # the next segment (archive_timeout, 60s, or sooner) fails to archive
    wait_for(lambda: db_stack.firing_alerts("PostgresWalArchiveFailing"), timeout=300, interval=1,
             what="PostgresWalArchiveFailing firing")
    db_stack.cli("demo", "heal", "--kind", "backup-stale")
    wait_for(lambda: not db_stack.firing_alerts("PostgresWalArchiveFailing"), timeout=240, interval=1,
             what="PostgresWalArchiveFailing ends after heal (pg_switch_wal archives at once)")
