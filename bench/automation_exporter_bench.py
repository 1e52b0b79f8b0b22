"""Scrape cost of the automation exporter with 50 DAGs and 10,000 runs, against a plain fetch of
the same pages (the floor: what reading Airflow's API costs at all), in one run.

    .venv/bin/python bench/automation_exporter_bench.py [--dags 50] [--runs 10000] [--rounds 10] [--page 100]

Setup: the fake Airflow of the tests (tests/support/fakeairflow.py, API v2, a bearer token, its
``maximum_page_limit`` at --page like Airflow's default 100) serving --dags DAGs and --runs runs
spread over the last 24 hours (about 90% success, 5% failed, the rest running or queued; one
failed task per failed run), in a process of its own, so the CPU measured here is the client's.

Measured in this process, alternating round by round (same machine load for both):
- exporter: ``AutomationCollector`` (cache_ttl 0: every scrape reads Airflow) collected into the
  Prometheus text exposition, as a scrape of /metrics does;
- peer: ``requests`` (the exporter's own session setup) fetching and JSON-decoding the very same
  pages (health, DAGs, the window's runs, the queued/running runs, the failed task instances),
  nothing computed.
Wall time (perf_counter) and CPU time (process_time: this process, all threads) per scrape;
medians over --rounds after one warm-up each. Results: bench/results/automation_exporter_bench.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prometheus_client import generate_latest  # noqa: E402

from core.config import load_data, view  # noqa: E402
from core.exporter import registry_for  # noqa: E402
from core.procs import free_port, port_open  # noqa: E402
from exporters.automation.collector import AutomationCollector  # noqa: E402
from exporters.automation.http import iso, session_for  # noqa: E402
from tests.support.wait import wait_for  # noqa: E402

PASSWORD = "bench-password"


def serve_fake(port: int, dags: int, runs: int, page: int, now: float) -> None:
    from tests.support.fakeairflow import FakeAirflow, demo_data

    d, r, t = demo_data(dags, runs, now)
    FakeAirflow("v2", password=PASSWORD, dags=d, runs=r, task_instances=t, max_page_limit=page, port=port,
                record=False).serve_forever()


def peer_fetch(url: str, page: int, since: float) -> int:
    """The same pages with plain requests; returns how many pages."""
    s = session_for(url)  # the exporter's transport (proxy resolved once), so only the work differs
    tok = s.post(url + "/auth/token", json={"username": "admin", "password": PASSWORD}, timeout=30).json()["access_token"]
    h = {"Authorization": f"Bearer {tok}"}
    s.get(url + "/api/v2/monitor/health", timeout=30).json()
    pages = 0
    for path, key, params in (("/dags", "dags", {"order_by": "dag_id"}),
                              ("/dags/~/dagRuns", "dag_runs", {"order_by": "id", "start_date_gte": iso(since)}),
                              ("/dags/~/dagRuns", "dag_runs", {"order_by": "id", "state": ["queued", "running"]}),
                              ("/dags/~/dagRuns/~/taskInstances", "task_instances",
                               {"state": ["failed"], "end_date_gte": iso(since)})):
        offset = 0
        while True:
            body = s.get(url + "/api/v2" + path, params={**params, "limit": page, "offset": offset}, headers=h,
                         timeout=30).json()
            pages += 1
            offset += len(body[key])
            if not body[key] or offset >= body["total_entries"]:
                break
    return pages


def measure(fn) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dags", type=int, default=50)
    ap.add_argument("--runs", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--page", type=int, default=100)
    ap.add_argument("--serve-fake", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--now", type=float, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.serve_fake:
        serve_fake(a.serve_fake, a.dags, a.runs, a.page, a.now)
        return 0
    now = time.time()
    port = free_port()
    fake = subprocess.Popen([sys.executable, __file__, "--serve-fake", str(port), "--now", str(now),
                             "--dags", str(a.dags), "--runs", str(a.runs), "--page", str(a.page)])
    try:
        wait_for(lambda: port_open("127.0.0.1", port), timeout=120, what="the fake Airflow")
        url = f"http://127.0.0.1:{port}"
        s = view(load_data({"exporters": {"automation": {
            "cache_ttl": "0s", "page_limit": a.page, "timeout": "9s", "max_dags": 100,
            "airflow": {"api_version": "v2", "password": PASSWORD}}}}), "exporters.automation")
        collector = AutomationCollector(s, url)
        reg = registry_for(collector)
        since = now - s.window
        text = generate_latest(reg).decode()  # warm-up (token, version, connections)
        if 'opsstack_automation_up{source="airflow"} 1.0' not in text:
            print(text[-2000:], file=sys.stderr)
            raise SystemExit("the exporter could not read the fake Airflow")
        pages = peer_fetch(url, a.page, since)
        series = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
        ours, peer = [], []
        for _ in range(a.rounds):
            ours.append(measure(lambda: generate_latest(reg)))
            peer.append(measure(lambda: peer_fetch(url, a.page, since)))

        def med(xs, i):
            return statistics.median(x[i] for x in xs)
        out = {
            "dags": a.dags, "runs": a.runs, "page_limit": a.page, "rounds": a.rounds, "pages_per_scrape": pages,
            "runs_read": collector.snapshot.runs_read if collector.snapshot else None, "series": series,
            "exporter": {"wall_s_median": med(ours, 0), "cpu_s_median": med(ours, 1),
                         "wall_s_max": max(x[0] for x in ours)},
            "peer_plain_fetch": {"wall_s_median": med(peer, 0), "cpu_s_median": med(peer, 1),
                                 "wall_s_max": max(x[0] for x in peer)},
        }
        out["ratio_wall"] = out["exporter"]["wall_s_median"] / out["peer_plain_fetch"]["wall_s_median"]
        out["ratio_cpu"] = out["exporter"]["cpu_s_median"] / max(1e-9, out["peer_plain_fetch"]["cpu_s_median"])
        res = ROOT / "bench" / "results"
        res.mkdir(exist_ok=True)
        (res / "automation_exporter_bench.json").write_text(json.dumps(out, indent=2) + "\n")
        print(json.dumps(out, indent=2))
    finally:
        fake.terminate()
        fake.wait(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
