"""Our prober (`opsstack exporter app`) vs prometheus-blackbox-exporter on the same local targets.

    .venv/bin/python bench/probe_bench.py [--targets 1000] [--hanging-pct 5] [--cycles 5]
        [--timeout 5] [--scrape-timeout 10] [--repeats 10]

Everything runs on 127.0.0.1 in temporary folders: a target farm (its own process, asyncio,
several ports), the two exporters as real processes, and the driver (this process).

(a) accuracy: farm targets that answer after a known delay (100 ms, 500 ms); each prober
    probes each --repeats times; reported total probe duration vs truth.
(b) scale: --targets targets (http GET, 2xx = success), --hanging-pct of them accept the TCP
    connection and never answer. One cycle = every target probed once:
    ours: one scrape of /metrics (the exporter probes every target at once, one deadline);
    blackbox: one /probe?module=http_2xx&target=... request per target, all at once, as
    Prometheus scrapes blackbox (X-Prometheus-Scrape-Timeout-Seconds sent).
    Both have the same probe timeout (--timeout; blackbox module timeout). Per cycle: wall time
    until every result is in, CPU of each exporter process (/proc/<pid>/stat utime+stime) and
    of the farm, and whether every result came in within --scrape-timeout and was right
    (healthy up, hanging down/timed out). Cycles alternate ours/blackbox; the first of each
    is a warm-up and not counted. CPU per target = CPU of the counted cycles / targets probed.

Results: bench/results/probe_bench.json.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from core.procs import binary, free_port, stop_process, wait_http  # noqa: E402
from tests.support.demo import AppExporterProcess  # noqa: E402

HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------ target farm (own process)
class _FarmConn(asyncio.Protocol):
    """GET /ok/* -> 200 at once; /delay/<ms> -> 200 after <ms>; /hang/* -> never answers."""

    def connection_made(self, transport):
        self.t = transport
        self.buf = b""

    def data_received(self, data):
        self.buf += data
        if b"\r\n\r\n" not in self.buf:
            return
        path = self.buf.split(b" ", 2)[1].decode("latin-1")
        self.buf = b""
        if path.startswith("/hang/"):
            return  # keep the connection open, say nothing
        m = re.fullmatch(r"/delay/(\d+)", path)
        if m:
            asyncio.get_running_loop().call_later(int(m.group(1)) / 1000.0, self._ok)
        elif path.startswith("/ok/"):
            self._ok()
        else:
            self.t.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            self.t.close()

    def _ok(self):
        if not self.t.is_closing():
            self.t.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
                         b"Connection: close\r\n\r\nok\n")
            self.t.close()


def serve_farm(nports: int) -> None:
    async def main():
        loop = asyncio.get_running_loop()
        servers = [await loop.create_server(_FarmConn, HOST, 0, backlog=4096) for _ in range(nports)]
        print(json.dumps([s.sockets[0].getsockname()[1] for s in servers]), flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


# ------------------------------------------------------------------ helpers
def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def get(url: str, timeout: float = 30, headers: dict | None = None) -> str:
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read().decode()


def metric(text: str, name: str) -> float | None:
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


async def _aget(port: int, path: str, headers: dict, timeout: float) -> tuple[str | None, float]:
    """GET http://HOST:port/path (HTTP/1.0, read to EOF): (body or None on failure, seconds)."""
    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            r, w = await asyncio.open_connection(HOST, port)
            head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            w.write(f"GET {path} HTTP/1.0\r\nHost: {HOST}:{port}\r\n{head}\r\n".encode())
            data = await r.read()
            w.close()
        head, _, rest = data.partition(b"\r\n\r\n")
        body = rest.decode() if head.split(b" ", 2)[1:2] == [b"200"] else None
    except (OSError, TimeoutError, IndexError):
        body = None
    return body, time.perf_counter() - t0


class Blackbox:
    def __init__(self, workdir: Path, timeout: float, scrape_timeout: float):
        self.port = free_port()
        self.scrape_timeout = scrape_timeout
        cfg = workdir / "blackbox.yml"
        cfg.write_text(
            "modules:\n"
            "  http_2xx:\n"
            "    prober: http\n"
            f"    timeout: {timeout}s\n"
            "    http:\n"
            "      method: GET\n"
            "      preferred_ip_protocol: ip4\n"
            "      ip_protocol_fallback: false\n")
        self.log = open(workdir / "blackbox.log", "ab")
        self.proc = subprocess.Popen([binary("blackbox_exporter"), f"--config.file={cfg}",
                                      f"--web.listen-address={HOST}:{self.port}"],
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_http(f"http://{HOST}:{self.port}/metrics", timeout=20, proc=self.proc)

    def _path(self, target: str) -> str:
        return f"/probe?module=http_2xx&target={quote(target, safe='')}"

    def probe(self, target: str) -> tuple[bool, float]:
        text = get(f"http://{HOST}:{self.port}{self._path(target)}", timeout=self.scrape_timeout + 5,
                   headers={"X-Prometheus-Scrape-Timeout-Seconds": str(self.scrape_timeout)})
        return metric(text, "probe_success") == 1, metric(text, "probe_duration_seconds") or 0.0

    def probe_all(self, targets: list[str]) -> list[tuple[bool | None, float, float | None]]:
        """Every target at once, one /probe request each: [(success or None if no answer, request
        latency seen by the driver, probe_duration_seconds blackbox reports)]."""
        hdr = {"X-Prometheus-Scrape-Timeout-Seconds": str(self.scrape_timeout)}

        async def run():
            return await asyncio.gather(*(_aget(self.port, self._path(t), hdr, self.scrape_timeout + 5)
                                          for t in targets))

        out = []
        for body, secs in asyncio.run(run()):
            out.append((None if body is None else metric(body, "probe_success") == 1, secs,
                        metric(body, "probe_duration_seconds") if body else None))
        return out

    def version(self) -> str:
        out = subprocess.run([binary("blackbox_exporter"), "--version"], capture_output=True, text=True)
        return (out.stdout + out.stderr).splitlines()[0] if (out.stdout + out.stderr) else "?"

    def stop(self) -> None:
        stop_process(self.proc, 10)
        self.log.close()


def summarize(values: list[float], truth: float) -> dict:
    med = statistics.median(values)
    return {"n": len(values), "median_s": med, "mean_s": statistics.mean(values), "min_s": min(values),
            "max_s": max(values), "median_error_pct": 100.0 * (med - truth) / truth,
            "mean_error_pct": 100.0 * (statistics.mean(values) - truth) / truth}


def our_results(text: str) -> dict[str, tuple[float, float]]:
    """service -> (opsstack_probe_up, opsstack_probe_timed_out) from one scrape."""
    up, to = {}, {}
    for fam in text_string_to_metric_families(text):
        if fam.name == "opsstack_probe_up":
            up = {s.labels["service"]: s.value for s in fam.samples}
        elif fam.name == "opsstack_probe_timed_out":
            to = {s.labels["service"]: s.value for s in fam.samples}
    return {k: (v, to.get(k, -1.0)) for k, v in up.items()}


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


# ------------------------------------------------------------------ the bench
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", type=int, default=1000)
    ap.add_argument("--hanging-pct", type=float, default=5.0)
    ap.add_argument("--cycles", type=int, default=5, help="counted cycles per exporter (plus 1 warm-up)")
    # defaults: opsstack's own (exporters.app.probe_timeout, stack.scrape_timeout)
    ap.add_argument("--timeout", type=float, default=5.0, help="probe timeout of both probers (s)")
    ap.add_argument("--scrape-timeout", type=float, default=10.0, help="scrape timeout (s)")
    ap.add_argument("--repeats", type=int, default=10, help="(a) accuracy repeats; 0 skips (a)")
    ap.add_argument("--farm-ports", type=int, default=8)
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "probe_bench.json"))
    ap.add_argument("--serve-farm", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_farm:
        serve_farm(args.serve_farm)
        return 0
    if not args.timeout < args.scrape_timeout:
        ap.error("--timeout must be shorter than --scrape-timeout")

    work = Path(tempfile.mkdtemp(prefix="opsstack-probe-bench-"))
    farm = subprocess.Popen([sys.executable, __file__, "--serve-farm", str(args.farm_ports)],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    procs: list = []
    result: dict = {"command": " ".join([".venv/bin/python bench/probe_bench.py", *sys.argv[1:]]),
                    "timeout_s": args.timeout,
                    "scrape_timeout_s": args.scrape_timeout, "cpus": os.cpu_count(), "loadavg_start": loadavg()}
    try:
        ports = json.loads(farm.stdout.readline())
        base = [f"http://{HOST}:{p}" for p in ports]
        bb = Blackbox(work, args.timeout, args.scrape_timeout)
        procs.append(bb)
        result["blackbox_version"] = bb.version()

        # (a) accuracy ---------------------------------------------------------------
        if args.repeats > 0:
            delays = [100, 500]
            services = [{"name": f"delay-{d}", "endpoints": {"seoul": base[0]}, "health_path": f"/delay/{d}"}
                        for d in delays]
            ours = AppExporterProcess(work / "ours-a", services, probe_timeout=f"{args.timeout}s",
                                      scrape_timeout=f"{args.scrape_timeout}s")
            ours.start()
            procs.append(ours)
            ours.scrape()  # warm up
            bb.probe(f"{base[0]}/delay/0")
            got: dict = {d: {"ours": [], "blackbox": []} for d in delays}
            for _ in range(args.repeats):
                fams = {(s.name, s.labels.get("service"), s.labels.get("phase")): s.value
                        for f in text_string_to_metric_families(ours.scrape()) for s in f.samples}
                for d in delays:
                    got[d]["ours"].append(fams[("opsstack_probe_duration_seconds", f"delay-{d}", "total")])
                for d in delays:
                    got[d]["blackbox"].append(bb.probe(f"{base[0]}/delay/{d}")[1])
            ours.stop()
            procs.remove(ours)
            result["accuracy"] = {str(d): {k: summarize(vs, d / 1000.0) for k, vs in got[d].items()}
                                  for d in delays}

        # (b) scale --------------------------------------------------------------------
        n = args.targets
        every = max(1, round(100 / args.hanging_pct)) if args.hanging_pct > 0 else 0
        hanging = {i for i in range(n) if every and i % every == every - 1}
        urls = [f"{base[i % len(base)]}/{'hang' if i in hanging else 'ok'}/{i}" for i in range(n)]
        services = [{"name": f"t{i:05d}", "endpoints": {"seoul": base[i % len(base)]},
                     "health_path": f"/{'hang' if i in hanging else 'ok'}/{i}"} for i in range(n)]
        ours = AppExporterProcess(work / "ours-b", services, probe_timeout=f"{args.timeout}s",
                                  scrape_timeout=f"{args.scrape_timeout}s")
        ours.start()
        procs.append(ours)
        scale = {"targets": n, "hanging": len(hanging), "cycles": args.cycles,
                 "ours": {"cycles": []}, "blackbox": {"cycles": []}, "farm_cpu_s": 0.0}
        for c in range(args.cycles + 1):
            # ours: one scrape probes every target
            f0, c0, t0 = cpu_seconds(farm.pid), cpu_seconds(ours.pid), time.perf_counter()
            try:
                text = ours.scrape(timeout=args.scrape_timeout)
                wall = time.perf_counter() - t0
            except OSError as exc:
                text, wall = "", time.perf_counter() - t0
                print(f"ours: scrape failed: {exc}", file=sys.stderr)
            cpu, fcpu = cpu_seconds(ours.pid) - c0, cpu_seconds(farm.pid) - f0
            res = our_results(text)
            right = sum(1 for i in range(n) if res.get(f"t{i:05d}") == ((0.0, 1.0) if i in hanging else (1.0, 0.0)))
            ours_cycle = {"wall_s": wall, "cpu_s": cpu, "farm_cpu_s": fcpu, "answered": len(res), "right": right,
                          "healthy_up": sum(res.get(f"t{i:05d}", (0,))[0] == 1.0 for i in range(n) if i not in hanging),
                          "hanging_down": sum(res.get(f"t{i:05d}", (1,))[0] == 0.0 for i in hanging),
                          "within_scrape_timeout": bool(text) and wall <= args.scrape_timeout}
            # blackbox: one /probe per target, all at once
            f0, c0, t0 = cpu_seconds(farm.pid), cpu_seconds(bb.proc.pid), time.perf_counter()
            d0 = time.process_time()
            got = bb.probe_all(urls)
            wall = time.perf_counter() - t0
            dcpu = time.process_time() - d0
            cpu, fcpu = cpu_seconds(bb.proc.pid) - c0, cpu_seconds(farm.pid) - f0
            right = sum(1 for i, (ok, _, _) in enumerate(got) if ok is not None and ok == (i not in hanging))
            lat = sorted(s for _, s, _ in got)
            bb_cycle = {"wall_s": wall, "cpu_s": cpu, "farm_cpu_s": fcpu, "driver_cpu_s": dcpu,
                        "answered": sum(ok is not None for ok, _, _ in got), "right": right,
                        "healthy_up": sum(got[i][0] is True for i in range(n) if i not in hanging),
                        "hanging_down": sum(got[i][0] is False for i in hanging),
                        "request_s_median": lat[len(lat) // 2], "request_s_max": lat[-1],
                        "requests_over_scrape_timeout": sum(s > args.scrape_timeout for s in lat),
                        "probe_duration_s_max": max((d for _, _, d in got if d is not None), default=None),
                        "within_scrape_timeout": all(ok is not None and s <= args.scrape_timeout
                                                     for ok, s, _ in got)}
            tag = "warm-up" if c == 0 else f"cycle {c}"
            for who, cy in (("ours", ours_cycle), ("blackbox", bb_cycle)):
                print(f"{tag:>8} {who:>8}: wall {cy['wall_s']:6.3f}s cpu {cy['cpu_s']:6.2f}s "
                      f"right {cy['right']}/{n} (healthy up {cy['healthy_up']}/{n - len(hanging)}, hanging down "
                      f"{cy['hanging_down']}/{len(hanging)}) within {cy['within_scrape_timeout']}"
                      + (f" (requests over the scrape timeout: {cy['requests_over_scrape_timeout']}, "
                         f"slowest {cy['request_s_max']:.3f}s, longest probe_duration_seconds "
                         f"{cy['probe_duration_s_max']}, driver CPU {cy['driver_cpu_s']:.2f}s)"
                         if who == "blackbox" else ""), flush=True)
                if c > 0:
                    scale[who]["cycles"].append(cy)
        for who, pid in (("ours", ours.pid), ("blackbox", bb.proc.pid)):
            cys = scale[who]["cycles"]
            probed = n * len(cys)
            scale[who].update({
                "cpu_ms_per_target": 1000 * sum(cy["cpu_s"] for cy in cys) / probed,
                "farm_cpu_ms_per_target": 1000 * sum(cy["farm_cpu_s"] for cy in cys) / probed,
                "wall_s_median": statistics.median(cy["wall_s"] for cy in cys),
                "wall_s_max": max(cy["wall_s"] for cy in cys),
                "all_right": all(cy["right"] == n for cy in cys),
                "all_within_scrape_timeout": all(cy["within_scrape_timeout"] for cy in cys),
                "rss_mb_after": rss_mb(pid)})
        bbc = scale["blackbox"]["cycles"]
        scale["blackbox"]["requests_over_scrape_timeout"] = sum(cy["requests_over_scrape_timeout"] for cy in bbc)
        scale["blackbox"]["driver_cpu_ms_per_target"] = 1000 * sum(cy["driver_cpu_s"] for cy in bbc) / (n * len(bbc))
        scale["cpu_ratio_ours_over_blackbox"] = (scale["ours"]["cpu_ms_per_target"]
                                                 / scale["blackbox"]["cpu_ms_per_target"])
        result["scale"] = scale
    finally:
        for p in reversed(procs):
            p.stop()
        stop_process(farm, 10)
    result["loadavg_end"] = loadavg()
    _print(result)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    return 0


def _print(r: dict) -> None:
    print(f"\nprobe bench: our prober vs {r.get('blackbox_version', 'blackbox_exporter')}, "
          f"probe timeout {r['timeout_s']:g}s, scrape timeout {r['scrape_timeout_s']:g}s, "
          f"load {r['loadavg_start']:.1f} -> {r['loadavg_end']:.1f} on {r['cpus']} CPUs")
    if "accuracy" in r:
        print("\n(a) reported total probe duration vs injected delay (truth)")
        print(f"{'delay':>7} {'prober':>10} {'n':>3} {'median':>10} {'mean':>10} {'err(median)':>12}")
        for d, by in r["accuracy"].items():
            for who, s in by.items():
                print(f"{d + 'ms':>7} {who:>10} {s['n']:>3} {s['median_s'] * 1000:>8.2f}ms "
                      f"{s['mean_s'] * 1000:>8.2f}ms {s['median_error_pct']:>+11.2f}%")
    s = r["scale"]
    print(f"\n(b) {s['targets']} targets, {s['hanging']} hanging, {s['cycles']} counted cycles")
    for who in ("ours", "blackbox"):
        x = s[who]
        print(f"{who:>9}: CPU {x['cpu_ms_per_target']:.3f} ms/target (farm {x['farm_cpu_ms_per_target']:.3f}), "
              f"wall/cycle median {x['wall_s_median']:.3f}s max {x['wall_s_max']:.3f}s, "
              f"all right {x['all_right']}, all within scrape timeout {x['all_within_scrape_timeout']}, "
              f"RSS {x['rss_mb_after']:.0f} MB")
    b = s["blackbox"]
    print(f"blackbox /probe requests answered after the scrape timeout: {b['requests_over_scrape_timeout']} "
          f"(driver, this process, spent {b['driver_cpu_ms_per_target']:.3f} ms CPU/target issuing them)")
    print(f"CPU per target, ours / blackbox: {s['cpu_ratio_ours_over_blackbox']:.2f}")


if __name__ == "__main__":
    sys.exit(main())
