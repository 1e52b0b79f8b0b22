"""The automation exporter's pure parts (no servers): label sanitising, quantiles, the KPI maths and
its caps, the exporters.automation config checks, what `opsstack up` generates for it, and the
StatsD mapping file (it parses, its rules are valid for statsd_exporter, and they map Airflow's
metric names as documented)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from core.config import ConfigError, defaults, load_data, view
from exporters import automation
from exporters.automation.airflow import Dag, Run, TaskFailure, parse_health, parse_run
from exporters.automation.http import parse_time
from exporters.automation.kpis import OTHER, compute, label, quantile
from stack import prometheus_config, runtime
from stack.launcher import Stack

ROOT = Path(__file__).resolve().parents[2]
MAPPING = ROOT / "exporters" / "automation" / "statsd_mapping.yml"
SAFE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


# ---------------------------------------------------------------------------- labels and maths
def test_label_keeps_plain_ids_and_makes_hostile_ones_safe_and_distinct():
    assert label("event_creation") == "event_creation"
    assert label("ok.dag-1") == "ok.dag-1"
    hostile = ['a"b', "a'b", "x\ny", "d" * 300, "d" * 301, OTHER, "évènement", 'x{y="1"}', "", "a b", "a_b"]
    out = [label(h) for h in hostile]
    assert all(SAFE.match(v) for v in out), out
    assert len(set(out)) == len(out)  # "a b" and "a_b" do not merge
    assert label(OTHER) != OTHER


def test_quantile_is_linear_between_ranks():
    assert quantile([], 0.5) is None
    assert quantile([5.0], 0.95) == 5.0
    assert quantile([300, 600, 900, 900, 1200], 0.5) == 900
    assert quantile([300, 600, 900, 900, 1200], 0.95) == pytest.approx(1140)
    assert quantile([4, 1, 3, 2], 0.5) == pytest.approx(2.5)


def test_compute_caps_dags_and_sums_the_rest():
    now = 1_000_000.0
    dags = [Dag(f"d{i}", paused=False) for i in range(6)]
    runs = [Run(f"d{i}", f"r{i}_{j}", "success", now - 100, now - 90, now - 30) for i in range(6) for j in range(i + 1)]
    runs.append(Run("d5", "old", "success", None, now - 90000, now - 89000))  # outside the window
    runs.append(Run("d5", "weird", "up_for_retry", None, now - 10, None))   # not a run state: ignored
    k = compute(dags, runs, [TaskFailure("d0", "r", "t", -1)], now=now, since=now - 86400,
                manual_minutes={"d5": 30}, manual_default=10, max_dags=2, max_tasks=10)
    assert set(k.per_dag) == {"d5", "d4", OTHER}
    assert k.per_dag["d5"].runs["success"] == 6 and k.per_dag["d4"].runs["success"] == 5
    assert k.per_dag[OTHER].runs["success"] == 1 + 2 + 3 + 4
    assert k.per_dag["d5"].time_saved_seconds == pytest.approx(30 * 6 * 60)
    assert k.per_dag[OTHER].time_saved_seconds == pytest.approx(10 * 10 * 60)  # the default, summed
    assert k.speedup == {"d5": pytest.approx(30 * 60 / 60), "d4": pytest.approx(10 * 60 / 60)}
    assert k.task_failures == {(OTHER, "t"): 1}
    assert k.error_ratio == 0.0 and k.workflows_in_operation == 6


def test_compute_without_runs_has_no_ratio_or_mean():
    k = compute([Dag("a", True)], [], [], now=100.0, since=0.0, manual_minutes={}, manual_default=None,
                max_dags=10, max_tasks=10)
    assert k.error_ratio is None and k.processing_seconds_avg is None
    assert k.dags_paused == 1 and k.workflows_in_operation == 0 and k.speedup == {}


def test_parsers_refuse_bad_shapes():
    assert parse_run({"dag_id": "a", "dag_run_id": "r", "state": "success", "start_date": "nonsense"}).start is None
    assert parse_run({"dag_id": "a", "state": "success"}) is None
    assert parse_run(["not", "a", "dict"]) is None
    assert parse_time("2026-11-30T01:00:00Z") == parse_time("2026-11-30T01:00:00+00:00")
    assert parse_time("2026-11-30T01:00:00") == parse_time("2026-11-30T01:00:00Z")  # naive is UTC
    assert parse_time(12) is None and parse_time("x" * 100) is None
    h = parse_health({"scheduler": {"status": "unhealthy", "latest_scheduler_heartbeat": None}})
    assert h.scheduler == "unhealthy" and h.scheduler_heartbeat is None and not h.has_dag_processor
    with pytest.raises(Exception):
        parse_health(["x"])


# ---------------------------------------------------------------------------- config
def test_defaults():
    a = view(defaults(), "exporters.automation")
    assert a.enabled is False and a.window == 86400.0 and a.airflow.api_version == "auto"
    assert a.manual_minutes["event_creation"] == 360 and a.manual_minutes_default is None


@pytest.mark.parametrize("over,key", [
    ({"manual_minutes": {"event_creation": 0}}, "exporters.automation.manual_minutes.event_creation"),
    ({"manual_minutes": {"bad id!": 5}}, "exporters.automation.manual_minutes.bad id!"),
    ({"enabled": True, "timeout": "10s"}, "exporters.automation.timeout"),
    ({"airflow": {"api_version": "v3"}}, "exporters.automation.airflow.api_version"),
    ({"max_dags": 0}, "exporters.automation.max_dags"),
])
def test_config_errors_name_the_key(over, key):
    with pytest.raises(ConfigError) as e:
        load_data({"exporters": {"automation": over}})
    assert e.value.key == key


def test_password_is_redacted():
    a = view(load_data({"exporters": {"automation": {"airflow": {"password": "hunter2-secret"}}}}),
             "exporters.automation")
    assert "hunter2-secret" not in repr(a)


# ---------------------------------------------------------------------------- `opsstack up`
def _programs(tmp_path, **over):
    data = {"stack": {"run_dir": str(tmp_path / ".run")}, **over}
    r = runtime.resolve(load_data(data))
    return r, {p.name: p for p in Stack(r).programs(r)}


def test_not_run_by_default(tmp_path):
    r, progs = _programs(tmp_path)
    assert "exporter-automation" not in progs
    assert "opsstack_automation" not in {j["job_name"] for j in prometheus_config.build(r, "native")["scrape_configs"]}


@pytest.mark.parametrize("over", [{"exporters": {"automation": {"enabled": True}}}, {"demo": {"airflow": True}}])
def test_run_when_enabled_or_with_the_demo_airflow(tmp_path, over):
    r, progs = _programs(tmp_path, **over)
    p = progs["exporter-automation"]
    port = r["stack"]["ports"]["exporter_automation"]
    assert p.command[-2:] == ["exporter", "automation"]
    assert p.ready_url == f"http://{r['stack']['host']}:{port}/metrics"
    assert "exporters.automation" in p.reads
    jobs = {j["job_name"]: j for j in prometheus_config.build(r, "native")["scrape_configs"]}
    assert jobs["opsstack_automation"]["static_configs"][0]["targets"] == [f"{r['stack']['host']}:{port}"]
    assert automation.enabled(r)


# ---------------------------------------------------------------------------- StatsD mapping
# statsd_exporter's own rules (pkg/mapper): a glob is whole dot-separated parts, each `*` or a name
_STATSD_NAME = r"[a-zA-Z_](-?[a-zA-Z0-9_])*"
GLOB_LINE = re.compile(r"^(\*\.|" + _STATSD_NAME + r"\.)+(\*|" + _STATSD_NAME + r")$")
METRIC_NAME = re.compile(r"^([a-zA-Z_]|(\$\{?\d+\}?))([a-zA-Z0-9_]|(\$\{?\d+\}?))*$")
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]+$")


def _rules():
    doc = yaml.safe_load(MAPPING.read_text())
    default = doc.get("defaults", {}).get("match_type", "glob")
    return doc, [dict(m, match_type=m.get("match_type", default)) for m in doc["mappings"]]


def _fill(template: str, groups) -> str:
    return re.sub(r"\$\{?(\d+)\}?", lambda m: groups[int(m.group(1)) - 1], template)


def statsd_map(name: str):
    """(prometheus name, labels) the mapping gives ``name``, or None when dropped/unmatched: globs
    first, in file order (glob_disable_ordering false), then the regular expressions in order."""
    _, rules = _rules()
    for kind in ("glob", "regex"):
        for r in (x for x in rules if x["match_type"] == kind):
            if kind == "glob":
                pattern = "^" + r"\.".join("([^.]*)" if p == "*" else re.escape(p) for p in r["match"].split(".")) + "$"
            else:
                pattern = r["match"]
            m = re.search(pattern, name)
            if not m:
                continue
            if r.get("action") == "drop":
                return None
            groups = m.groups()
            return _fill(r["name"], groups), {k: _fill(v, groups) for k, v in (r.get("labels") or {}).items()}
    return None


def test_mapping_file_is_valid_for_statsd_exporter():
    doc, rules = _rules()
    assert doc["defaults"]["glob_disable_ordering"] is False
    assert rules[-1]["action"] == "drop" and rules[-1]["match"] == "."  # nothing unmapped becomes a series
    for r in rules:
        assert r["name"] and METRIC_NAME.match(r["name"]), r
        assert all(LABEL_NAME.match(k) for k in (r.get("labels") or {})), r
        if r["match_type"] == "glob":
            assert GLOB_LINE.match(r["match"]), f"statsd_exporter refuses the glob {r['match']!r}"
        else:
            re.compile(r["match"])
            assert r["match"] == "." or (r["match"].startswith("^") and r["match"].endswith("$"))


@pytest.mark.parametrize("statsd,expected", [
    ("airflow.dagrun.duration.success.event_creation",
     ("airflow_dagrun_duration_seconds", {"state": "success", "dag_id": "event_creation"})),
    ("airflow.dagrun.duration.failed.etl", ("airflow_dagrun_duration_seconds", {"state": "failed", "dag_id": "etl"})),
    ("airflow.dagrun.schedule_delay.etl", ("airflow_dagrun_schedule_delay_seconds", {"dag_id": "etl"})),
    ("airflow.dagrun.event_creation.first_task_scheduling_delay",
     ("airflow_dagrun_first_task_scheduling_delay_seconds", {"dag_id": "event_creation"})),
    ("airflow.ti_failures", ("airflow_ti_failures_total", {})),
    ("airflow.ti.finish.event_creation.configure.failed",
     ("airflow_ti_finish_total", {"dag_id": "event_creation", "task_id": "configure", "state": "failed"})),
    ("airflow.ti.start.event_creation.classify",
     ("airflow_ti_start_total", {"dag_id": "event_creation", "task_id": "classify"})),
    ("airflow.dag.event_creation.configure.duration",
     ("airflow_task_duration_seconds", {"dag_id": "event_creation", "task_id": "configure"})),
    ("airflow.dag.event_creation.configure.queued_duration",
     ("airflow_task_queued_duration_seconds", {"dag_id": "event_creation", "task_id": "configure"})),
    ("airflow.scheduler_heartbeat", ("airflow_scheduler_heartbeat_total", {})),
    ("airflow.scheduler.heartbeat", ("airflow_scheduler_heartbeat_total", {})),
    ("airflow.scheduler.tasks.starving", ("airflow_scheduler_tasks_starving", {})),
    ("airflow.executor.open_slots", ("airflow_executor_open_slots", {})),
    ("airflow.pool.queued_slots.default_pool", ("airflow_pool_queued_slots", {"pool": "default_pool"})),
    ("airflow.dag_processing.total_parse_time", ("airflow_dag_processing_total_parse_time_seconds", {})),
    ("airflow.dag_processing.import_errors", ("airflow_dag_processing_import_errors", {})),
    ("airflow.dag_processing.last_duration.event_creation",
     ("airflow_dag_processing_last_duration_seconds", {"dag_file": "event_creation"})),
    ("airflow.operator_failures_PythonOperator", ("airflow_operator_failures_total", {"operator": "PythonOperator"})),
    ("airflow.scheduler_job_start", ("airflow_job_start_total", {"job": "scheduler_job"})),
    ("airflow.local_task_job_heartbeat_failure", ("airflow_job_heartbeat_failure_total", {"job": "local_task_job"})),
    # dropped: unknown names, and a dag_id holding dots (no glob part matches across a dot)
    ("airflow.something.new", None),
    ("airflow.dagrun.duration.success.my.dotted.dag", None),
    ("other_app.requests", None),
])
def test_mapping_maps_airflow_names(statsd, expected):
    assert statsd_map(statsd) == expected
