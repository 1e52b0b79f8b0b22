"""Our database exporter vs prometheus-postgres-exporter on the same database, at two scales.

    .venv/bin/python bench/db_exporter_bench.py [--tables 200] [--statements 5000] [--rounds 60]
        [--period 0.5] [--partitions 10000] [--big-rounds 20]

Setup (all on 127.0.0.1, temporary folders): our own PostgreSQL cluster
(pg_stat_statements + hypopg preloaded, pg_stat_statements.max 10000), one database with
--tables tables (an index each, some rows) and --statements distinct statements run once
each so pg_stat_statements tracks them all.

Exporters, each a real process scraped over HTTP:
- ours: `python -m exporters.db.server` with its defaults (advisor on, statements, tables,
  partitions and old-row counts refreshed in the background, series budget 2000);
- go-default: prometheus-postgres-exporter (Debian package) with its defaults;
- go-queries / go-queries13 (small scale only, --no-queries to skip): the same with the
  queries.yaml Debian ships as an example (table statistics, pg_stat_statements; the second
  with the PostgreSQL 13+ column names).

Time is compressed: Prometheus scrapes every stack.scrape_interval (15s) and our background
intervals are defaults relative to that (tables 60s = every 4 scrapes...). Each exporter is
scraped once every --period seconds and ours runs with every interval (tables, statements,
lifecycle, sizes, advisor) multiplied by period / scrape_interval, so its background work
per scrape is what it would be in production.

Measured in phases: each exporter in turn is scraped --rounds / --blocks times while the
others are paused (SIGSTOP), so that the CPU of an exporter process (utime+stime from /proc,
background threads included) and of the PostgreSQL server (postmaster and backends, those
that exited included: the postmaster's cutime/cstime) during its phase is its own. Reported
per exporter: median and p90 scrape time (HTTP request until the last byte), CPU per scrape
of the exporter and of PostgreSQL (total over its phases / scrapes), samples (series) and
metric families, and the facts each exports.

Then (--partitions N > 0) the big database: a table partitioned by day with N daily
partitions (an index each: N partitions over N/365 years) is added, fresh exporters (ours,
go-default) are started, and the same figures are measured, with the first (cold) scrape of
ours. Results go to bench/results/db_exporter_bench.json.
"""
from __future__ import annotations

import argparse
import json
import os
import re
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

import psycopg  # noqa: E402
import yaml  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from core.config import defaults  # noqa: E402
from core.procs import binary, free_port  # noqa: E402
from stack.pgcluster import Cluster  # noqa: E402

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


def pg_cpu(postmaster: int) -> float:
    """CPU of the whole PostgreSQL server: the postmaster, its live children (backends,
    background processes) and, through its cutime/cstime, the children that exited."""
    try:
        f = Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()
        total = sum(int(x) for x in f[11:15]) / TICK
    except (OSError, IndexError, ValueError):
        total = 0.0
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


def add_partitions(url: str, n: int) -> float:
    """A table partitioned by day with ``n`` daily partitions ending tomorrow (two levels, as
    one keeps thousands of them: a partition per year, partitioned by day), an index each, a
    row in each; returns the seconds it took."""
    t0 = time.monotonic()
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("create table if not exists daily (id bigint not null, day date not null, v integer) "
                  "partition by range (day)")
        c.execute("create index if not exists daily_day_idx on daily (day)")
        first = c.execute("select current_date + 2 - %s::int", (n,)).fetchone()[0]
        last = c.execute("select %s::date + %s::int", (first, n)).fetchone()[0]
        for year in range(first.year, last.year + 1):
            lo, hi = max(first, first.replace(year=year, month=1, day=1)), min(last, first.replace(year=year + 1, month=1, day=1))
            c.execute(f"""do $$ declare d date; begin
                execute format('create table if not exists %I partition of daily for values from (%L) to (%L) '
                               'partition by range (day)', 'daily_y{year}', date '{lo}', date '{hi}');
                d := date '{lo}';
                while d < date '{hi}' loop
                  execute format('create table if not exists %I partition of %I for values from (%L) to (%L)',
                                 'daily_' || to_char(d, 'YYYYMMDD'), 'daily_y{year}', d, d + 1);
                  d := d + 1;
                end loop; end $$""")
            c.execute("insert into daily select g, d, g from (select row_number() over () as g, d::date "
                      "from generate_series(%s::date, %s::date - 1, '1 day') d) x", (lo, hi))
        c.execute("analyze daily")
    return time.monotonic() - t0


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


