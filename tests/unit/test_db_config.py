"""exporters.db config: every rule is checked at load, one clear line naming the key.

Before, `backup.source: file` without `path` (or `query` without `query`) loaded fine and
failed only when the exporter started; now the file does not load.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from core.config import ConfigError, load_data, view
from exporters.db.conn import target_url

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("data,key", [
    ({"backup": {"source": "file"}}, "exporters.db.backup.path"),
    ({"backup": {"source": "query"}}, "exporters.db.backup.query"),
    ({"backup": {"source": "file", "query": "select now()"}}, "exporters.db.backup.path"),
    ({"targets": [{"name": "main", "databases": ["app", ""]}]}, "exporters.db.targets[0].databases[1]"),
    ({"targets": [{"name": "main", "databases": [3]}]}, "exporters.db.targets[0].databases[0]"),
])
def test_bad_db_config_fails_at_load(data, key):
    with pytest.raises(ConfigError) as ei:
        load_data({"exporters": {"db": data}})
    assert ei.value.key == key
    assert len(str(ei.value).splitlines()) == 1


@pytest.mark.parametrize("backup", [
    {"source": "none"},
    {"source": "file", "path": "/var/backups/pg/*.done"},
    {"source": "query", "query": "select max(finished) from backups"},
])
def test_complete_backup_settings_load(backup):
    cfg = load_data({"exporters": {"db": {"backup": backup, "targets": [{"name": "main", "databases": ["*"]}]}}})
    assert cfg["exporters"]["db"]["backup"]["source"] == backup["source"]
    assert cfg["exporters"]["db"]["targets"][0]["databases"] == ["*"]


def test_backup_file_without_path_is_one_line_from_the_cli(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("exporters:\n  db:\n    backup:\n      source: file\n")
    res = subprocess.run([sys.executable, "-m", "stack.cli", "-c", str(f), "config"],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert lines == [f"opsstack: config error: {f}: exporters.db.backup.path: is required when backup.source is file"]


def test_target_url_from_the_views_target_then_database_then_env(monkeypatch):
    cfg = load_data({"database": {"url": "postgresql://db@h/main"},
                     "exporters": {"db": {"targets": [{"name": "own", "url": "postgresql://own@h/x"},
                                                      {"name": "shared"}]}}})
    dbc, database = view(cfg, "exporters.db"), view(cfg, "database")
    assert [target_url(t, database) for t in dbc.targets] == ["postgresql://own@h/x", "postgresql://db@h/main"]
    monkeypatch.setenv("OPSSTACK_DATABASE_URL", "postgresql://env@h/e")
    assert target_url(dbc.targets[1], view(load_data({}), "database")) == "postgresql://env@h/e"
