"""Our CDN exporter's Varnish and Redis collection vs prometheus-varnish-exporter and
prometheus-redis-exporter (Debian packages) on the same targets, in one run.

    .venv/bin/python bench/cdn_exporter_bench.py [--rounds 200] [--period 0.05] [--keys 20000]

Setup (all on 127.0.0.1, temporary folders): a varnishd of our own (-n workdir, the demo's
VCL: demo/varnish/opsstack.vcl) in front of a small origin (the one fake HTTP server, from
tests/support), warmed with a few hundred objects, and a redis-server of our own (no
persistence, 64 MB maxmemory) with --keys keys under cache: and some hits and misses.

Exporters, each a real process scraped over HTTP:
- ours-varnish: `python -m exporters.cdn.server` with only the varnish instance (class_counts
  off: the varnishncsa that counts requests per class works per request, not per scrape);
- go-varnish: prometheus-varnish-exporter -n <workdir>;
- ours-redis: `python -m exporters.cdn.server` with only the redis instance;
- go-redis: prometheus-redis-exporter -redis.addr redis://...;
- ours-both: our exporter with both (what the demo runs).

Measured in phases: each exporter in turn is scraped --rounds times (one every --period
seconds) while the others are paused (SIGSTOP), so the CPU of an exporter process (utime +
stime from /proc, threads included, plus cutime + cstime: the varnishstat both varnish
exporters run) during its phase is its own. Reported per exporter: median and p90 scrape time
(HTTP request to the last byte), CPU per scrape, series and metric families. Results go to
bench/results/cdn_exporter_bench.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from core.procs import binary, free_port, port_open, stop_process  # noqa: E402
from core.resp import RedisConn  # noqa: E402
from demo.varnish_conf import render_vcl, varnishd_argv  # noqa: E402
from tests.support.fakehttp import FakeHTTP  # noqa: E402
from tests.support.wait import wait_for  # noqa: E402

HOST = "127.0.0.1"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime + cutime + cstime of a process (its reaped children included)."""
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in f[11:15]) / TICK


