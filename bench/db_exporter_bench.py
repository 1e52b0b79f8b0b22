"""Our database exporter vs prometheus-postgres-exporter on the same database.

    .venv/bin/python bench/db_exporter_bench.py [--tables 200] [--statements 5000] [--rounds 30]

Setup (all on 127.0.0.1, temporary folders): our own PostgreSQL cluster
(pg_stat_statements + hypopg preloaded, pg_stat_statements.max 10000), one database with
--tables tables (an index each, some rows) and --statements distinct statements run once
each so pg_stat_statements tracks them all.

Exporters, each a real process scraped over HTTP:
- ours: `python -m exporters.db.server` (advisor off: it runs in the background anyway);
- go-default: prometheus-postgres-exporter (Debian package) with its defaults;
- go-queries: the same with the queries.yaml Debian ships as an example
  (--extend.query-path: table and statio stats, pg_stat_statements...), which is how one
  gets table statistics out of it; its pg_stat_statements query uses pre-13 column names
  and fails on PostgreSQL 15 (so it exports no statements);
- go-queries13: that file with the PostgreSQL 13+ column names, so it exports
  pg_stat_statements too (every statement, every column).

Rounds alternate ours / go-default / go-queries so that drift hits all alike. Reported per
exporter: median and p90 scrape time (HTTP request until the last byte), CPU per scrape of
the exporter process (utime+stime from /proc, summed over all rounds / rounds) and of the
PostgreSQL server processes during its scrapes, samples and metric families, and the list
of facts each exports. Results also go to bench/results/db_exporter_bench.json.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import yaml  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from stack.pgcluster import Cluster  # noqa: E402
from core.procs import binary, free_port, wait_http  # noqa: E402

HOST = "127.0.0.1"
QUERIES_YAML = Path("/usr/share/doc/prometheus-postgres-exporter/examples/queries.yaml")
TICK = os.sysconf("SC_CLK_TCK")

# fact -> regexes over metric family names (ours, theirs)
FACTS = {
    "database stats (pg_stat_database)": (r"^opsstack_db_(xact|blocks|tuples|temp|deadlocks|sessions|session_|active_|idle_in|checksum|conflicts|backends|block_)",
                                          r"^pg_stat_database_(?!conflicts)"),
    "recovery conflicts": (r"^opsstack_db_recovery_conflicts", r"^pg_stat_database_conflicts"),
    "table stats (pg_stat_user_tables)": (r"^opsstack_db_table_(seq|index_scans|index_rows|rows|live|dead|modified|last_|vacuums|analyzes)",
                                          r"^pg_stat_user_tables_"),
    "table I/O (pg_statio_user_tables)": (r"^opsstack_db_table_blocks", r"^pg_statio_user_tables_"),
    "index stats and unused indexes": (r"^opsstack_db_(index_|unused_indexes)", r"^pg_stat_user_indexes|^pg_index"),
    "activity (pg_stat_activity)": (r"^opsstack_db_activity_", r"^pg_stat_activity_"),
    "locks (pg_locks) and lock waits": (r"^opsstack_db_(locks|lock_)", r"^pg_locks_"),
    "settings (pg_settings)": (r"^opsstack_db_setting", r"^pg_settings_"),
    "database sizes": (r"^opsstack_db_database_size", r"^pg_database_size"),
    "table and index sizes": (r"^opsstack_db_(table_size|table_indexes_size|index_size|partitioned_table_size)", r"$^"),
    "replication (pg_stat_replication, slots, standby lag)": (r"^opsstack_db_(replication|replicas)", r"^pg_(stat_replication|replication)"),
    "WAL archiver (pg_stat_archiver)": (r"^opsstack_db_archiver", r"^pg_stat_archiver"),
    "bgwriter / checkpoints": (r"^opsstack_db_(checkpoint|buffers|bgwriter)", r"^pg_stat_bgwriter"),
    "pg_stat_statements totals and top-N": (r"^opsstack_db_statement", r"^pg_stat_statements"),
    "pool use ratio (backends / max_connections)": (r"^opsstack_db_connections_used_ratio", r"$^"),
    "cache hit ratio": (r"^opsstack_db_(cache_hit_ratio)", r"$^"),
    "vacuum age (xid age)": (r"^opsstack_db_(database_xid_age|table_xid_age)", r"$^"),
    "partition health (current/next period)": (r"^opsstack_db_partition", r"$^"),
    "rows older than retention": (r"^opsstack_db_rows_older", r"$^"),
    "backup age": (r"^opsstack_db_backup", r"$^"),
    "index advisor": (r"^opsstack_db_advisor", r"$^"),
    "server up / version / start time": (r"^opsstack_db_(up|version_info|start_time|server_version)", r"^pg_(up|static|postmaster)"),
}


def setup_database(url: str, tables: int, statements: int) -> int:
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("create extension if not exists pg_stat_statements")
        c.execute("create extension if not exists hypopg")
        for i in range(tables):
            c.execute(f"create table if not exists t{i:03d} (id bigint primary key, a integer not null, "
                      f"b text not null, c timestamptz not null default now())")
            c.execute(f"create index if not exists t{i:03d}_a_idx on t{i:03d} (a)")
            c.execute(f"insert into t{i:03d} (id, a, b) select g, g % 97, 'row ' || g "
                      f"from generate_series(1, 200) g on conflict do nothing")
        # a partitioned table (this and next month) so that partition health and retention show
        c.execute("create table if not exists events (id bigint, created_at timestamptz not null) "
                  "partition by range (created_at)")
        c.execute("""do $$ declare m timestamptz; begin
                     for i in -1 .. 1 loop
                       m := date_trunc('month', now()) + make_interval(months => i);
                       execute format('create table if not exists %I partition of events for values from (%L) to (%L)',
                                      'events_' || to_char(m, 'YYYY_MM'), m, m + interval '1 month');
                     end loop; end $$""")
        c.execute("insert into events select g, now() - make_interval(days => g % 40) from generate_series(1, 2000) g")
        c.execute("analyze")
        c.execute("select pg_stat_statements_reset()")
        shapes = max(1, -(-statements // tables))
        n = 0
        for k in range(shapes):
            expr = " + ".join(["a"] * (k + 1))
            for i in range(tables):
                if n >= statements:
                    break
                c.execute(f"select id, {expr} from t{i:03d} where id = %s", (1 + (n % 200),)).fetchall()
                n += 1
        return c.execute("select count(*) from pg_stat_statements").fetchone()[0]


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def server_cpu(postmaster: int) -> float:
    """CPU of the postmaster and its children (the backends serving the exporters)."""
    total = cpu_seconds(postmaster)
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == postmaster:
            total += cpu_seconds(int(d.name))
    return total


def scrape(url: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as r:
        body = r.read().decode()
    return time.perf_counter() - t0, body


def families(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for f in text_string_to_metric_families(text):
        out[f.name] = len(f.samples)
    return out


def facts(names: list[str], ours: bool) -> list[str]:
    got = []
    for fact, (mine, theirs) in FACTS.items():
        rx = re.compile(mine if ours else theirs)
        if any(rx.search(n) for n in names):
            got.append(fact)
    return got


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tables", type=int, default=200)
    ap.add_argument("--statements", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="opsstack-dbbench-"))
    cluster = Cluster(work / "data", port=free_port(), settings={"pg_stat_statements.max": "10000"})
    procs: list[subprocess.Popen] = []
    try:
        print(f"starting PostgreSQL in {work} ...", flush=True)
        cluster.start()
        with psycopg.connect(cluster.url(), autocommit=True) as c:
            c.execute("create database bench")
        url = cluster.url("bench")
        t0 = time.monotonic()
        tracked = setup_database(url, args.tables, args.statements)
        print(f"{args.tables} tables, {tracked} statements tracked by pg_stat_statements "
              f"(setup {time.monotonic() - t0:.1f}s)", flush=True)

        exporters: dict[str, dict] = {}
        # ours
        port = free_port()
        cfg_file = work / "opsstack.yaml"
        cfg_file.write_text(yaml.safe_dump({
            "stack": {"host": HOST, "ports": {"exporter_db": port}},
            "database": {"url": url},
            "exporters": {"db": {
                # the advisor runs in a background thread every 10 minutes: its first run is
                # over before the measured rounds start (its own duration is reported)
                "advisor": {"enabled": True, "interval": "10m", "min_calls": 1},
                "lifecycle": {"partitions": [{"table": "public.events", "period": "month"}],
                              "retention": [{"table": "public.events", "column": "created_at", "max_age": "30d"}]},
                "backup": {"source": "file", "path": str(work / "backup_done")},
            }},
        }))
        (work / "backup_done").write_text("base backup finished\n")
        p = subprocess.Popen([sys.executable, "-m", "exporters.db.server", "-c", str(cfg_file)], cwd=ROOT,
                             stdout=open(work / "ours.log", "wb"), stderr=subprocess.STDOUT)
        procs.append(p)
        exporters["ours"] = {"proc": p, "url": f"http://{HOST}:{port}/metrics"}
        # the Go exporter, twice
        dsn = url + "?sslmode=disable"
        variants = [("go-default", [])]
        if QUERIES_YAML.exists():
            variants.append(("go-queries", [f"--extend.query-path={QUERIES_YAML}"]))
            # the shipped example reads pg_stat_statements with pre-13 column names; a copy
            # with PostgreSQL 13+ names shows the cost of exporting every statement
            fixed = work / "queries-pg13.yaml"
            fixed.write_text(re.sub(r"\b(total|min|max|mean|stddev)_time / 1000", r"\1_exec_time / 1000",
                                    QUERIES_YAML.read_text()))
            variants.append(("go-queries13", [f"--extend.query-path={fixed}"]))
        for name, extra in variants:
            port = free_port()
            p = subprocess.Popen([binary("postgres_exporter"), f"--web.listen-address={HOST}:{port}", *extra],
                                 env=dict(os.environ, DATA_SOURCE_NAME=dsn),
                                 stdout=open(work / f"{name}.log", "wb"), stderr=subprocess.STDOUT)
            procs.append(p)
            exporters[name] = {"proc": p, "url": f"http://{HOST}:{port}/metrics"}
        for e in exporters.values():
            wait_http(e["url"], timeout=30, proc=e["proc"])
        advisor_wait = time.monotonic() + 60
        while time.monotonic() < advisor_wait and "opsstack_db_advisor_last_run" not in scrape(exporters["ours"]["url"])[1]:
            time.sleep(0.5)
        for e in exporters.values():
            for _ in range(args.warmup):
                scrape(e["url"])
            e.update(times=[], cpu=0.0, db_cpu=0.0, body="")

        postmaster = cluster.proc.pid
        print(f"{args.rounds} rounds, alternating {', '.join(exporters)} ...", flush=True)
        for _ in range(args.rounds):
            for name, e in exporters.items():
                c0, d0 = cpu_seconds(e["proc"].pid), server_cpu(postmaster)
                dt, body = scrape(e["url"])
                e["cpu"] += cpu_seconds(e["proc"].pid) - c0
                e["db_cpu"] += server_cpu(postmaster) - d0
                e["times"].append(dt)
                e["body"] = body

        results = {"tables": args.tables, "statements_tracked": tracked, "rounds": args.rounds, "exporters": {}}
        m = re.search(r"^opsstack_db_advisor_run_duration_seconds\{[^}]*\} (\S+)$", exporters["ours"]["body"], re.M)
        results["advisor_run_seconds"] = float(m.group(1)) if m else None
        for name, e in exporters.items():
            fams = families(e["body"])
            t = sorted(e["times"])
            results["exporters"][name] = {
                "median_scrape_seconds": statistics.median(t),
                "p90_scrape_seconds": t[int(0.9 * (len(t) - 1))],
                "cpu_seconds_per_scrape": e["cpu"] / args.rounds,
                "db_cpu_seconds_per_scrape": e["db_cpu"] / args.rounds,
                "families": len(fams),
                "samples": sum(fams.values()),
                "facts": facts(list(fams), name == "ours"),
                "family_names": sorted(fams),
            }
        out_dir = ROOT / "bench" / "results"
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "db_exporter_bench.json").write_text(json.dumps(results, indent=1))
        report(results)
        return 0
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


def report(r: dict) -> None:
    ex = r["exporters"]
    print(f"\n{r['tables']} tables, {r['statements_tracked']} statements, {r['rounds']} alternating rounds")
    if r.get("advisor_run_seconds") is not None:
        print(f"(ours also ran the index advisor once in the background before the rounds: "
              f"{r['advisor_run_seconds'] * 1000:.0f} ms, every 10 minutes)")
    print()
    print(f"{'exporter':<13} {'median':>9} {'p90':>9} {'cpu/scrape':>11} {'db cpu/scr':>11} {'families':>9} {'samples':>8}")
    for name, e in ex.items():
        print(f"{name:<13} {e['median_scrape_seconds'] * 1000:>7.1f}ms {e['p90_scrape_seconds'] * 1000:>7.1f}ms "
              f"{e['cpu_seconds_per_scrape'] * 1000:>9.1f}ms {e['db_cpu_seconds_per_scrape'] * 1000:>9.1f}ms "
              f"{e['families']:>9} {e['samples']:>8}")
    ours = ex["ours"]
    for name, e in ex.items():
        if name == "ours":
            continue
        print(f"\nours / {name}: median scrape x{ours['median_scrape_seconds'] / e['median_scrape_seconds']:.2f}, "
              f"exporter CPU x{ours['cpu_seconds_per_scrape'] / max(e['cpu_seconds_per_scrape'], 1e-9):.2f}, "
              f"facts {len(ours['facts'])} vs {len(e['facts'])}")
    print("\nfacts exported:")
    allf = list(FACTS)
    names = list(ex)
    print(f"  {'fact':<55} " + " ".join(f"{n:>12}" for n in names))
    for f in allf:
        print(f"  {f:<55} " + " ".join(f"{'yes' if f in ex[n]['facts'] else '-':>12}" for n in names))


if __name__ == "__main__":
    raise SystemExit(main())
