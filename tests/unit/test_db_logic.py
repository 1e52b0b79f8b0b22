"""Database exporter and advisor: the pure parts (no server)."""
from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporters.db import advisor as adv
from exporters.db import logic
from exporters.db.metrics import METRICS, Families
from core.config import ConfigError, defaults, load_data

ROOT = Path(__file__).resolve().parents[2]
UTC = dt.timezone.utc


# ------------------------------------------------------------------ settings and ratios
@pytest.mark.parametrize("row,expected", [
    (("on", None, "bool"), ("", 1.0)),
    (("off", None, "bool"), ("", 0.0)),
    (("100", None, "integer"), ("", 100.0)),
    (("16384", "8kB", "integer"), ("bytes", 16384 * 8192.0)),
    (("4096", "kB", "integer"), ("bytes", 4096 * 1024.0)),
    (("64", "MB", "integer"), ("bytes", 64 * 1024.0 ** 2)),
    (("2000", "ms", "integer"), ("seconds", 2.0)),
    (("60", "s", "integer"), ("seconds", 60.0)),
    (("1", "min", "integer"), ("seconds", 60.0)),
    (("-1", "ms", "integer"), ("seconds", -1.0)),
    (("0.9", None, "real"), ("", 0.9)),
])
def test_setting_values_in_base_units(row, expected):
    assert logic.setting_value(*row) == expected


def test_non_numeric_settings_are_skipped():
    assert logic.setting_value("replica", None, "enum") is None
    assert logic.setting_value("UTC", None, "string") is None
    assert logic.setting_value(None, None, "integer") is None


def test_ratios():
    assert logic.index_usage_ratio(10, 90) == 0.9
    assert logic.index_usage_ratio(0, 0) is None  # never scanned: no ratio rather than 0
    assert logic.weighted_mean(3.0, 6) == 0.5
    assert logic.weighted_mean(0, 0) is None
    assert logic.heavy_seq_scan(50, 5_000_000, 3, 100_000)
    assert not logic.heavy_seq_scan(50, 5_000_000, 500, 100_000)  # index scans dominate
    assert not logic.heavy_seq_scan(50, 1_000, 3, 100_000)        # small table


def test_truncate_collapses_whitespace_and_cuts():
    assert logic.truncate("select  *\n from t", 100) == "select * from t"
    t = logic.truncate("x" * 500, 20)
    assert len(t) == 20 and t.endswith("\u2026")


# ------------------------------------------------------------------ partitions
def test_period_boundaries():
    t = dt.datetime(2026, 12, 31, 23, 59, tzinfo=UTC)
    assert logic.period_start(t, "month") == dt.datetime(2026, 12, 1, tzinfo=UTC)
    assert logic.next_period_start(t, "month") == dt.datetime(2027, 1, 1, tzinfo=UTC)
    assert logic.next_period_start(t, "day") == dt.datetime(2027, 1, 1, tzinfo=UTC)
    assert logic.next_period_start(t, "year") == dt.datetime(2027, 1, 1, tzinfo=UTC)
    wed = dt.datetime(2026, 11, 25, 10, tzinfo=UTC)
    assert logic.period_start(wed, "week") == dt.datetime(2026, 11, 23, tzinfo=UTC)


def test_partition_health():
    now = dt.datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
    day = lambda d: (dt.datetime(2026, 11, d, tzinfo=UTC), dt.datetime(2026, 11, d + 1, tzinfo=UTC))  # noqa: E731
    assert logic.partition_health([day(25), day(26), day(27)], now, "day") == {"current": True, "next": True}
    assert logic.partition_health([day(25), day(26)], now, "day") == {"current": True, "next": False}
    assert logic.partition_health([day(27)], now, "day") == {"current": False, "next": True}
    assert logic.partition_health([(None, None)], now, "month") == {"current": True, "next": True}


def test_parse_range_bound():
    assert logic.parse_range_bound("FOR VALUES FROM ('2026-11-01 00:00:00+00') TO ('2026-12-01 00:00:00+00')") == \
        ("2026-11-01 00:00:00+00", "2026-12-01 00:00:00+00")
    assert logic.parse_range_bound("FOR VALUES FROM (MINVALUE) TO ('2020-01-01')") == (None, "2020-01-01")
    assert logic.parse_range_bound("FOR VALUES FROM (1) TO (100)") == ("1", "100")
    assert logic.parse_range_bound("DEFAULT") is None
    assert logic.parse_range_bound("FOR VALUES IN ('a', 'b')") is None
    assert logic.parse_range_bound("FOR VALUES FROM ('a', 1) TO ('b', 2)") is None


