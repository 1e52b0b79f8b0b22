"""`opsstack forecast csv|evaluate|backfill` and `capacity` pieces, run in-process (no servers)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forecasters import capacity, evaluate
from forecasters.backfill import openmetrics
from forecasters.engine import forecast_series
from forecasters.targets import build
from stack.cli import main
from core.config import load_data

ROOT = Path(__file__).resolve().parents[2]
NAB = ROOT / "datasets" / "nab"


def _write_csv(path, n=600, step=300, ratio=True):
    t = pd.date_range("2024-01-01", periods=n, freq=f"{step}s")
    x = np.arange(n)
    y = 0.5 + 0.0004 * x + 0.02 * np.sin(2 * np.pi * x / 288) if ratio else 100 + x
    pd.DataFrame({"timestamp": t.strftime("%Y-%m-%d %H:%M:%S"), "value": y}).to_csv(path, index=False)
    return t


def test_csv_command_writes_the_forecast(tmp_path, capsys):
    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    t = _write_csv(src)
    rc = main(["forecast", "csv", "--input", str(src), "--horizon", "48", "--output", str(out),
               "--min", "0", "--max", "1"])
    assert rc == 0
    df = pd.read_csv(out)
    assert list(df.columns) == ["timestamp", "yhat", "yhat_lower", "yhat_upper"]
    assert len(df) == 48
    first = pd.Timestamp(df["timestamp"].iloc[0])
    assert first == t[-1] + pd.Timedelta(seconds=300)
    assert (df["yhat_lower"] <= df["yhat"]).all() and (df["yhat"] <= df["yhat_upper"]).all()
    assert df[["yhat", "yhat_lower", "yhat_upper"]].to_numpy().max() <= 1.0
    assert "model" in capsys.readouterr().err


def test_csv_command_rejects_bad_input(tmp_path, capsys):
    src = tmp_path / "in.csv"
    src.write_text("timestamp,value\n2024-01-01 00:00:00,1\n")
    assert main(["forecast", "csv", "--input", str(src), "--horizon", "5", "--output", str(tmp_path / "o")]) == 2
    assert main(["forecast", "csv", "--input", str(tmp_path / "missing.csv"), "--horizon", "5",
                 "--output", str(tmp_path / "o")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_nab_data_ships_with_licence_and_readme():
    assert (NAB / "LICENSE.txt").exists() and (NAB / "README.md").exists()
    assert len(evaluate.list_series(NAB)) >= 6


def test_evaluate_one_runs_the_protocol_on_a_short_nab_series():
    path = NAB / "realAWSCloudwatch" / "iio_us-east-1_i-a2eb1cd9_NetworkIn.csv"
    r = evaluate.evaluate_one(str(path), 0.9, with_prophet_default=False)
    assert set(r.results) == {"naive", "seasonal_naive", "linear_trend", "opsstack"}
    for v in r.results.values():
        assert np.isfinite(v["mase"]) and 0 <= v["coverage"] <= 1
    table = evaluate.format_table(evaluate.summarize([r]))
    assert "mean MASE" in table and "opsstack" in table


def test_baselines_follow_the_protocol():
    t = np.arange(700) * 300.0
    y = np.sin(2 * np.pi * np.arange(700) / 288) + np.arange(700) * 0.01
    f, lo, hi = evaluate.baseline("seasonal_naive", t, y, 288)
    assert np.allclose(f, y[-288:])
    f, lo, hi = evaluate.baseline("naive", t, y, 10)
    assert np.all(f == y[-1]) and np.all(lo < f) and np.all(hi > f)
    f, _, _ = evaluate.baseline("linear_trend", t, np.arange(700) * 2.0, 3)
    assert np.allclose(f, [1400, 1402, 1404])


def test_openmetrics_backfill_text_and_no_future_samples():
    now = time.time()
    t = np.array([now - 600, now - 300])
    text = openmetrics([("opsstack_x", {"series": "a"}, t, np.array([1.0, 2.0]))])
    lines = text.strip().splitlines()
    assert lines[0].startswith("# HELP opsstack_x") and lines[1] == "# TYPE opsstack_x gauge"
    assert lines[2].startswith('opsstack_x{series="a"} 1.0 ') and lines[-1] == "# EOF"
    with pytest.raises(ValueError, match="future"):
        openmetrics([("opsstack_x", {}, np.array([now + 3600]), np.array([1.0]))])


def test_capacity_report_markdown_and_json():
    cfg = load_data({"forecast": {"models": ["linear_trend"], "backtest": {"folds": 1}, "targets": [{
        "name": "disk-root", "kind": "disk", "service": "host", "query": "q", "thresholds": [0.9],
        "min": 0, "max": 1, "horizons": ["14d", "90d"]}]}})
    (target,) = build(cfg)
    t = 1.8e9 + np.arange(0, 3 * 86400, 300.0)
    y = 0.5 + 0.01 * (t - t[0]) / 86400       # +1 point a day: 90% in ~37 days
    fc = forecast_series(t, y, target.spec)
    row = capacity.row_from_forecast(target, fc)
    assert row["growth_per_month"] == pytest.approx(0.30, rel=0.05)
    md = capacity.to_markdown([row], t[-1])
    assert "| disk-root | host |" in md and "Expand the volume" in md and " in 90d (" in md
    data = json.loads(capacity.to_json([row], t[-1]))
    th = data["targets"][0]["thresholds"][0]
    assert th["threshold"] == 0.9 and th["reached_at"].startswith("20")
    assert set(th["probability"]) == {"14d", "90d"}


def test_capacity_report_without_enough_history_says_so_and_how_much_is_needed():
    cfg = load_data({"forecast": {"min_history": "6h", "targets": [
        {"name": "disk-root", "kind": "disk", "service": "host", "query": "q", "thresholds": [0.9]},
        {"name": "memory-user-app", "kind": "memory", "service": "user-app", "query": "q", "thresholds": [1]}]}})
    disk, mem = build(cfg)
    waiting = [capacity.waiting_row(disk, 0.0, 6 * 3600), capacity.waiting_row(mem, 5400.0, 6 * 3600)]
    md = capacity.to_markdown([], 1.8e9, waiting)
    assert "No threshold is forecast to be reached" not in md
    assert "Not enough history to forecast yet" in md and "again in 6h" in md
    assert "| disk-root | host | 0s | 6h | 6h |" in md
    assert "| memory-user-app | user-app | 1h 30m | 6h | 4h 30m |" in md
    data = json.loads(capacity.to_json([], 1.8e9, waiting))
    assert data["targets"] == [] and [w["remaining_seconds"] for w in data["waiting"]] == [21600.0, 16200.0]


def test_capacity_report_with_history_and_no_crossing_says_nothing_is_reached():
    cfg = load_data({"forecast": {"models": ["linear_trend"], "backtest": {"folds": 1}, "targets": [
        {"name": "disk-root", "kind": "disk", "service": "host", "query": "q", "thresholds": [0.9],
         "min": 0, "max": 1},
        {"name": "disk-new", "kind": "disk", "service": "host", "query": "q", "thresholds": [0.9]}]}})
    disk, new = build(cfg)
    t = 1.8e9 + np.arange(0, 3 * 86400, 300.0)
    fc = forecast_series(t, np.full(len(t), 0.4), disk.spec)    # flat at 40%: never 90%
    rows = [capacity.row_from_forecast(disk, fc)]
    md = capacity.to_markdown(rows, t[-1])
    assert "No threshold is forecast to be reached within the horizons." in md
    assert "Not enough history" not in md and "Waiting for history" not in md
    # one target forecast, another still waiting: both said, distinctly
    md = capacity.to_markdown(rows, t[-1], [capacity.waiting_row(new, 600.0, 3600.0)])
    assert "No threshold is forecast to be reached within the horizons." in md
    assert "## Waiting for history" in md and "| disk-new | host | 10m | 1h | 50m |" in md
    assert "1 target(s) have not enough history" in md
    # nothing at all (the forecaster never ran): neither claim
    md = capacity.to_markdown([], t[-1])
    assert "No forecasts yet" in md and "No threshold is forecast" not in md


def test_csv_command_keeps_numeric_timestamps_exact(tmp_path):
    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    src.write_text("timestamp,value\n" + "".join(f"{1700000000 + i * 60},{i * 2}\n" for i in range(100)))
    assert main(["forecast", "csv", "--input", str(src), "--horizon", "3", "--output", str(out),
                 "--model", "linear_trend"]) == 0
    df = pd.read_csv(out)
    assert list(df["timestamp"]) == [1700006000, 1700006060, 1700006120]
    assert list(df["yhat"]) == pytest.approx([200, 202, 204])


def test_run_without_a_prometheus_address_is_one_clear_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPSSTACK_CONFIG", raising=False)
    monkeypatch.delenv("OPSSTACK_DATABASE_URL", raising=False)
    # an explicit config (no stack runs from it, so it is used as it is: no Prometheus address)
    (tmp_path / "opsstack.yaml").write_text(f"stack: {{run_dir: {tmp_path / 'run'}}}\n")
    c = ["-c", str(tmp_path / "opsstack.yaml")]
    assert main(c + ["forecast", "run"]) == 2
    assert main(c + ["capacity", "report", "--run"]) == 2
    assert main(c + ["forecast", "run", "--shard", "5/2"]) == 2
    err = capsys.readouterr().err
    assert "forecast.prometheus_url" in err and "bad shard" in err and "Traceback" not in err
