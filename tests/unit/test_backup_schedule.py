"""demo/backups.py without a server: the schedule, the rendered pgBackRest config and archive
command, what `opsstack up` points the exporters at, the config checks, the fault errors."""
from __future__ import annotations

import shlex

import pytest

from core.config import ConfigError, defaults, load_data, view
from demo import backups
from stack import runtime

H = 3600.0


def test_a_repository_without_a_full_backup_gets_one():
    assert backups.due(1000.0, {}, 86400, H, 120) == "full"


def test_each_level_counts_from_the_newest_backup_of_that_level_or_above():
    now = 100_000.0
    assert backups.due(now, {"full": now - 60}, 86400, H, 120) is None
    assert backups.due(now, {"full": now - 130}, 86400, H, 120) == "incr"
    assert backups.due(now, {"full": now - 3 * H, "diff": now - 10}, 86400, H, 120) is None
    assert backups.due(now, {"full": now - 3 * H, "diff": now - 2 * H, "incr": now - 10}, 86400, H, 120) == "diff"
    assert backups.due(now, {"full": now - 86400}, 86400, H, 120) == "full"
    # an interval of 0 turns that level off
    assert backups.due(now, {"full": now - 2 * H}, 86400, 0, 0) is None
    assert backups.due(now, {"full": now - 2 * H}, 86400, 0, 120) == "incr"


def test_the_config_keeps_every_path_in_the_run_folder(tmp_path):
    p = backups.paths(tmp_path)
    text = backups.render_conf(p, "opsstack", tmp_path / "postgres" / "data", 5544, tmp_path / "s", 2, 3)
    lines = dict(x.split("=", 1) for x in text.splitlines() if "=" in x and not x.startswith("#"))
    for key in ("repo1-path", "log-path", "lock-path", "spool-path", "pg1-path", "pg1-socket-path"):
        assert lines[key].startswith(str(tmp_path.resolve())), key
    assert "[opsstack]" in text and lines["pg1-port"] == "5544"
    assert lines["repo1-retention-full"] == "2" and lines["repo1-retention-diff"] == "3"


def test_the_archive_command_quotes_the_config_path(tmp_path):
    p = backups.paths(tmp_path / "with space")
    s = backups.archive_settings(p, "opsstack", 60, pgbackrest="/usr/bin/pgbackrest")
    argv = shlex.split(s["archive_command"])
    assert argv == ["/usr/bin/pgbackrest", f"--config={p.conf}", "--stanza=opsstack", "archive-push", "%p"]
    assert s["archive_mode"] == "on" and s["archive_timeout"] == "60s"


def test_up_points_the_exporters_at_the_embedded_repository(tmp_path, monkeypatch):
    monkeypatch.delenv("OPSSTACK_DATABASE_URL", raising=False)
    cfg = load_data({"stack": {"run_dir": str(tmp_path)}})
    r = runtime.resolve(cfg, persist=False)
    p = backups.paths(tmp_path)
    sec = r["exporters"]["security"]["backup"]
    assert sec["enabled"] and sec["config"] == str(p.conf) and sec["stanzas"] == ["opsstack"]
    assert sec["verify"]["result_file"] == str(p.results)
    assert r["exporters"]["db"]["backup"] == {"source": "file", "path": str(p.backup_info("opsstack")),
                                              "query": None}
    assert isinstance(r["stack"]["ports"]["postgres_replica"], int)


def test_a_configured_repository_or_an_external_database_is_left_alone(tmp_path, monkeypatch):
    monkeypatch.delenv("OPSSTACK_DATABASE_URL", raising=False)
    mine = load_data({"stack": {"run_dir": str(tmp_path)},
                      "exporters": {"security": {"backup": {"enabled": True, "config": "/srv/pgbr.conf"}},
                                    "db": {"backup": {"source": "query", "query": "select now()"}}}})
    r = runtime.resolve(mine, persist=False)
    assert r["exporters"]["security"]["backup"]["config"] == "/srv/pgbr.conf"
    assert r["exporters"]["db"]["backup"]["source"] == "query"
    ext = load_data({"stack": {"run_dir": str(tmp_path)}, "database": {"url": "postgresql://u@db/x"}})
    r = runtime.resolve(ext, persist=False)
    assert not r["exporters"]["security"]["backup"]["enabled"]
    assert r["exporters"]["db"]["backup"]["source"] == "none"
    off = load_data({"stack": {"run_dir": str(tmp_path)}, "database": {"embedded": {"backup": {"enabled": False}}}})
    assert runtime.resolve(off, persist=False)["exporters"]["db"]["backup"]["source"] == "none"


@pytest.mark.parametrize("backup, key", [
    ({"diff_interval": "1d"}, "database.embedded.backup.diff_interval"),
    ({"incr_interval": "2d"}, "database.embedded.backup.incr_interval"),
    ({"stanza": "Bad Name"}, "database.embedded.backup.stanza"),
])
def test_config_checks(backup, key):
    with pytest.raises(ConfigError) as e:
        load_data({"database": {"embedded": {"backup": backup}}})
    assert key in str(e.value)


