"""`database:` where tickets, forecasts and the demo schema live."""
import re

from core.spec import ConfigError, Field


def _stanza(v):
    if re.fullmatch(r"[a-z][a-z0-9_-]{0,62}", v):
        return None
    return f"must be lowercase letters, digits, '-' or '_', got {v!r}"


SECTION = {
    # A libpq URL. OPSSTACK_DATABASE_URL overrides it. null = the embedded cluster that
    # `opsstack up` runs in <run_dir>/postgres (initdb from the installed server binaries).
    # (a password in it is never shown: kind "url" hides it in logs and `opsstack config`)
    "url": Field("url", None, nullable=True),
    "name": Field("str", "opsstack", "database created when missing"),
    "embedded": {
        "preload": Field("list", ["pg_stat_statements", "hypopg", "pg_qualstats"]),
        "max_connections": Field("int", 100, minimum=10),
        # true: every commit is flushed to disk (fsync on), so a payload the receiver acked
        # survives a power loss. false: faster commits, for throw-away test and bench stacks.
        "durable": Field("bool", True, "flush commits to disk (fsync)"),
        # WAL archiving and scheduled pgBackRest backups into <run_dir>/pgbackrest, the restore
        # verification, and a streaming replica (demo/backups.py; docs/operations.md "Backups")
        "backup": {
            "enabled": Field("bool", True, "archive WAL and take scheduled backups into <run_dir>/pgbackrest"),
            "stanza": Field("str", "opsstack", check=_stanza),
            "archive_timeout": Field("duration", "60s", minimum=5,
                                     help="a WAL segment is archived at least this often when anything was written"),
            "full_interval": Field("duration", "1d", minimum=60),
            "diff_interval": Field("duration", "6h", minimum=0, help="0 = no diff backups"),
            "incr_interval": Field("duration", "1h", minimum=0,
                                   help="0 = no incr backups; keep the newest backup younger than "
                                        "alerts.security.backup_max_age (the RPO is kept by WAL archiving)"),
            "retention_full": Field("int", 2, minimum=1, maximum=100),
            "retention_diff": Field("int", 2, minimum=1, maximum=100),
            "start_delay": Field("duration", "30s", minimum=0,
                                 help="the first backup after a start waits this long (not competing with the "
                                      "stack's own start for the CPU)"),
            "verify_interval": Field("duration", "1h", minimum=0,
                                     help="`opsstack security verify-restore` this often; 0 = never"),
        },
        "replica": {
            "enabled": Field("bool", True, "a streaming replica (pg_basebackup -R) on stack.ports.postgres_replica"),
        },
    },
}


def check(cfg):
    b = cfg["database"]["embedded"]["backup"]
    if b["diff_interval"] and b["diff_interval"] >= b["full_interval"]:
        raise ConfigError("database.embedded.backup.diff_interval", "must be shorter than full_interval")
    if b["incr_interval"] and b["incr_interval"] >= b["full_interval"]:
        raise ConfigError("database.embedded.backup.incr_interval", "must be shorter than full_interval")