# ------------------------------------------------------------------ advisor, pure parts
def test_param_count():
    assert adv.param_count("select * from t where a = $1 and b in ($2, $10)") == 10
    assert adv.param_count("select 1") == 0


@pytest.mark.parametrize("filt,eq,rng", [
    ("((registrations.event_id = $1) AND (registrations.status = $2))", ["event_id", "status"], []),
    ("((events_1.created_at >= $1) AND (events_1.created_at < $2))", [], ["created_at"]),
    ("(participants.email = $1)", ["email"], []),
    ("((t.a = $1) AND (t.c > $2) AND (t.b <> $3))", ["a"], ["c"]),
    ("((t.status)::text = ANY ($1))", ["status"], []),
    ("(($1 < t.c))", [], ["c"]),
    ('("Mixed Case" = $1)', ["Mixed Case"], []),
])
def test_filter_columns(filt, eq, rng):
    cols = {"event_id", "status", "created_at", "email", "a", "b", "c", "Mixed Case"}
    assert adv.filter_columns(filt, cols) == (eq, rng)


def test_candidate_sets_put_equality_first_then_one_range_column():
    assert adv.candidate_sets(["event_id", "status"], ["created_at"]) == [
        ("event_id", "status", "created_at"), ("event_id", "status"),
        ("event_id",), ("status",), ("created_at",)]
    assert adv.candidate_sets([], ["created_at"]) == [("created_at",)]


def test_ddl_is_concurrent_and_handles_partitions():
    plain = adv.ddl_for("platform", "participants", ["email"], None)
    assert plain == ["CREATE INDEX CONCURRENTLY IF NOT EXISTS participants_email_idx "
                     "ON platform.participants (email);"]
    part = adv.ddl_for("platform", "events", ["created_at"], ["events_2026_11", "events_2026_12"])
    assert part[0] == "CREATE INDEX IF NOT EXISTS events_created_at_idx ON ONLY platform.events (created_at);"
    assert part[1].startswith("CREATE INDEX CONCURRENTLY IF NOT EXISTS events_2026_11_created_at_idx ON platform.events_2026_11")
    assert part[2] == ("ALTER INDEX platform.events_created_at_idx ATTACH PARTITION "
                       "platform.events_2026_11_created_at_idx;")
    assert len(part) == 5
    assert len(adv.index_name("t" * 80, ["c" * 40])) <= 63
    assert adv.qident("Mixed Case") == '"Mixed Case"'


def test_cost_drop_and_qualstats_parsing():
    assert adv.cost_drop(1000, 100) == pytest.approx(0.9)
    assert adv.cost_drop(0, 10) == 0.0
    assert adv.cost_drop(10, 20) == 0.0
    assert adv.parse_qualstats_ddl("CREATE INDEX ON platform.participants USING btree (email)") == \
        ("platform.participants", ["email"])
    assert adv.parse_qualstats_ddl("CREATE INDEX ON public.t USING hash (a)") is None


# ------------------------------------------------------------------ metrics
def test_metric_names_follow_the_conventions():
    for name, (kind, help_, labels) in METRICS.items():
        assert name.startswith("opsstack_db_"), name
        assert re.match(r"^[a-z_:][a-z0-9_:]*$", name), name
        assert (kind == "counter") == name.endswith("_total"), name
        assert help_.strip() and labels and labels[0] == "server", name
        for bad in ("_ms", "_milliseconds", "_percent", "_kb", "_mb"):
            assert not name.endswith(bad), name


def test_every_metric_is_documented():
    doc = (ROOT / "docs" / "metrics.md").read_text()
    missing = [n for n in METRICS if f"`{n}`" not in doc]
    assert not missing, f"docs/metrics.md does not document: {missing}"


def test_fast_rendering_equals_prometheus_client():
    f = Families()
    f.add("opsstack_db_up", ["main"], 1)
    f.add("opsstack_db_xact_commit_total", ["main", "opsstack"], 12345678901)
    f.add("opsstack_db_xact_commit_total", ["main", "other"], 0.5)
    f.add("opsstack_db_cache_hit_ratio", ["main", "opsstack"], float("nan"))
    f.add("opsstack_db_statement_info", ["main", "opsstack", -42, 'select "a\\b"\nfrom t'], 1)
    f.add("opsstack_db_backends", ["main", "x"], None)  # None: no sample
    ours = _samples(f.render())

    class C:
        def collect(self):
            return f.families()

    reg = CollectorRegistry(auto_describe=False)
    reg.register(C())
    theirs = _samples(generate_latest(reg).decode())
    theirs = {k: v for k, v in theirs.items() if not k[0].endswith("_created")}
    assert ours.keys() == theirs.keys()
    for k in ours:
        assert ours[k] == theirs[k] or (ours[k] != ours[k] and theirs[k] != theirs[k])
    assert ("opsstack_db_backends", ()) not in ours


