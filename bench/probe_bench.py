"""Our prober (`opsstack exporter app`) vs prometheus-blackbox-exporter on the same local targets.

    .venv/bin/python bench/probe_bench.py [--repeats 20] [--timeout 2] [--targets 100] [--hanging 5]

(a) accuracy: targets that answer after a known injected delay (100 ms, 500 ms); each
    prober probes each target --repeats times; reported total probe duration vs truth.
(b) hanging targets: --targets targets of which --hanging accept the connection and never
    answer; wall time until every probe result is in for one scrape. Ours: one scrape of
    the exporter (every target probed in parallel). Blackbox: one /probe request per target,
    all at once, as Prometheus scrapes them (X-Prometheus-Scrape-Timeout-Seconds sent);
    and one after the other, as a single sequential scraper would.

Everything runs on 127.0.0.1 in temporary folders: a target server process, the two
exporters as real processes, and the hanging sockets. Results also go to
bench/results/probe_bench.json.
"""
from __future__ import annotations

import argparse
import json
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from core.procs import binary, free_port, wait_http  # noqa: E402
from tests.support.demo import REGIONS, AppExporterProcess  # noqa: E402
from tests.support.fakehttp import FakeHTTP  # noqa: E402

HOST = "127.0.0.1"
SCRAPE_TIMEOUT = 10.0


# ------------------------------------------------------------------ target server (own process)
def serve_targets(port: int) -> None:
    """GET /delay/<ms> answers "ok" after <ms> milliseconds (the one fake HTTP server, HTTP/1.0)."""

    def delay(req):
        m = re.fullmatch(r"/delay/(\d+)", req.path)
        if not m:
            return 404, "not found\n"
        time.sleep(int(m.group(1)) / 1000.0)
        return 200, b"ok\n"

    FakeHTTP({"GET /delay/*": delay}, host=HOST, port=port, protocol="HTTP/1.0", backlog=256,
             record=False).serve_forever()


# ------------------------------------------------------------------ helpers
def get(url: str, timeout: float = 30, headers: dict | None = None) -> str:
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read().decode()


def metric(text: str, name: str, **labels) -> float | None:
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