def test_default_schedule_keeps_the_newest_backup_younger_than_backup_stale_allows():
    d = defaults()
    b, sec = d["database"]["embedded"]["backup"], d["exporters"]["security"]["backup"]
    # newest backup age as the exporter sees it: the interval, plus the info cache, plus slack
    assert b["incr_interval"] + sec["interval"] + 60 < d["alerts"]["security"]["backup_max_age"]
    # the recovery point itself is the WAL archive's: a segment at least every archive_timeout
    assert b["archive_timeout"] < d["exporters"]["db"]["alerts"]["wal_archive_rpo"]


def test_faults_say_what_is_missing(tmp_path):
    cfg = load_data({"stack": {"run_dir": str(tmp_path), "ports": {"postgres": 5999, "postgres_replica": 5998}}})
    t = backups.Target.from_views(view(cfg, "database"), view(cfg, "stack"))
    with pytest.raises(ValueError, match="no embedded pgBackRest repository"):
        backups.inject(t, "backup-stale", 60)
    with pytest.raises(ValueError, match="unknown fault kind"):
        backups.inject(t, "nope", 60)
    off = load_data({"stack": {"run_dir": str(tmp_path), "ports": {"postgres": 5999}},
                     "database": {"embedded": {"replica": {"enabled": False}}}})
    t2 = backups.Target.from_views(view(off, "database"), view(off, "stack"))
    assert t2.replica_url is None
    backups.write_files(t2.paths, "[global]\n")
    with pytest.raises(ValueError, match="no replica runs"):
        backups.inject(t2, "replica-lag", 60)
    assert backups.heal(t2) == [] and backups.active(t2) == {}


def _programs(cfg: dict) -> dict:
    from stack.launcher import Stack

    return {p.name: p for p in Stack(cfg).programs(runtime.resolve(cfg, persist=False))}


def test_the_launcher_runs_the_replica_and_the_schedule_with_the_embedded_cluster(tmp_path, monkeypatch):
    monkeypatch.delenv("OPSSTACK_DATABASE_URL", raising=False)
    progs = _programs(load_data({"stack": {"run_dir": str(tmp_path)}}))
    pg, replica, sched = progs["postgres"], progs["postgres-replica"], progs["db-backups"]
    opts = dict(x.split("=", 1) for x in pg.command if "=" in x and not x.startswith("-"))
    assert opts["archive_mode"] == "on" and "archive-push" in opts["archive_command"]
    assert opts["max_slot_wal_keep_size"] == "1GB"
    assert replica.stage == 2 and replica.prepare is not None and "cluster_name=replica" in replica.command
    assert sched.command[-2:] == ["demo", "backups"] and sched.stage == 2
    off = _programs(load_data({"stack": {"run_dir": str(tmp_path)}, "database": {"embedded": {
        "backup": {"enabled": False}, "replica": {"enabled": False}}}}))
    assert "postgres-replica" not in off and "db-backups" not in off
    assert not any("archive_mode" in x for x in off["postgres"].command)
    monkeypatch.setenv("OPSSTACK_DATABASE_URL", "postgresql://u@127.0.0.1:1/x")
    ext = _programs(load_data({"stack": {"run_dir": str(tmp_path)}}))
    assert not {"postgres", "postgres-replica", "db-backups"} & set(ext)


def test_stopping_the_schedule_interrupts_a_running_verification(tmp_path):
    """Supervisor stops the program's process group; the verification runs in a session of its
    own, so `stop` sends it SIGINT (restore.py then stops its scratch server and deletes it)."""
    import os
    import stat
    import threading

    from tests.support.wait import wait_for

    started, interrupted = tmp_path / "started", tmp_path / "interrupted"
    exe = tmp_path / "opsstack"
    exe.write_text(f"#!/bin/sh\ntrap 'touch {interrupted}; exit 130' INT\ntouch {started}\n"
                   "while true; do sleep 0.1; done\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    cfg = load_data({"stack": {"run_dir": str(tmp_path), "ports": {"postgres": 5999, "postgres_replica": 5998}}})
    t = backups.Target.from_views(view(cfg, "database"), view(cfg, "stack"))
    sched = backups.Scheduler(t, view(cfg, "database").embedded.backup, tmp_path / "r.yaml", opsstack=str(exe))
    th = threading.Thread(target=sched._verify, daemon=True)
    th.start()
    wait_for(started.exists, 30, what="the verification started")
    assert os.getsid(sched._verify_proc.pid) != os.getsid(0)  # not in this program's session
    sched.stop()
    th.join(30)
    assert interrupted.exists() and not th.is_alive() and sched.last_verify