def _samples(text: str) -> dict:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_undeclared_metric_is_a_bug():
    with pytest.raises(KeyError):
        Families().add("opsstack_db_nope", ["main"], 1)


# ------------------------------------------------------------------ config
def test_defaults_and_example():
    dbc = defaults()["exporters"]["db"]
    assert dbc["statement_timeout"] == 2.0 and dbc["statements"]["slow_threshold"] == 2.0
    assert dbc["targets"] == [{"name": "main", "url": None, "databases": [], "pgbouncer_url": None}]
    assert {r["table"]: r["max_age"] for r in dbc["lifecycle"]["retention"]} == {
        "platform.events": 3 * 365 * 86400.0, "platform.gate_logs": 182 * 86400.0}
    assert dbc["advisor"]["min_cost_drop"] == 0.5
    import yaml

    example = yaml.safe_load((ROOT / "opsstack.example.yaml").read_text())
    assert set(example["exporters"]["db"]) == set(dbc)


# backup.source needs its path/query: checked at load, tests/unit/test_db_config.py


@pytest.mark.parametrize("data,key", [
    ({"targets": [{"name": "Bad Name"}]}, "exporters.db.targets[0].name"),
    ({"targets": []}, "exporters.db.targets"),
    ({"statement_timeout": "fast"}, "exporters.db.statement_timeout"),
    ({"advisor": {"min_cost_drop": 1.5}}, "exporters.db.advisor.min_cost_drop"),
    ({"lifecycle": {"partitions": [{"table": "a.b", "period": "hour"}]}}, "exporters.db.lifecycle.partitions[0].period"),
])
def test_bad_db_config_names_the_key(data, key):
    with pytest.raises(ConfigError) as ei:
        load_data({"exporters": {"db": data}})
    assert ei.value.key == key


# ------------------------------------------------------------------ rules, dashboard, demo wiring
def test_alert_thresholds_come_from_the_config():
    from alert_rules import db as rules

    cfg = load_data({"exporters": {"db": {"alerts": {"pool_use_ratio": 0.7, "avg_query_time": "250ms"},
                                          "statements": {"slow_threshold": "5s"}}}})
    exprs = {r["alert"]: r["expr"] for g in rules.groups(cfg) for r in g["rules"]}
    assert exprs["PostgresConnectionPoolHigh"].endswith("> 0.7")
    assert exprs["PostgresAvgQueryTimeHigh"].endswith("> 0.25")
    assert exprs["PostgresSlowQueries"].endswith("> 5")
    names = {r["alert"] for g in rules.groups(defaults()) for r in g["rules"]}
    assert names == {"PostgresDown", "PostgresConnectionPoolHigh", "PostgresAvgQueryTimeHigh",
                     "PostgresSlowQueries", "PostgresCacheHitRatioLow", "PostgresReplicationLagHigh",
                     "PostgresWalArchiveStale", "PostgresWalArchiveFailing", "PostgresBackupStale", "PostgresPartitionMissing",
                     "PostgresDeadlocks"}
    assert rules.groups(load_data({"exporters": {"db": {"enabled": False}}})) == []


def test_dashboard_thresholds_follow_the_alert_config():
    from dashboards import database

    cfg = load_data({"exporters": {"db": {"alerts": {"pool_use_ratio": 0.6}}}})
    model = database.build(cfg)
    p = next(p for p in model["panels"] if p.get("title") == "Connections used")
    assert [s["value"] for s in p["fieldConfig"]["defaults"]["thresholds"]["steps"]] == [None, 0.6]


def test_demo_db_is_a_supervised_program():
    from demo.db import launcher_programs

    progs = launcher_programs(defaults())
    assert progs == [{"name": "demo-db-workload", "args": ["db", "workload"], "ready_url": None, "url": None,
                     "reads": ["database", "demo.enabled", "demo.seed"]}]
    assert launcher_programs(load_data({"demo": {"enabled": False}})) == []
