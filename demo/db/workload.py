"""The demo platform's query workload against schema `platform`.

A few threads run the platform's statements at a steady total rate, weighted like the
real traffic: lookups by key (indexed), gate log inserts, registrations, and three
statements that need an index that does not exist (events by created_at range,
participants by email, registrations by (event_id, status)) so the index advisor has
real work. Every minute it keeps the partitions of the current and next period there
(unless the `skip_partitions` fault is on). `slow_ratio` adds statements slower than 2 s.
"""
from __future__ import annotations

import datetime as dt
import logging
import random
import threading
import time
from dataclasses import dataclass, field

import psycopg

from demo.db.faults import active, deadlock, drop_next_gate_log_partition

log = logging.getLogger("opsstack.demo.db")

STATUSES = ("registered", "checked_in", "cancelled", "waitlisted")
DOMAINS = ("example.com", "mail.test", "corp.test", "uni.test")


@dataclass
class Scale:
    participants: int = 100000
    events: int = 12000


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


# (name, weight, fn(conn, rng, scale)) -- names are for logs only
def q_participant_by_email(c, r, s):  # needs participants(email)
    n = r.randint(1, s.participants)
    c.execute("select id, full_name, country from platform.participants where email = %s",
              (f"user{n}@{DOMAINS[n % 4]}",)).fetchall()


def q_events_created_between(c, r, s):  # needs events(created_at)
    start = _now() - dt.timedelta(days=r.randint(1, 1200))
    c.execute("select id, name, starts_at from platform.events where created_at >= %s and created_at < %s "
              "order by created_at limit 50", (start, start + dt.timedelta(days=2))).fetchall()


def q_registrations_by_event_status(c, r, s):  # needs registrations(event_id, status)
    c.execute("select count(*) from platform.registrations where event_id = %s and status = %s",
              (r.randint(1, s.events), r.choice(STATUSES))).fetchall()


def q_participant_by_id(c, r, s):
    c.execute("select id, email, full_name from platform.participants where id = %s",
              (r.randint(1, s.participants),)).fetchall()


def q_registrations_of_participant(c, r, s):
    c.execute("select event_id, status from platform.registrations where participant_id = %s",
              (r.randint(1, s.participants),)).fetchall()


def q_upcoming_events(c, r, s):
    now = _now()
    c.execute("select id, name, venue, starts_at from platform.events where starts_at >= %s and starts_at < %s "
              "and region = %s order by starts_at limit 20",
              (now, now + dt.timedelta(days=30), r.choice(("seoul", "singapore", "tokyo")))).fetchall()


def q_gate_log_insert(c, r, s):
    c.execute("insert into platform.gate_logs (gate, event_id, participant_id, direction) values (%s, %s, %s, %s)",
              (f"gate-{r.randint(0, 39)}", r.randint(1, s.events), r.randint(1, s.participants),
               r.choice(("in", "in", "out", "denied"))))


def q_gate_recent(c, r, s):
    c.execute("select gate, direction, count(*) from platform.gate_logs where event_id = %s and logged_at > %s "
              "group by 1, 2", (r.randint(1, s.events), _now() - dt.timedelta(hours=6))).fetchall()


def q_register(c, r, s):
    c.execute("insert into platform.registrations (event_id, participant_id, status) values (%s, %s, 'registered')",
              (r.randint(1, s.events), r.randint(1, s.participants)))


def q_checkin(c, r, s):
    c.execute("update platform.registrations set status = 'checked_in' where id = %s",
              (r.randint(1, s.participants * 3),))


def q_slow_report(c, r, s):  # the slow-queries fault: a report slower than 2 s
    c.execute("select pg_sleep(2.2), count(*) from platform.registrations where status = %s",
              (r.choice(STATUSES),)).fetchall()


STATEMENTS = [
    ("participant_by_email", 8, q_participant_by_email),
    ("events_created_between", 4, q_events_created_between),
    ("registrations_by_event_status", 8, q_registrations_by_event_status),
    ("participant_by_id", 20, q_participant_by_id),
    ("registrations_of_participant", 10, q_registrations_of_participant),
    ("upcoming_events", 10, q_upcoming_events),
    ("gate_log_insert", 25, q_gate_log_insert),
    ("gate_recent", 8, q_gate_recent),
    ("register", 5, q_register),
    ("checkin", 5, q_checkin),
]