class Blackbox:
    def __init__(self, workdir: Path, timeout: float):
        self.port = free_port()
        cfg = workdir / "blackbox.yml"
        cfg.write_text(
            "modules:\n"
            "  http_2xx:\n"
            "    prober: http\n"
            f"    timeout: {timeout}s\n"
            "    http:\n"
            "      preferred_ip_protocol: ip4\n"
            "      ip_protocol_fallback: false\n")
        self.log = open(workdir / "blackbox.log", "ab")
        self.proc = subprocess.Popen([binary("blackbox_exporter"), f"--config.file={cfg}",
                                      f"--web.listen-address={HOST}:{self.port}"],
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_http(f"http://{HOST}:{self.port}/metrics", timeout=20, proc=self.proc)

    def probe(self, target: str) -> tuple[bool, float]:
        text = get(f"http://{HOST}:{self.port}/probe?module=http_2xx&target={target}", timeout=SCRAPE_TIMEOUT + 5,
                   headers={"X-Prometheus-Scrape-Timeout-Seconds": str(SCRAPE_TIMEOUT)})
        return metric(text, "probe_success") == 1, metric(text, "probe_duration_seconds") or 0.0

    def version(self) -> str:
        out = subprocess.run([binary("blackbox_exporter"), "--version"], capture_output=True, text=True)
        return (out.stdout + out.stderr).splitlines()[0] if (out.stdout + out.stderr) else "?"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def summarize(values: list[float], truth: float) -> dict:
    med = statistics.median(values)
    return {"n": len(values), "median_s": med, "mean_s": statistics.mean(values), "min_s": min(values),
            "max_s": max(values), "median_error_pct": 100.0 * (med - truth) / truth,
            "mean_error_pct": 100.0 * (statistics.mean(values) - truth) / truth}


# ------------------------------------------------------------------ the bench
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--timeout", type=float, default=2.0, help="probe timeout of both probers (s)")
    ap.add_argument("--targets", type=int, default=100)
    ap.add_argument("--hanging", type=int, default=5)
    ap.add_argument("--serve-targets", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_targets:
        serve_targets(args.serve_targets)
        return 0
    if not 0 <= args.hanging <= args.targets:
        ap.error("--hanging must be between 0 and --targets")

    work = Path(tempfile.mkdtemp(prefix="opsstack-probe-bench-"))
    tport = free_port()
    target_srv = subprocess.Popen([sys.executable, __file__, "--serve-targets", str(tport)],
                                  start_new_session=True)
    hang_socks = []
    procs = []
    result: dict = {"timeout_s": args.timeout, "scrape_timeout_s": SCRAPE_TIMEOUT}
    try:
        wait_http(f"http://{HOST}:{tport}/delay/0", timeout=20, proc=target_srv)
        bb = Blackbox(work, args.timeout)
        procs.append(bb)
        result["blackbox_version"] = bb.version()
        base = f"http://{HOST}:{tport}"

        # (a) accuracy ---------------------------------------------------------------
        delays = [100, 500]
        services = [{"name": f"delay-{d}", "endpoints": {"seoul": base}, "health_path": f"/delay/{d}"}
                    for d in delays]
        ours = AppExporterProcess(work / "ours-a", services, probe_timeout=f"{args.timeout}s",
                                  scrape_timeout=f"{SCRAPE_TIMEOUT}s")
        ours.start()
        procs.append(ours)
        ours.scrape()  # warm up (first connection, imports)
        bb.probe(f"{base}/delay/0")
        got: dict = {d: {"ours": [], "blackbox": []} for d in delays}
        for _ in range(args.repeats):
            text = ours.scrape()
            for d in delays:
                v = metric(text, "opsstack_probe_duration_seconds", service=f"delay-{d}", region="seoul",
                           phase="total")
                got[d]["ours"].append(v)
            for d in delays:
                ok, v = bb.probe(f"{base}/delay/{d}")
                got[d]["blackbox"].append(v)
        ours.stop()
        result["accuracy"] = {str(d): {k: summarize(vs, d / 1000.0) for k, vs in got[d].items()} for d in delays}

        # (b) N targets, some hanging -------------------------------------------------
        for _ in range(args.hanging):
            s = socket.socket()
            s.bind((HOST, 0))
            s.listen(64)
            hang_socks.append(s)
        urls = [f"http://{HOST}:{s.getsockname()[1]}/" for s in hang_socks]
        urls += [f"{base}/delay/50" for _ in range(args.targets - args.hanging)]
        services = _group_by_path(urls)
        ours = AppExporterProcess(work / "ours-b", services, probe_timeout=f"{args.timeout}s",
                                  scrape_timeout=f"{SCRAPE_TIMEOUT}s")
        ours.start()
        procs.append(ours)
        t0 = time.perf_counter()
        text = ours.scrape(timeout=SCRAPE_TIMEOUT + 5)
        ours_wall = time.perf_counter() - t0
        ups = [s.value for fam in text_string_to_metric_families(text) if fam.name == "opsstack_probe_up"
               for s in fam.samples]
        ours.stop()

        with ThreadPoolExecutor(max_workers=len(urls)) as pool:
            t0 = time.perf_counter()
            bb_res = list(pool.map(bb.probe, urls))
            bb_wall = time.perf_counter() - t0
        t0 = time.perf_counter()
        bb_seq = [bb.probe(u) for u in urls]
        bb_seq_wall = time.perf_counter() - t0
        result["hanging"] = {
            "targets": len(urls), "hanging": args.hanging,
            "ours": {"wall_s": ours_wall, "up": int(sum(ups)), "probed": len(ups)},
            "blackbox_parallel": {"wall_s": bb_wall, "up": sum(ok for ok, _ in bb_res), "probed": len(bb_res)},
            "blackbox_sequential": {"wall_s": bb_seq_wall, "up": sum(ok for ok, _ in bb_seq),
                                    "probed": len(bb_seq)},
        }
    finally:
        for p in reversed(procs):
            p.stop()
        for s in hang_socks:
            s.close()
        target_srv.terminate()
        target_srv.wait(10)

    _print(result)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe_bench.json").write_text(json.dumps(result, indent=1))
    return 0


def _group_by_path(urls: list[str]) -> list[dict]:
    """Services of up to len(REGIONS) endpoints that share one health path."""
    by_path: dict[str, list[str]] = {}
    for u in urls:
        rest = u.split(f"{HOST}:", 1)[1]
        port, _, path = rest.partition("/")
        by_path.setdefault("/" + path, []).append(f"http://{HOST}:{port}")
    services = []
    for path, bases in by_path.items():
        for i in range(0, len(bases), len(REGIONS)):
            eps = dict(zip(REGIONS, bases[i:i + len(REGIONS)]))
            services.append({"name": f"svc-{len(services):03d}", "endpoints": eps, "health_path": path})
    return services


def _print(r: dict) -> None:
    print(f"probe bench: our prober vs {r.get('blackbox_version', 'blackbox_exporter')}, "
          f"probe timeout {r['timeout_s']:g}s, scrape timeout {r['scrape_timeout_s']:g}s")
    print("\n(a) reported total probe duration vs injected delay (truth)")
    print(f"{'delay':>7} {'prober':>10} {'n':>3} {'median':>10} {'mean':>10} {'err(median)':>12} {'err(mean)':>10}")
    for d, by in r["accuracy"].items():
        for who, s in by.items():
            print(f"{d + 'ms':>7} {who:>10} {s['n']:>3} {s['median_s'] * 1000:>8.2f}ms {s['mean_s'] * 1000:>8.2f}ms "
                  f"{s['median_error_pct']:>+11.2f}% {s['mean_error_pct']:>+9.2f}%")
    h = r["hanging"]
    print(f"\n(b) {h['targets']} targets, {h['hanging']} hanging: wall time until every result is in")
    for who in ("ours", "blackbox_parallel", "blackbox_sequential"):
        s = h[who]
        within = "yes" if s["wall_s"] < r["scrape_timeout_s"] else "NO"
        print(f"{who:>20}: {s['wall_s']:7.3f}s  up {s['up']}/{s['probed']}  within scrape timeout: {within}")
    print(f"\nratio ours / blackbox (parallel): {h['ours']['wall_s'] / h['blackbox_parallel']['wall_s']:.2f}")


if __name__ == "__main__":
    sys.exit(main())
