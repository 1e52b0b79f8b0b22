"""The security exporter measured against peers in one run.

    .venv/bin/python bench/security_exporter_bench.py [--endpoints 70] [--rounds 15]
        [--size-mb 1024] [--skip-tls] [--skip-tail]

(a) TLS probe cost: our exporter (`opsstack exporter security`, a real process) vs
    prometheus-blackbox-exporter (Debian package, tcp prober with tls, one module per server
    name) on the same --endpoints TLS listeners on 127.0.0.1 (Python ssl servers in this
    process, cycling through the test PKI's cases: good, close to expiry, expired, wrong
    host name, unknown CA, cross-signed path, TLS 1.2 only; tests/support/tlscerts.py). One
    round = every endpoint handshaken once: ours, one /metrics scrape (every handshake on one
    event loop under one deadline); blackbox, one /probe request per endpoint, all at once
    (as Prometheus scrapes it). Rounds alternate; the first of each is a warm-up. Per round:
    wall time until every result is in, CPU of the exporter process (/proc utime+stime,
    threads included). Also what each reports for the cross-signed endpoint (earliest
    expiry over the presented chain vs the verified chain).
(b) Log tailer throughput: a --size-mb nginx access log (the JSON format we ship, a mix of
    vhosts, statuses and user agents) generated in /tmp and deleted after; `wc -l` (the floor)
    vs our Tailer alone (read, split, UTF-8 check: no-op sink) and Tailer + the access log
    parser (AccessCounts: status per vhost, agent classes). Page cache warm for all (the file
    is read once before); best of two runs each; lines must equal wc -l's. Both wall time and
    CPU time (ours: this process; wc: its rusage) are reported: on a loaded 2-core machine
    the wall ratio moves with the scheduler, the CPU ratio much less.

Results: bench/results/security_exporter_bench.json.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import random
import resource
import ssl
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

import yaml  # noqa: E402

from core.procs import binary, free_port, stop_process, wait_http  # noqa: E402
from exporters.security.access import AccessCounts  # noqa: E402
from exporters.security.tail import Tailer  # noqa: E402
from tests.support.tlscerts import DemoPki, TlsServers  # noqa: E402

KINDS = ("good", "soon", "expired", "wronghost", "unknown", "cross", "tls12")


def cpu_seconds(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def get(url: str, timeout: float = 60) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def metric(text: str, name: str, **labels) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return None


def bench_tls(args, work: Path) -> dict:
    pki = DemoPki(work / "pki")
    servers = TlsServers()
    endpoints = []  # (name, kind, port)
    for i in range(args.endpoints):
        kind = KINDS[i % len(KINDS)]
        port = servers.add(*pki.files[kind], max_version=ssl.TLSVersion.TLSv1_2 if kind == "tls12"
                           else None)
        endpoints.append((f"{kind}-{i}", kind, port))
    ours_port, bb_port = free_port(), free_port()
    cfg = {"stack": {"run_dir": str(work / "run"), "ports": {"exporter_security": ours_port}},
           "exporters": {"security": {"state_dir": str(work / "state"), "tls": {
               "probe_timeout": "5s", "ca_file": str(pki.bundle),
               "endpoints": [{"name": n, "address": f"127.0.0.1:{p}", "server_name": pki.server_name(k)}
                             for n, k, p in endpoints]}}}}
    (work / "ours.yaml").write_text(yaml.safe_dump(cfg))
    bb_cfg = {"modules": {f"tls_{k}": {"prober": "tcp", "timeout": "5s", "tcp": {
        "tls": True, "tls_config": {"ca_file": str(pki.bundle), "server_name": pki.server_name(k)}}} for k in KINDS}}
    (work / "blackbox.yml").write_text(yaml.safe_dump(bb_cfg))
    logs = open(work / "exporters.log", "ab")
    ours = subprocess.Popen([str(ROOT / ".venv/bin/opsstack"), "-c", str(work / "ours.yaml"), "exporter", "security"],
                            stdout=logs, stderr=logs, cwd=ROOT)
    bb = subprocess.Popen([binary("prometheus-blackbox-exporter"), f"--config.file={work / 'blackbox.yml'}",
                           f"--web.listen-address=127.0.0.1:{bb_port}"], stdout=logs, stderr=logs)
    try:
        wait_http(f"http://127.0.0.1:{ours_port}/metrics", timeout=60)
        wait_http(f"http://127.0.0.1:{bb_port}/metrics", timeout=60)
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=min(len(endpoints), 256))

        def bb_round():
            def one(e):
                name, kind, port = e
                return name, get(f"http://127.0.0.1:{bb_port}/probe?module=tls_{kind}&target="
                                 + quote(f"127.0.0.1:{port}"))
            return dict(pool.map(one, endpoints))

        res = {"ours": {"wall": [], "cpu": []}, "blackbox": {"wall": [], "cpu": []}}
        last = {}
        for r in range(args.rounds + 1):
            for who, proc, fn in (("ours", ours, lambda: get(f"http://127.0.0.1:{ours_port}/metrics")),
                                  ("blackbox", bb, bb_round)):
                c0, t0 = cpu_seconds(proc.pid), time.perf_counter()
                last[who] = fn()
                wall, cpu = time.perf_counter() - t0, cpu_seconds(proc.pid) - c0
                if r > 0:  # the first round is a warm-up
                    res[who]["wall"].append(wall)
                    res[who]["cpu"].append(cpu)
        out = {"endpoints": len(endpoints), "rounds": args.rounds,
               "blackbox_version": subprocess.run([binary("prometheus-blackbox-exporter"), "--version"],
                                                  capture_output=True, text=True).stdout.split("\n")[0] or "?"}
        for who, d in res.items():
            out[who] = {"round_wall_median_s": round(statistics.median(d["wall"]), 4),
                        "round_wall_p90_s": round(sorted(d["wall"])[int(0.9 * (len(d["wall"]) - 1))], 4),
                        "cpu_per_round_s": round(sum(d["cpu"]) / len(d["cpu"]), 4),
                        "cpu_per_handshake_ms": round(1000 * sum(d["cpu"]) / len(d["cpu"]) / len(endpoints), 3)}
        cross = next(n for n, k, _ in endpoints if k == "cross")
        bbx = last["blackbox"][cross]
        out["cross_signed_endpoint"] = {
            "truth": {"leaf": pki.leaves["cross"][0].not_after, "intermediate": pki.inter.not_after,
                      "cross_cert_presented": pki.cross.not_after, "root_in_bundle": pki.root.not_after},
            "ours": {"leaf": metric(last["ours"], "opsstack_tls_leaf_not_after_timestamp_seconds", endpoint=cross),
                     "verified_chain": metric(last["ours"], "opsstack_tls_chain_not_after_timestamp_seconds",
                                              endpoint=cross)},
            "blackbox": {"probe_ssl_earliest_cert_expiry": metric(bbx, "probe_ssl_earliest_cert_expiry"),
                         "probe_ssl_last_chain_expiry_timestamp_seconds":
                             metric(bbx, "probe_ssl_last_chain_expiry_timestamp_seconds")}}
        failing = {k: None for k in ("expired", "wronghost", "unknown")}
        for k in failing:
            n = next(n for n, kk, _ in endpoints if kk == k)
            reasons = [r for r in ("expired", "hostname_mismatch", "unknown_ca")
                       if metric(last["ours"], "opsstack_tls_handshake_error", endpoint=n, reason=r) == 1]
            failing[k] = {"ours_reason": reasons[0] if reasons else None,
                          "ours_leaf_known": metric(last["ours"], "opsstack_tls_leaf_not_after_timestamp_seconds",
                                                    endpoint=n) is not None,
                          "blackbox_success": metric(last["blackbox"][n], "probe_success"),
                          "blackbox_leaf_known": metric(last["blackbox"][n], "probe_ssl_earliest_cert_expiry")
                          is not None}
        out["failing_endpoints"] = failing
        return out
    finally:
        stop_process(ours)
        stop_process(bb)
        servers.close()


UAS = ["Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
       "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
       "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "curl/8.5.0",
       "sqlmap/1.7.2#stable (https://sqlmap.org)", "python-requests/2.31.0", "-", "opsstack-prober/1"]


def make_log(path: Path, size: int) -> None:
    rnd = random.Random(7)
    lines = []
    for i in range(20000):
        st = rnd.choices([200, 304, 401, 403, 404, 429, 500], [80, 5, 4, 3, 5, 2, 1])[0]
        lines.append(json.dumps({"time": f"2026-11-29T10:{i // 600 % 60:02d}:{i % 60:02d}+00:00",
                                 "vhost": rnd.choice(["shop.test", "api.test", "tickets.test", "admin.test"]),
                                 "status": st, "method": rnd.choice(["GET", "GET", "POST"]),
                                 "bytes": rnd.randint(0, 50000), "rt": round(rnd.random() / 5, 3),
                                 "ua": rnd.choice(UAS), "addr": f"198.51.100.{rnd.randint(1, 254)}"},
                                separators=(",", ":")))
    block = ("\n".join(lines) + "\n").encode()
    with open(path, "wb") as fh:
        written = 0
        while written < size:
            fh.write(block)
            written += len(block)


def _cpu() -> float:
    """CPU seconds of this process and its finished children (wc)."""
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + ch.ru_utime + ch.ru_stime


def timed(fn) -> tuple[float, float, object]:
    c0, t0 = _cpu(), time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, _cpu() - c0, out


def bench_tail(args) -> dict:
    fd, name = tempfile.mkstemp(prefix="opsstack-access-", suffix=".json", dir="/tmp")
    os.close(fd)
    path = Path(name)
    try:
        make_log(path, args.size_mb * 1024 * 1024)
        size = path.stat().st_size
        subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)  # warm the page cache

        def wc():
            out = subprocess.run(["wc", "-l", str(path)], capture_output=True, text=True, check=True).stdout
            return int(out.split()[0])

        def tail_only():
            t = Tailer(path, start_at="beginning")
            t.poll(lambda text, n: None)
            t.close()
            return t.stats.lines

        def tail_parse():
            counts = AccessCounts()
            t = Tailer(path, start_at="beginning")
            t.poll(lambda text, n: counts.add_block("edge", "json", text, n))
            t.close()
            responses, _, unparsed = counts.snapshot()
            assert not unparsed, unparsed
            return sum(responses.values())

        out = {"file_bytes": size}
        for label, fn in (("wc -l", wc), ("tailer", tail_only), ("tailer + access parser", tail_parse)):
            runs = [timed(fn) for _ in range(2)]
            wall, cpu, lines = min(runs, key=lambda r: r[0])
            cpu = min(r[1] for r in runs)
            out[label] = {"lines": lines, "wall_s": round(wall, 3), "lines_per_s": round(lines / wall),
                          "mb_per_s": round(size / wall / 1e6, 1), "cpu_s": round(cpu, 3),
                          "lines_per_cpu_s": round(lines / max(cpu, 1e-3))}
        for label in ("tailer", "tailer + access parser"):
            assert out[label]["lines"] == out["wc -l"]["lines"], (label, out[label]["lines"], out["wc -l"]["lines"])
            out[label]["ratio_to_wc_wall"] = round(out[label]["lines_per_s"] / out["wc -l"]["lines_per_s"], 3)
            out[label]["ratio_to_wc_cpu"] = round(out[label]["lines_per_cpu_s"] / out["wc -l"]["lines_per_cpu_s"], 3)
        return out
    finally:
        path.unlink(missing_ok=True)


def main() -> int:
    p = argparse.ArgumentParser(prog="bench/security_exporter_bench.py")
    p.add_argument("--endpoints", type=int, default=70)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--size-mb", type=int, default=1024)
    p.add_argument("--skip-tls", action="store_true")
    p.add_argument("--skip-tail", action="store_true")
    a = p.parse_args()
    result = {"machine": {"cpus": os.cpu_count(), "load": os.getloadavg()[0]}}
    with tempfile.TemporaryDirectory(prefix="secbench-") as tmp:
        if not a.skip_tls:
            result["tls"] = bench_tls(a, Path(tmp))
            print(json.dumps(result["tls"], indent=1), flush=True)
    if not a.skip_tail:
        result["tail"] = bench_tail(a)
        print(json.dumps(result["tail"], indent=1), flush=True)
    result["machine"]["load_after"] = os.getloadavg()[0]
    out = ROOT / "bench" / "results" / "security_exporter_bench.json"
    if a.skip_tls or a.skip_tail:  # a partial run keeps the other part's last figures
        old = json.loads(out.read_text()) if out.exists() else {}
        old.update({k: v for k, v in result.items()})
        result = old
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