def scrape(url: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as r:
        body = r.read().decode()
    return time.perf_counter() - t0, body


def families(text: str) -> tuple[int, int]:
    fams = list(text_string_to_metric_families(text))
    return len(fams), sum(len(f.samples) for f in fams)


def start_varnish(work: Path, procs: list) -> tuple[str, str, FakeHTTP]:
    def origin(req):
        p = req.path
        ct = "text/css" if p.startswith("/static/") else "application/json" if p.startswith("/api/") else "text/html"
        return 200, "x" * 2000, {"Content-Type": ct, "xkey": "bench " + p.strip("/").replace("/", "-")}
    srv = FakeHTTP({"GET *": origin}).start()
    host, port = srv.address.rsplit(":", 1)
    vcl = work / "opsstack.vcl"
    vcl.write_text(render_vcl(host, int(port)))
    wd = str(work / "varnish")
    vport = free_port()
    argv = varnishd_argv(shutil.which("varnishd", path="/usr/sbin:/usr/bin") or "varnishd", wd, f"{HOST}:{vport}",
                         f"{HOST}:{free_port()}", str(vcl), "malloc,64m")
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    procs.append(p)
    wait_for(lambda: port_open(HOST, vport), timeout=60, what="varnishd")
    wait_for(lambda: subprocess.run([binary("varnishstat"), "-j", "-n", wd], capture_output=True).returncode == 0,
             timeout=60, what="varnishstat")
    url = f"http://{HOST}:{vport}"
    for i in range(300):
        for prefix in ("/static/", "/api/", "/events/"):
            for _ in range(2):
                urllib.request.urlopen(f"{url}{prefix}{i}", timeout=10).read()
    return wd, url, srv


def start_redis(work: Path, keys: int, procs: list) -> str:
    port = free_port()
    p = subprocess.Popen([shutil.which("redis-server"), "--port", str(port), "--bind", HOST, "--save", "",
                          "--appendonly", "no", "--dir", str(work), "--maxmemory", "64mb",
                          "--maxmemory-policy", "allkeys-lru"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(p)
    wait_for(lambda: port_open(HOST, port), timeout=60, what="redis-server")
    url = f"redis://{HOST}:{port}/0"
    with RedisConn(url) as r:
        for i in range(0, keys, 500):
            args = []
            for j in range(i, min(keys, i + 500)):
                args += [f"cache:obj:{j}", "v" * 100]
            r.command("MSET", *args)
        for i in range(2000):
            r.command("GET", f"cache:obj:{i * 7}")
    return url


def our_exporter(work: Path, name: str, cdn: dict, procs: list) -> dict:
    port = free_port()
    conf = work / f"{name}.yaml"
    conf.write_text(yaml.safe_dump({"stack": {"run_dir": str(work / ".run")}, "exporters": {"cdn": cdn}}))
    p = subprocess.Popen([sys.executable, "-m", "exporters.cdn.server", "-c", str(conf), "--port", str(port)],
                         cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(p)
    return {"name": name, "proc": p, "url": f"http://{HOST}:{port}/metrics"}


def go_exporter(name: str, argv: list[str], port: int, procs: list) -> dict:
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(p)
    return {"name": name, "proc": p, "url": f"http://{HOST}:{port}/metrics"}


def measure(exporters: list[dict], rounds: int, period: float) -> dict:
    for e in exporters:
        wait_for(lambda e=e: scrape(e["url"]), timeout=60, what=e["name"])
        scrape(e["url"])  # warm
    out = {}
    for e in exporters:
        for o in exporters:
            if o is not e:
                os.kill(o["proc"].pid, signal.SIGSTOP)
        try:
            times, c0 = [], cpu_seconds(e["proc"].pid)
            body = ""
            for _ in range(rounds):
                t, body = scrape(e["url"])
                times.append(t)
                time.sleep(period)
            cpu = cpu_seconds(e["proc"].pid) - c0
        finally:
            for o in exporters:
                if o is not e:
                    os.kill(o["proc"].pid, signal.SIGCONT)
        fams, series = families(body)
        times.sort()
        out[e["name"]] = {"median_seconds": statistics.median(times), "p90_seconds": times[int(len(times) * 0.9) - 1],
                          "cpu_seconds_per_scrape": cpu / rounds, "families": fams, "series": series,
                          "scrapes": rounds}
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--period", type=float, default=0.05)
    ap.add_argument("--keys", type=int, default=20000)
    a = ap.parse_args()
    procs: list = []
    origin = None
    with tempfile.TemporaryDirectory(prefix="cdn-bench-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)
        try:
            wd, _vurl, origin = start_varnish(work, procs)
            rurl = start_redis(work, a.keys, procs)
            # scrape cost only: no varnishncsa (requests per class) beside ours, none beside theirs
            vs = {"varnishstat": binary("varnishstat"), "class_counts": False,
                  "instances": [{"name": "edge", "workdir": wd}]}
            rs = {"instances": [{"name": "cache", "url": rurl}]}
            gv, gr = free_port(), free_port()
            exporters = [
                our_exporter(work, "ours-varnish", {"varnish": vs}, procs),
                go_exporter("go-varnish", [binary("prometheus-varnish-exporter"), "-n", wd, "-varnishstat-path",
                                           binary("varnishstat"), "-web.listen-address", f"{HOST}:{gv}"], gv, procs),
                our_exporter(work, "ours-redis", {"redis": rs}, procs),
                go_exporter("go-redis", [binary("prometheus-redis-exporter"), "-redis.addr", rurl,
                                         "-web.listen-address", f"{HOST}:{gr}"], gr, procs),
                our_exporter(work, "ours-both", {"varnish": vs, "redis": rs}, procs),
            ]
            res = measure(exporters, a.rounds, a.period)
        finally:
            for p in reversed(procs):
                stop_process(p)
            if origin is not None:
                origin.stop()
    result = {"rounds": a.rounds, "period": a.period, "keys": a.keys, "cpus": os.cpu_count(),
              "load1": os.getloadavg()[0], "exporters": res}
    out = ROOT / "bench" / "results" / "cdn_exporter_bench.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'exporter':<14} {'median':>9} {'p90':>9} {'cpu/scrape':>11} {'families':>9} {'series':>7}")
    for n, e in res.items():
        print(f"{n:<14} {e['median_seconds'] * 1000:>7.1f}ms {e['p90_seconds'] * 1000:>7.1f}ms "
              f"{e['cpu_seconds_per_scrape'] * 1000:>9.2f}ms {e['families']:>9} {e['series']:>7}")
    for ours, theirs in (("ours-varnish", "go-varnish"), ("ours-redis", "go-redis")):
        o, t = res[ours], res[theirs]
        print(f"{ours} vs {theirs}: scrape time x{o['median_seconds'] / t['median_seconds']:.2f}, "
              f"CPU x{o['cpu_seconds_per_scrape'] / max(t['cpu_seconds_per_scrape'], 1e-9):.2f}")
    print(f"written {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
