"""exporters.db config: every rule is checked at load, one clear line naming the key.

Before, `backup.source: file` without `path` (or `query` without `query`) loaded fine and
failed only when the exporter started; now the file does not load.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from core.config import ConfigError, load_data

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
