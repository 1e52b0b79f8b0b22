"""Time per event request through the whole automated pipeline, on the demo, against the seed's
targets (15 minutes automated, 6 hours manual).

Starts a small native stack with `demo.airflow: true` (Apache Airflow 3 from .venv-airflow, the
event_creation DAG, the approver/dispatcher, the automation exporter; no edge, no forecaster, no
history), takes ``--requests`` event requests in through the Event Management service's API (a
third each of the auto, manager and executive tiers; ``--fail`` of them with an injected
configuration failure), and waits until each has ended. Nothing else is called: the dispatcher
starts one DAG run per request, the approver simulator approves after ``--approver-delay``.

Reported per tier: intake -> completed (p50, p95, max), the part of it spent waiting for a
person (the approval: requested_at -> decided_at, the simulator's delay), and the machine's part
(the rest); the rolled-back ones' intake -> rolled back; the ratio to the 15-minute target and to
the 6-hour manual process.

    .venv/bin/python bench/event_pipeline_bench.py [--requests 12] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from demo.airflow import launcher as AL  # noqa: E402
from tests.support.harness import automation_stack  # noqa: E402
from tests.support.http import json_call as _http  # noqa: E402

TARGET = 15 * 60.0
MANUAL = 6 * 3600.0
TIERS = [("auto", 60), ("manager", 300), ("executive", 800)]


def _t(s: str | None) -> float | None:
    return datetime.fromisoformat(s).timestamp() if s else None


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=12)
    ap.add_argument("--fail", type=int, default=1, help="requests with an injected configuration failure")
    ap.add_argument("--approver-delay", default="5s")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    if not AL.installed():
        print("Apache Airflow is not installed: run `make airflow-venv`", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="event-pipeline-bench-"))
    stack = automation_stack(work, approver_delay=a.approver_delay)
    t0 = time.time()
    stack.up(timeout=1200)
    up_seconds = time.time() - t0
    try:
        api = AL.event_api_url(stack.resolved) + "/api/v1/event-requests"
        made = []
        for i in range(a.requests):
            tier, attendees = TIERS[i % len(TIERS)]
            extra = {"inject_failure": "configure"} if i < a.fail else {}
            starts = (datetime.now(timezone.utc) + timedelta(days=30 + i)).replace(microsecond=0).isoformat()
            st, doc = _http("POST", api, {"customer": f"bench-{os.getpid()}-{i}", "title": f"Bench event {i}",
                                          "event_type": "conference", "attendees": attendees, "starts_at": starts,
                                          "contact_email": f"bench{i}@example.test", "channel": "api", **extra})
            if st != 201:
                raise SystemExit(f"intake answered {st}: {doc}")
            made.append((doc["id"], tier, bool(extra)))
        deadline = time.monotonic() + a.timeout
        final: dict[int, dict] = {}
        while len(final) < len(made) and time.monotonic() < deadline:
            for rid, _, _ in made:
                if rid not in final:
                    doc = _http("GET", f"{api}/{rid}")[1]
                    if doc.get("status") in ("completed", "rolled_back", "rejected"):
                        final[rid] = doc
            time.sleep(2)
    finally:
        stack.down()
    rows, out = [], {"up_seconds": round(up_seconds, 1), "requests": a.requests, "tiers": {}}
    for tier, _ in TIERS:
        total, human, machine = [], [], []
        for rid, t, failed in made:
            d = final.get(rid)
            if t != tier or failed or not d or d["status"] != "completed":
                continue
            span = _t(d["completed_at"]) - _t(d["created_at"])
            ap_ = d.get("approval") or {}
            wait = (_t(ap_.get("decided_at")) - _t(ap_.get("requested_at"))) if tier != "auto" and ap_.get(
                "decided_at") and ap_.get("requested_at") else 0.0
            total.append(span)
            human.append(wait)
            machine.append(span - wait)
        if total:
            out["tiers"][tier] = {"n": len(total), "p50": statistics.median(total), "p95": _pct(total, 0.95),
                                  "max": max(total), "approval_wait_p50": statistics.median(human),
                                  "machine_p50": statistics.median(machine)}
            rows.append(f"| {tier} | {len(total)} | {statistics.median(total):.1f} s | {_pct(total, 0.95):.1f} s | "
                        f"{max(total):.1f} s | {statistics.median(human):.1f} s | {statistics.median(machine):.1f} s | "
                        f"{max(total) / TARGET:.3f}x | {max(total) / MANUAL:.4f}x |")
    rolled = [_t(d.get("completed_at") or None) for d in final.values() if d["status"] == "rolled_back"]
    missing = len(made) - len(final)
    print(f"stack up in {up_seconds:.0f} s; {len(made)} requests, {missing} not finished within {a.timeout:.0f} s; "
          f"{sum(1 for d in final.values() if d['status'] == 'rolled_back')} rolled back (injected), "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print("| tier | n | intake -> completed p50 | p95 | max | approval wait (simulated person) p50 | "
          "machine p50 | max / 15 min target | max / 6 h manual |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    out["rolled_back"] = len(rolled)
    out["not_finished"] = missing
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
