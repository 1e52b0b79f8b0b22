"""Fault -> ticket and heal -> resolved latency on the native stack, beside the bound the
configuration imposes (scrape interval + evaluation interval + `for` + group_wait; of that,
`for` + group_wait is fixed and the rest is phase, so the window is for+group_wait .. the sum).

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

from core.config import load  # noqa: E402
from tests.support.harness import StackHandle, fast_config, wait_for  # noqa: E402


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
    group_wait = cfg["alertmanager"]["critical_group_wait"]  # ServiceDown is critical
    # the alert needs `for` of failing evaluations and Alertmanager waits group_wait: that part is
    # fixed; the first failing scrape and evaluation land anywhere within one interval each
    fixed = cfg["alerts"]["service_down_for"] + group_wait
    floor_fire = fixed + cfg["stack"]["scrape_interval"] + cfg["stack"]["evaluation_interval"]
    print(f"config bound (scrape {cfg['stack']['scrape_interval']:g}s + eval {cfg['stack']['evaluation_interval']:g}s"
          f" + for {cfg['alerts']['service_down_for']:g}s + group_wait {group_wait:g}s) = {floor_fire:.1f}s;"
          f" {fixed:.1f}s of it (for + group_wait) is fixed, the scrape and evaluation phases add 0..their interval")
    # resolving: the probe passes at the next scrape, the rule stops at the next evaluation, and
    # Alertmanager sends the resolved notification at the group's next group_interval flush
    floor_heal = cfg["stack"]["scrape_interval"] + cfg["stack"]["evaluation_interval"] + \
        cfg["alertmanager"]["critical_group_interval"]
    print(f"heal bound (scrape + eval + group_interval {cfg['alertmanager']['critical_group_interval']:g}s)"
          f" = {floor_heal:.1f}s; each part is a phase, so 0..{floor_heal:.1f}s")
    fire, heal = [], []

    def mine(status):
        return [t for t in stack.tickets(status)
                if t["alertname"] == "ServiceDown" and t["service"] == args.service]

    try:
        for i in range(args.runs):
            # every earlier episode is resolved; the next ticket is a new one or a reopened one
            # (a re-fire inside receiver.reopen_window reopens), either way it turns open
            wait_for(lambda: not mine("open"), 120, what="no open ServiceDown ticket")
            t0 = time.monotonic()
            stack.cli("demo", "fault", "service-down", "--service", args.service)
            opened = wait_for(lambda: mine("open"), 180, interval=0.1, what="ticket")
            t1 = time.monotonic()
            stack.cli("demo", "heal")
            ids = {t["id"] for t in opened}
            wait_for(lambda: not [t for t in mine("open") if t["id"] in ids], 240, interval=0.1, what="resolved")
            t2 = time.monotonic()
            fire.append(t1 - t0)
            heal.append(t2 - t1)
            print(f"run {i + 1}: fault->ticket {t1 - t0:6.1f}s   heal->resolved {t2 - t1:6.1f}s", flush=True)
            # let the alert leave Prometheus and Alertmanager before the next run
            wait_for(lambda: not stack.firing_alerts("ServiceDown"), 120, what="alert gone")
            time.sleep(cfg["stack"]["scrape_interval"] * 2)
    finally:
        stack.down()
    print(f"\nmedian fault->ticket {statistics.median(fire):.1f}s (config window {fixed:.1f}..{floor_fire:.1f}s, "
          f"{statistics.median(fire) / floor_fire:.2f}x the bound); "
          f"median heal->resolved {statistics.median(heal):.1f}s (config window 0..{floor_heal:.1f}s, "
          f"{statistics.median(heal) / floor_heal:.2f}x the bound)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
