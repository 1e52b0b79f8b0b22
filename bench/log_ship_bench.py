"""Shipping log lines to Loki's push API: our path against honest peers, in one run.

    .venv/bin/python bench/log_ship_bench.py [--lines 100000] [--runs 2]

No Grafana Loki and no promtail can be installed on the dev/CI machines (Debian has neither:
its `loki` package is an unrelated genetics program; docs/logs.md). So every path pushes to the
same receiving end, a minimal push sink in its own process (reads each request body, parses the
JSON, counts the entries, answers 204) standing in for Loki's distributor, and the peers are:

- floor: `cat FILE > /dev/null` (reading the file, nothing else);
- curl: the whole file as ONE push body (built beforehand, not timed) sent by `curl
  --data-binary` to the sink: the wire cost of the leanest possible client, no batching;
- ours: the lines of the same file read and logged through `logging` into core.logship's
  LokiHandler (format, UTF-8 escape, cut to max_line_bytes, bounded queue, batches of
  --batch-size, one background thread posting to the sink) until the sink has counted every
  line: the path every opsstack component takes.

The file: --lines key=value lines as the components log them (a demo request failure, an
exporter scrape, a receiver event), 1 in 10,000 of them 1 MB long, 1 in 1,000 with invalid
UTF-8 bytes. For each path: wall time, lines/s, CPU seconds per 10,000 lines (ours: this
process's rusage, the sink excluded; cat/curl: their rusage). Best of --runs.

Not measured here: promtail (not packaged), and Loki's own ingest cost on the running demo
(no Loki binary on this machine): run it where Loki is installed (docs/logs.md says how).

Results: bench/results/log_ship_bench.json.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.logship import LokiHandler  # noqa: E402
from core.procs import free_port  # noqa: E402

SINK = r'''
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
count = 0
class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_POST(self):
        global count
        body = self.rfile.read(int(self.headers["Content-Length"]))
        doc = json.loads(body.decode("utf-8"))
        count += sum(len(s["values"]) for s in doc["streams"])
        self.send_response(204); self.end_headers()
    def do_GET(self):
        data = str(count).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(data))); self.end_headers()
        self.wfile.write(data)
    def do_DELETE(self):
        global count
        count = 0
        self.send_response(204); self.end_headers()
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
'''


def make_file(path: Path, n: int) -> None:
    rng = random.Random(17)
    with open(path, "wb") as f:
        for i in range(n):
            kind = i % 3
            if i % 10000 == 9999:
                line = b"ts=2026-11-29T22:00:00 level=ERROR logger=opsstack.demo event=huge msg=" + b"x" * 1_000_000
            elif kind == 0:
                line = (f"ts=2026-11-29T22:00:{i % 60:02d} level=ERROR logger=opsstack.demo event=request_failed "
                        f"service=user-app region=seoul route=/api/me code={500 + rng.randint(0, 3)} "
                        f"fault=error-burst suppressed=0").encode()
            elif kind == 1:
                line = (f"ts=2026-11-29T22:00:{i % 60:02d} level=INFO logger=opsstack.exporter event=scrape "
                        f"exporter=app duration_seconds={rng.random():.4f} targets=12").encode()
            else:
                line = (f"ts=2026-11-29T22:00:{i % 60:02d} level=INFO logger=webhook_receiver.intake "
                        f"event=payload_applied alerts={rng.randint(1, 40)} ms={rng.random() * 30:.2f}").encode()
            if i % 1000 == 500:
                line += b" agent=\xff\xfe\xc3"
            f.write(line + b"\n")


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def sink_count(url: str) -> int:
    with urllib.request.urlopen(url, timeout=30) as r:
        return int(r.read())


def sink_reset(url: str) -> None:
    urllib.request.urlopen(urllib.request.Request(url, method="DELETE"), timeout=30).read()


def run_cat(path: Path) -> dict:
    c0, t0 = children_cpu(), time.perf_counter()
    subprocess.run(f"cat {path} > /dev/null", shell=True, check=True)
    return {"wall_s": time.perf_counter() - t0, "cpu_s": children_cpu() - c0}


def run_curl(path: Path, sink: str, n: int) -> dict:
    body = path.with_suffix(".json")
    values = []
    with open(path, "rb") as f:
        ts = time.time_ns()
        for i, raw in enumerate(f):
            values.append([str(ts + i), raw.rstrip(b"\n").decode("utf-8", "backslashreplace")])
    body.write_text(json.dumps({"streams": [{"stream": {"component": "bench", "level": "info"},
                                             "values": values}]}, ensure_ascii=False))
    sink_reset(sink)
    c0, t0 = children_cpu(), time.perf_counter()
    subprocess.run(["curl", "-sS", "-o", "/dev/null", "-H", "Content-Type: application/json",
                    "--data-binary", f"@{body}", sink + "/loki/api/v1/push"], check=True)
    wall, cpu = time.perf_counter() - t0, children_cpu() - c0
    got = sink_count(sink)
    body.unlink()
    assert got == n, f"curl: the sink counted {got} of {n}"
    return {"wall_s": wall, "cpu_s": cpu}


def run_ours(path: Path, sink: str, n: int, batch: int) -> dict:
    sink_reset(sink)
    h = LokiHandler(sink, {"component": "bench", "service": "opsstack"}, queue_size=max(10000, batch * 4),
                    batch_size=batch, flush_interval=0.2, stats_interval=3600)
    h.setFormatter(logging.Formatter("%(message)s"))
    lg = logging.getLogger("bench.logship")
    lg.propagate, lg.handlers = False, [h]
    lg.setLevel(logging.INFO)
    c0, t0 = self_cpu(), time.perf_counter()
    with open(path, "rb") as f:
        for raw in f:
            line = raw.rstrip(b"\n").decode("utf-8", "surrogateescape")
            # a full queue would drop: a component never waits; the bench paces to count drops honestly
            while h._q.full():
                time.sleep(0.001)
            lg.info(line)
    assert h.flush(600)
    wall, cpu = time.perf_counter() - t0, self_cpu() - c0
    got = sink_count(sink)
    h.close()
    assert got == n, f"ours: the sink counted {got} of {n} (dropped {h.counts})"
    return {"wall_s": wall, "cpu_s": cpu, "truncated": h.counts["truncated"],
            "dropped": h.counts["dropped_queue_full"] + h.counts["dropped_push_failed"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=100000)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=500)
    args = ap.parse_args()
    port = free_port()
    sink_proc = subprocess.Popen([sys.executable, "-c", SINK, str(port)])
    sink = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                sink_count(sink)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "components.log"
            make_file(path, args.lines)
            size = path.stat().st_size
            subprocess.run(f"cat {path} > /dev/null", shell=True, check=True)  # warm the page cache
            results: dict[str, list[dict]] = {"cat": [], "curl": [], "ours": []}
            for _ in range(args.runs):
                results["cat"].append(run_cat(path))
                results["curl"].append(run_curl(path, sink, args.lines))
                results["ours"].append(run_ours(path, sink, args.lines, args.batch_size))
        out = {"lines": args.lines, "file_bytes": size, "batch_size": args.batch_size, "runs": args.runs,
               "load_avg": os.getloadavg()[0], "paths": {}}
        for name, runs in results.items():
            best = min(runs, key=lambda r: r["wall_s"])
            out["paths"][name] = {**best, "lines_per_s": args.lines / best["wall_s"],
                                  "cpu_s_per_10k_lines": best["cpu_s"] / args.lines * 10000}
        p = out["paths"]
        out["ratios"] = {"ours_vs_curl_cpu": p["ours"]["cpu_s_per_10k_lines"] / max(p["curl"]["cpu_s_per_10k_lines"], 1e-9),
                         "ours_vs_cat_cpu": p["ours"]["cpu_s_per_10k_lines"] / max(p["cat"]["cpu_s_per_10k_lines"], 1e-9)}
        res_dir = Path(__file__).resolve().parent / "results"
        res_dir.mkdir(exist_ok=True)
        (res_dir / "log_ship_bench.json").write_text(json.dumps(out, indent=1))
        print(json.dumps(out, indent=1))
    finally:
        sink_proc.terminate()
        sink_proc.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
