"""Config validation: every bad file gives one clear line naming the key, and exit code 2."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from core.config import ConfigError, defaults, format_duration, load, load_data, parse_duration

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_are_valid_and_converted():
    cfg = defaults()
    assert cfg["stack"]["scrape_interval"] == 15.0
    assert cfg["alerts"]["service_down_for"] == 60.0
    assert [s["name"] for s in cfg["platform"]["services"]] == [
        "gate-management", "user-app", "event-management", "integrated-platform"]
    assert cfg["platform"]["services"][1]["display_name"] == "User App"
    assert cfg["platform"]["regions"] == ["seoul", "singapore", "tokyo"]


def test_example_config_is_valid_and_lists_every_section():
    example = ROOT / "opsstack.example.yaml"
    cfg = load(example)
    data = yaml.safe_load(example.read_text())
    from core.schema import SCHEMA
    assert set(data) == set(SCHEMA), "the example must show every top-level section"
    assert cfg == load_data(data)


@pytest.mark.parametrize("text,key,words", [
    ("stack:\n  scrape_interval: fast\n", "stack.scrape_interval", "duration"),
    ("stack:\n  scrape_interval: 10s\n  scrape_timeout: 20s\n", "stack.scrape_timeout", "longer"),
    ("stack:\n  ports:\n    prometheus: 70000\n", "stack.ports.prometheus", "port"),
    ("stack:\n  colour: blue\n", "stack.colour", "unknown key"),
    ("bogus: 1\n", "bogus", "unknown key"),
    ("platform:\n  services: []\n", "platform.services", "at least 1"),
    ("platform:\n  services:\n    - name: Bad_Name\n", "platform.services[0].name", "lowercase"),
    ("platform:\n  services:\n    - name: a\n    - name: a\n", "platform.services[1].name", "duplicate"),
    ("platform:\n  services:\n    - {}\n", "platform.services[0].name", "required"),
    ("platform:\n  regions: [seoul]\n  services:\n    - name: a\n      endpoints: {tokyo: 'http://x'}\n",
     "platform.services[0].endpoints.tokyo", "unknown region"),
    ("alerts:\n  service_down_for: -5\n", "alerts.service_down_for", "negative"),
    ("demo:\n  enabled: maybe\n", "demo.enabled", "true or false"),
    ("database:\n  url: localhost\n", "database.url", "URL"),
    ("stack: [1, 2]\n", "stack", "mapping"),
])
def test_bad_values_name_the_key(tmp_path, text, key, words):
    f = tmp_path / "opsstack.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as ei:
        load(f)
    msg = str(ei.value)
    assert "\n" not in msg
    assert f"{key}:" in msg, msg
    assert words.lower() in msg.lower(), msg


def test_not_yaml_and_not_a_mapping(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("stack: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML: line"):
        load(f)
    f.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load(f)
    with pytest.raises(ConfigError, match="file not found"):
        load(tmp_path / "missing.yaml")


def test_empty_file_means_defaults(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("# nothing\n")
    assert load(f) == defaults()


@pytest.mark.parametrize("text", ["stack:\n  evaluation_interval: soon\n", "oops: [\n", "receiver:\n  workers: 0\n"])
def test_cli_prints_one_line_and_exits_2(tmp_path, text):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    res = subprocess.run([sys.executable, "-m", "stack.cli", "-c", str(f), "config"],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("opsstack: config error: ")
    assert "Traceback" not in res.stderr


def test_durations_roundtrip():
    assert parse_duration("1h30m") == 5400
    assert parse_duration("250ms") == 0.25
    assert parse_duration(42) == 42.0
    for bad in ("", "5 minutes", "m5", True, "-3s"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert format_duration(5400) == "1h30m"
    assert format_duration(0.25) == "250ms"
    assert format_duration(86400 * 3) == "3d"


def _schema_paths(spec, prefix=""):
    """Every key path of the mapping part of the schema (list items excluded)."""
    if isinstance(spec, dict):
        for k, sub in spec.items():
            path = f"{prefix}.{k}" if prefix else k
            yield path
            yield from _schema_paths(sub, path)


def _data_paths(data, prefix=""):
    if isinstance(data, dict):
        for k, sub in data.items():
            path = f"{prefix}.{k}" if prefix else k
            yield path
            yield from _data_paths(sub, path)


def test_example_shows_every_key():
    from core.schema import SCHEMA
    data = yaml.safe_load((ROOT / "opsstack.example.yaml").read_text())
    missing = sorted(set(_schema_paths(SCHEMA)) - set(_data_paths(data)))
    assert not missing, f"opsstack.example.yaml does not show: {missing}"