def our_config(work: Path, url: str, port: int, scale: float) -> Path:
    """Our exporter's config: defaults, with every background interval scaled to the bench's
    compressed time (``scale`` = bench period / Prometheus scrape interval)."""
    d = defaults()["exporters"]["db"]

    def sc(v: float) -> float:
        return round(v * scale, 3)

    cfg_file = work / f"opsstack-{port}.yaml"
    cfg_file.write_text(yaml.safe_dump({
        "stack": {"host": HOST, "ports": {"exporter_db": port}},
        "database": {"url": url},
        "exporters": {"db": {
            "tables_interval": sc(d["tables_interval"]),
            "sizes_interval": sc(d["sizes_interval"]),
            "statements": {"interval": sc(d["statements"]["interval"])},
            "advisor": {"enabled": True, "interval": max(10.0, sc(d["advisor"]["interval"])), "min_calls": 1},
            "lifecycle": {"interval": sc(d["lifecycle"]["interval"]),
                          "partitions": [{"table": "public.events", "period": "month"},
                                         {"table": "public.daily", "period": "day"}],
                          "retention": [{"table": "public.events", "column": "created_at", "max_age": "30d"}]},
            "backup": {"source": "file", "path": str(work / "backup_done")},
        }},
    }))
    return cfg_file


def start_exporters(work: Path, url: str, scale: float, variants: list[str], procs: list) -> dict:
    exporters: dict[str, dict] = {}
    port = free_port()
    cfg_file = our_config(work, url, port, scale)
    p = subprocess.Popen([sys.executable, "-m", "exporters.db.server", "-c", str(cfg_file)], cwd=ROOT,
                         stdout=open(work / f"ours-{port}.log", "wb"), stderr=subprocess.STDOUT)
    procs.append(p)
    exporters["ours"] = {"proc": p, "url": f"http://{HOST}:{port}/metrics"}
    for name in variants:
        extra = []
        if name == "go-queries":
            extra = [f"--extend.query-path={QUERIES_YAML}"]
        elif name == "go-queries13":
            # the shipped example reads pg_stat_statements with pre-13 column names; a copy
            # with PostgreSQL 13+ names shows the cost of exporting every statement
            fixed = work / "queries-pg13.yaml"
            fixed.write_text(re.sub(r"\b(total|min|max|mean|stddev)_time / 1000", r"\1_exec_time / 1000",
                                    QUERIES_YAML.read_text()))
            extra = [f"--extend.query-path={fixed}"]
        port = free_port()
        dsn = url + f"?sslmode=disable&application_name=bench-{name}"
        p = subprocess.Popen([binary("postgres_exporter"), f"--web.listen-address={HOST}:{port}", *extra],
                             env=dict(os.environ, DATA_SOURCE_NAME=dsn),
                             stdout=open(work / f"{name}-{port}.log", "wb"), stderr=subprocess.STDOUT)
        procs.append(p)
        exporters[name] = {"proc": p, "url": f"http://{HOST}:{port}/metrics"}
    for name, e in exporters.items():
        deadline = time.monotonic() + 300
        while True:  # a first scrape may take seconds (core.procs.wait_http gives each try 2 s)
            if e["proc"].poll() is not None:
                raise RuntimeError(f"{name} exited: see {work}")
            try:
                scrape(e["url"])
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    return exporters


def pause(e: dict, on: bool) -> None:
    try:
        os.kill(e["proc"].pid, signal.SIGSTOP if on else signal.SIGCONT)
    except ProcessLookupError:
        pass


