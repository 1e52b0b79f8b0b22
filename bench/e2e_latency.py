"""Fault -> ticket and heal -> resolved latency on the native stack, beside the floor the
configuration imposes (scrape interval + evaluation interval + `for` + group_wait).

    .venv/bin/python bench/e2e_latency.py [--runs 5] [--service user-app]

Starts its own stack in a temporary folder with short intervals, runs N service-down
faults one after another, and prints one row per run and the medians.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stack.config import load  # noqa: E402
from stack.harness import StackHandle, fast_config, wait_for  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--service", default="user-app")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="opsstack-bench-e2e-"))
    # remediation off: this measures the alert pipeline, not a playbook healing the fault first
    stack = StackHandle(fast_config(work / ".run", remediation__enabled=False), work)
    print(f"starting the native stack in {work} ...", flush=True)
    stack.up()
    cfg = load(stack.config_file)
    r = stack.resolved
    group_wait = cfg["alertmanager"]["critical_group_wait"]  # ServiceDown is critical
    floor_fire = cfg["stack"]["scrape_interval"] + cfg["stack"]["evaluation_interval"] + \
        cfg["alerts"]["service_down_for"] + (group_wait or 0)
    print(f"floor (scrape {cfg['stack']['scrape_interval']:g}s + eval {cfg['stack']['evaluation_interval']:g}s"
          f" + for {cfg['alerts']['service_down_for']:g}s + group_wait {group_wait or 0:g}s) = {floor_fire:.1f}s")
    fire, heal = [], []
    try:
        for i in range(args.runs):
            seen = {t["id"] for t in stack.tickets()}
            t0 = time.monotonic()
            stack.cli("demo", "fault", "service-down", "--service", args.service)
            new = wait_for(lambda: [t for t in stack.tickets("open") if t["id"] not in seen
                                    and t["alertname"] == "ServiceDown" and t["service"] == args.service],
                           180, interval=0.1, what="ticket")
            t1 = time.monotonic()
            stack.cli("demo", "heal")
            ids = {t["id"] for t in new}
            wait_for(lambda: len([t for t in stack.tickets("resolved") if t["id"] in ids]) == len(ids),
                     240, interval=0.1, what="resolved")
            t2 = time.monotonic()
            fire.append(t1 - t0)
            heal.append(t2 - t1)
            print(f"run {i + 1}: fault->ticket {t1 - t0:6.1f}s   heal->resolved {t2 - t1:6.1f}s", flush=True)
            # let the alert leave Alertmanager before the next run, so runs are independent
            wait_for(lambda: not stack.firing_alerts("ServiceDown"), 120, what="alert gone")
            time.sleep(cfg["stack"]["scrape_interval"] * 2)
    finally:
        stack.down()
    print(f"\nmedian fault->ticket {statistics.median(fire):.1f}s (floor {floor_fire:.1f}s, "
          f"ratio {statistics.median(fire) / floor_fire:.2f}x); "
          f"median heal->resolved {statistics.median(heal):.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