@dataclass
class Workload:
    url: str
    rate: float = 20.0          # statements per second, all threads together
    threads: int = 2
    seed: int = 42
    slow_ratio: float = 0.0     # share of extra slow (> 2 s) reports
    partition_every: float = 60.0
    skip_partitions: bool = False
    fault_every: float = 2.0
    stop: threading.Event = field(default_factory=threading.Event)
    counts: dict = field(default_factory=dict)
    errors: int = 0
    faults: dict = field(default_factory=dict)
    _next_partition: float = 0.0

    def _scale(self, conn) -> Scale:
        row = conn.execute("select (select max(id) from platform.participants), "
                           "(select count(*) from platform.events)").fetchone()
        return Scale(participants=max(1, row[0] or 1), events=max(1, row[1] or 1))

    def ensure_partitions(self, conn) -> int:
        if self.skip_partitions or "partition-missing" in self.faults:
            return 0
        return conn.execute("select platform.ensure_partitions()").fetchone()[0]

    def apply_faults(self, conn) -> None:
        """Read platform.demo_faults (opsstack db fault/heal) and act on changes."""
        now = active(conn)
        if now != self.faults:
            log.info("event=demo_db_faults active=%s", now)
        if "partition-missing" in now and "partition-missing" not in self.faults:
            dropped = drop_next_gate_log_partition(conn)
            if dropped:
                log.info("event=partition_dropped partition=%s", dropped)
        if "partition-missing" in self.faults and "partition-missing" not in now:
            self._next_partition = 0.0  # healed: recreate at once
        self.faults = now

    def _loop(self, idx: int) -> None:
        rng = random.Random(self.seed * 1000 + idx)
        names, weights, fns = zip(*[(n, w, f) for n, w, f in STATEMENTS])
        per_thread = self.rate / max(1, self.threads)
        conn = None
        next_fault = 0.0
        next_deadlock = 0.0
        scale = Scale()
        while not self.stop.is_set():
            try:
                if conn is None or conn.closed or conn.broken:
                    conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5,
                                           application_name="opsstack-demo-db-workload")
                    scale = self._scale(conn)
                if idx == 0 and time.monotonic() >= next_fault:
                    self.apply_faults(conn)
                    next_fault = time.monotonic() + self.fault_every
                if idx == 0 and time.monotonic() >= self._next_partition:
                    made = self.ensure_partitions(conn)
                    if made:
                        log.info("event=partitions_created count=%d", made)
                    self._next_partition = time.monotonic() + self.partition_every
                dl = self.faults.get("deadlocks", 0.0)
                if idx == 0 and dl > 0 and time.monotonic() >= next_deadlock:
                    if deadlock(self.url, 1 + rng.randint(0, 999), 1001 + rng.randint(0, 999)):
                        self.counts["deadlock"] = self.counts.get("deadlock", 0) + 1
                    next_deadlock = time.monotonic() + 60.0 / dl
                slow = self.faults.get("slow-queries", self.slow_ratio)
                if slow and rng.random() < slow:
                    name, fn = "slow_report", q_slow_report
                else:
                    i = rng.choices(range(len(fns)), weights=weights)[0]
                    name, fn = names[i], fns[i]
                fn(conn, rng, scale)
                self.counts[name] = self.counts.get(name, 0) + 1
            except psycopg.Error as exc:
                self.errors += 1
                log.warning("event=workload_error error=%r", str(exc).strip().splitlines()[0] if str(exc).strip() else exc)
                if conn is not None and (conn.closed or conn.broken):
                    conn = None
                    self.stop.wait(1.0)
            if per_thread > 0:
                self.stop.wait(rng.expovariate(per_thread))
        if conn is not None:
            conn.close()

    def run(self) -> None:
        """Run until stop is set (blocks)."""
        ts = [threading.Thread(target=self._loop, args=(i,), daemon=True, name=f"workload-{i}")
              for i in range(self.threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    def run_calls(self, n: int) -> None:
        """Run n statements in this thread as fast as possible (tests, benches)."""
        rng = random.Random(self.seed)
        with psycopg.connect(self.url, autocommit=True) as conn:
            scale = self._scale(conn)
            self.ensure_partitions(conn)
            names, weights, fns = zip(*[(n_, w, f) for n_, w, f in STATEMENTS])
            for _ in range(n):
                i = rng.choices(range(len(fns)), weights=weights)[0]
                fns[i](conn, rng, scale)
                self.counts[names[i]] = self.counts.get(names[i], 0) + 1
