"""`database:` where tickets, forecasts and the demo schema live."""
from core.spec import Field

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
    },
}
