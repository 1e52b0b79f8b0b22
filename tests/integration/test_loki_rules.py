"""The log alerts (alert_rules/logs.py) against a REAL Grafana Loki fed with known lines: push
them with the push API at known timestamps, then evaluate each rule's expression with
/loki/api/v1/query at a fixed time: the firing case and the quiet case of every alert. Then the
ruler of the same Loki loads the rendered rule file and its /prometheus/api/v1/rules lists them.

Needs a Grafana Loki binary (logs.loki_binary or `loki` on PATH answering `loki -version`).
Debian has none (its `loki` package is a genetics program: docs/logs.md), so on the dev and CI
machines this module SKIPS, saying so; it has never run there.
"""
from __future__ import annotations

import subprocess
import time

import pytest
import requests
import yaml

from alert_rules import logs as log_rules
from core.config import load_data
from core.procs import free_port, stop_process, tail, wait_http
from stack import loki_config

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def loki(tmp_path_factory):
    run = tmp_path_factory.mktemp("loki")
    cfg = load_data({"stack": {"run_dir": str(run), "ports": {"loki": free_port(), "loki_grpc": free_port(),
                                                             "alertmanager": free_port()}},
                     "logs": {"loki": "on"}})
    path = loki_config.find_loki(cfg)
    if path is None:
        pytest.skip("no Grafana Loki binary on this machine (Debian has none: docs/logs.md)")
    loki_config.write(cfg)
    log = open(run / "loki.log", "ab")
    proc = subprocess.Popen(loki_config.command(cfg), stdout=log, stderr=log, start_new_session=True)
    url = f"http://127.0.0.1:{cfg['stack']['ports']['loki']}"
    try:
        wait_http(url + "/ready", timeout=120, proc=proc)
    except Exception as exc:
        stop_process(proc, 15)
        raise RuntimeError(f"loki did not start: {exc}\n{tail(run / 'loki.log')}") from None
    yield {"url": url, "cfg": cfg}
    stop_process(proc, 15)


NOW = int(time.time())  # the evaluation time of every case; lines are pushed before it


def push(url: str, labels: dict, lines: list[tuple[float, str]]) -> None:
    body = {"streams": [{"stream": labels, "values": [[str(int(ts * 1e9)), line] for ts, line in sorted(lines)]}]}
    r = requests.post(url + "/loki/api/v1/push", json=body, timeout=30)
    assert r.status_code == 204, r.text


def query(url: str, expr: str, at: float) -> list[dict]:
    r = requests.get(url + "/loki/api/v1/query", params={"query": expr, "time": str(int(at * 1e9))}, timeout=60)
    assert r.status_code == 200, (expr, r.text)
    return r.json()["data"]["result"]


def err(ts: float, svc: str) -> tuple[float, str]:
    return ts, f"level=ERROR logger=opsstack.demo event=request_failed service={svc} code=500"


def test_error_surge_fires_on_a_surge_and_not_on_a_steady_error_rate(loki):
    url, cfg = loki["url"], loki["cfg"]
    # surge-svc: no errors before, 30 in the last 4 minutes -> fires (no baseline: unless keeps it)
    push(url, {"component": "demo", "service": "surge-svc", "level": "error"},
         [err(NOW - 240 + i * 8, "surge-svc") for i in range(30)])
    # steady-svc: 30 errors every 5 minutes for the last 65 minutes -> its own baseline, quiet
    push(url, {"component": "demo", "service": "steady-svc", "level": "error"},
         [err(NOW - 3900 + i * 10, "steady-svc") for i in range(390)])
    # few-svc: 5 errors, no baseline -> under error_surge_min_lines, quiet
    push(url, {"component": "demo", "service": "few-svc", "level": "error"},
         [err(NOW - 100 + i, "few-svc") for i in range(5)])
    expr = log_rules.error_surge_expr(cfg, "")
    fired = {r["metric"]["service"]: float(r["value"][1]) for r in query(url, expr, NOW)}
    assert fired == {"surge-svc": 30.0}


def test_panic_or_traceback_fires_on_a_traceback_only(loki):
    url = loki["url"]
    push(url, {"component": "receiver", "service": "opsstack", "level": "error"},
         [(NOW - 30, "level=ERROR logger=x event=job_failed\nTraceback (most recent call last):\n  File \"x.py\"")])
    push(url, {"component": "exporter-app", "service": "opsstack", "level": "error"},
         [(NOW - 30, "level=ERROR logger=x event=probe_failed error=timeout")])
    fired = {(r["metric"]["component"], r["metric"]["service"]) for r in query(url, log_rules.panic_expr(), NOW)}
    assert ("receiver", "opsstack") in fired and ("exporter-app", "opsstack") not in fired


def test_logs_absent_fires_for_a_silent_component_only(loki):
    url, cfg = loki["url"], loki["cfg"]
    push(url, {"component": "forecaster", "service": "opsstack", "level": "info"},
         [(NOW - 60, "level=INFO logger=opsstack.logship logship stats shipped=10")])
    expr = log_rules.absent_expr(cfg, [("forecaster", "opsstack"), ("demo", "silent-svc")])
    fired = {(r["metric"].get("component"), r["metric"].get("service")) for r in query(url, expr, NOW)}
    assert fired == {("demo", "silent-svc")}


def test_the_ruler_loads_the_rendered_rules(loki):
    url = loki["url"]
    r = requests.get(url + "/prometheus/api/v1/rules", timeout=30)
    assert r.status_code == 200, r.text
    names = {rule["name"] for g in r.json()["data"]["groups"] for rule in g["rules"]}
    want = {x["alert"] for g in yaml.safe_load(loki_config.rules_text(loki["cfg"]))["groups"] for x in g["rules"]}
    assert want <= names