def measure(exporters: dict, postmaster: int, rounds: int, blocks: int, period: float) -> dict:
    """Phases: each exporter alone (the others paused) scraped every ``period`` seconds."""
    for e in exporters.values():
        e.update(times=[], cpu=0.0, db_cpu=0.0, body="")
        pause(e, True)
    names = list(exporters)
    per_block = max(1, rounds // blocks)
    for b in range(blocks):
        order = names[b % len(names):] + names[:b % len(names)]
        for name in order:
            e = exporters[name]
            pause(e, False)
            c0, d0 = cpu_seconds(e["proc"].pid), pg_cpu(postmaster)
            nxt = time.monotonic()
            for _ in range(per_block):
                dt, body = scrape(e["url"])
                e["times"].append(dt)
                e["body"] = body
                nxt += period
                time.sleep(max(0.0, nxt - time.monotonic()))
            e["cpu"] += cpu_seconds(e["proc"].pid) - c0
            e["db_cpu"] += pg_cpu(postmaster) - d0
            pause(e, True)
    for e in exporters.values():
        pause(e, False)
    out = {}
    for name, e in exporters.items():
        fams = families(e["body"])
        t = sorted(e["times"])
        n = len(t)
        out[name] = {
            "scrapes": n,
            "median_scrape_seconds": statistics.median(t),
            "p90_scrape_seconds": t[int(0.9 * (n - 1))],
            "cpu_seconds_per_scrape": e["cpu"] / n,
            "db_cpu_seconds_per_scrape": e["db_cpu"] / n,
            "families": len(fams),
            "samples": sum(fams.values()),
            "facts": facts(list(fams), name == "ours"),
            "family_names": sorted(fams),
        }
        if name == "ours":
            out[name]["table_index_series"] = sum(v for k, v in fams.items()
                                                  if k.startswith(("opsstack_db_table_", "opsstack_db_index_")))
            m = re.search(r'^opsstack_db_tables_other\{[^}]*datname="bench"[^}]*\} (\S+)$', e["body"], re.M)
            out[name]["tables_in_other_bucket"] = float(m.group(1)) if m else None
            m = re.search(r"^opsstack_db_advisor_run_duration_seconds\{[^}]*\} (\S+)$", e["body"], re.M)
            out[name]["advisor_run_seconds"] = float(m.group(1)) if m else None
            ages = re.findall(r'^opsstack_db_collector_age_seconds\{[^}]*collector="(\w+)"\} (\S+)$', e["body"], re.M)
            out[name]["collector_age_seconds"] = {k: float(v) for k, v in ages if float(v) > 0}
    return out


def stop_all(procs: list) -> None:
    for p in procs:
        try:
            os.kill(p.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
    procs.clear()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tables", type=int, default=200)
    ap.add_argument("--statements", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=60, help="scrapes of each exporter (small database)")
    ap.add_argument("--blocks", type=int, default=3, help="phases per exporter (rounds are split between them)")
    ap.add_argument("--period", type=float, default=0.5,
                    help="seconds between two scrapes of one exporter (stands for stack.scrape_interval)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--partitions", type=int, default=10000, help="daily partitions of the big database (0: skip)")
    ap.add_argument("--big-rounds", type=int, default=12)
    ap.add_argument("--big-period", type=float, default=3.0,
                    help="--period of the big database (its background refresh takes seconds: time is "
                         "compressed less so that it stays shorter than the scaled tables_interval)")
    ap.add_argument("--no-queries", action="store_true", help="skip the go-queries variants")
    args = ap.parse_args()
    scrape_interval = defaults()["stack"]["scrape_interval"]
    scale = args.period / scrape_interval

    work = Path(tempfile.mkdtemp(prefix="opsstack-dbbench-"))
    cluster = Cluster(work / "data", port=free_port(),
                      settings={"pg_stat_statements.max": "10000", "max_locks_per_transaction": "256"})
    procs: list[subprocess.Popen] = []
    results: dict = {"command": " ".join(["bench/db_exporter_bench.py", *sys.argv[1:]]),
                     "period_seconds": args.period, "stands_for_scrape_interval_seconds": scrape_interval,
                     "interval_scale": scale}
    try:
        print(f"starting PostgreSQL in {work} ...", flush=True)
        cluster.start()
        with psycopg.connect(cluster.url(), autocommit=True) as c:
            c.execute("create database bench")
        url = cluster.url("bench")
        (work / "backup_done").write_text("base backup finished\n")
        t0 = time.monotonic()
        tracked = setup_database(url, args.tables, args.statements)
        print(f"{args.tables} tables, {tracked} statements tracked by pg_stat_statements "
              f"(setup {time.monotonic() - t0:.1f}s)", flush=True)
        postmaster = cluster.proc.pid

        variants = ["go-default"]
        if QUERIES_YAML.exists() and not args.no_queries:
            variants += ["go-queries", "go-queries13"]
        exporters = start_exporters(work, url, scale, variants, procs)
        # the advisor's first run (5 s after the start) is over before the measured rounds
        advisor_wait = time.monotonic() + 60
        while time.monotonic() < advisor_wait and "opsstack_db_advisor_last_run" not in scrape(exporters["ours"]["url"])[1]:
            time.sleep(0.5)
        for e in exporters.values():
            for _ in range(args.warmup):
                scrape(e["url"])
        print(f"small: {args.rounds} scrapes each, every {args.period}s, in {args.blocks} phases per exporter "
              f"({', '.join(exporters)}) ...", flush=True)
        small = measure(exporters, postmaster, args.rounds, args.blocks, args.period)
        results["small"] = {"tables": args.tables, "statements_tracked": tracked, "rounds": args.rounds,
                            "exporters": small}
        stop_all(procs)
        report(results["small"], "small database")

        if args.partitions > 0:
            print(f"\nadding a table with {args.partitions} daily partitions ...", flush=True)
            secs = add_partitions(url, args.partitions)
            with psycopg.connect(url) as c:
                n_tables = c.execute("select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace "
                                     "where c.relkind = 'r' and n.nspname = 'public'").fetchone()[0]
            print(f"{n_tables} tables in the database (setup {secs:.0f}s)", flush=True)
            big_scale = args.big_period / scrape_interval
            exporters = start_exporters(work, url, big_scale, ["go-default"], procs)
            cold, body = scrape(exporters["ours"]["url"])
            cold_go, _ = scrape(exporters["go-default"]["url"])
            for e in exporters.values():
                for _ in range(args.warmup):
                    scrape(e["url"])
            print(f"big: {args.big_rounds} scrapes each ...", flush=True)
            big = measure(exporters, postmaster, args.big_rounds, min(2, args.big_rounds), args.big_period)
            big["ours"]["first_scrape_seconds"] = cold
            big["go-default"]["first_scrape_seconds"] = cold_go
            results["big"] = {"tables": n_tables, "partitions": args.partitions, "rounds": args.big_rounds,
                              "period_seconds": args.big_period, "interval_scale": big_scale,
                              "table_series_budget": defaults()["exporters"]["db"]["table_series_budget"],
                              "exporters": big}
            stop_all(procs)
            report(results["big"], f"big database ({args.partitions} daily partitions)")
        out_dir = ROOT / "bench" / "results"
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "db_exporter_bench.json").write_text(json.dumps(results, indent=1))
        return 0
    finally:
        stop_all(procs)
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


def report(r: dict, title: str) -> None:
    ex = r["exporters"]
    print(f"\n== {title}: {r['tables']} tables, {r['rounds']} scrapes each")
    o = ex["ours"]
    if o.get("advisor_run_seconds") is not None:
        print(f"(ours ran the index advisor in the background: {o['advisor_run_seconds'] * 1000:.0f} ms a run; "
              f"its CPU and the background refreshes are in ours' figures)")
    print(f"{'exporter':<13} {'median':>9} {'p90':>9} {'cpu/scrape':>11} {'db cpu/scr':>11} {'families':>9} {'series':>8}")
    for name, e in ex.items():
        print(f"{name:<13} {e['median_scrape_seconds'] * 1000:>7.1f}ms {e['p90_scrape_seconds'] * 1000:>7.1f}ms "
              f"{e['cpu_seconds_per_scrape'] * 1000:>9.1f}ms {e['db_cpu_seconds_per_scrape'] * 1000:>9.1f}ms "
              f"{e['families']:>9} {e['samples']:>8}")
    if "first_scrape_seconds" in o:
        print(f"first (cold) scrape: ours {o['first_scrape_seconds'] * 1000:.0f} ms, "
              f"go-default {ex['go-default']['first_scrape_seconds'] * 1000:.0f} ms")
    print(f"ours: {o.get('table_index_series')} table/index series, {o.get('tables_in_other_bucket')} tables "
          f"summed as __other__, background ages {o.get('collector_age_seconds')}")
    for name, e in ex.items():
        if name == "ours":
            continue
        print(f"ours / {name}: median scrape x{o['median_scrape_seconds'] / e['median_scrape_seconds']:.2f}, "
              f"exporter CPU x{o['cpu_seconds_per_scrape'] / max(e['cpu_seconds_per_scrape'], 1e-9):.2f}, "
              f"PostgreSQL CPU x{o['db_cpu_seconds_per_scrape'] / max(e['db_cpu_seconds_per_scrape'], 1e-9):.2f}, "
              f"series x{o['samples'] / max(e['samples'], 1):.2f}, facts {len(o['facts'])} vs {len(e['facts'])}")
    print("facts exported:")
    names = list(ex)
    print(f"  {'fact':<55} " + " ".join(f"{n:>12}" for n in names))
    for f in FACTS:
        print(f"  {f:<55} " + " ".join(f"{'yes' if f in ex[n]['facts'] else '-':>12}" for n in names))


if __name__ == "__main__":
    raise SystemExit(main())
