"""Queued payloads applied in set-based batches (tickets.process_batch: waves of one payload per
group) end exactly as one-by-one application does; a payload the database refuses fails alone;
automation jobs commit with the ticket change that wants them, or not at all."""
from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.support import receiver as T
from webhook_receiver import payload as P
from webhook_receiver import scheduler, tickets
from webhook_receiver.app import close_app, create_app, state

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=timezone.utc)
NOW = T0 + timedelta(hours=1)  # one clock for both modes: the same timestamps, comparable rows
NOTIFY = {"channels": [{"name": "sms", "type": "webhook", "url": "http://127.0.0.1:1/"}],
          "rules": [{"channels": ["sms"]}]}
PLAYBOOK = {"name": "restart", "match": {"alertname": "ServiceDown"}, "target": "demo-{service}",
            "actions": [{"name": "restart", "backend": "command", "params": {"argv": ["true"]}}],
            "on_resolved": [{"name": "restore", "backend": "command", "params": {"argv": ["true"]}}]}


def make(url, **receiver):
    # background: process -> this process runs no job: the jobs queued stay pending, to be compared
    return create_app(T.config(url, notifications=NOTIFY, enrichment={"enabled": False},
                               remediation={"playbooks": [PLAYBOOK]},
                               receiver={"processing": "queued", "background": "process", **receiver}))


def rows(url, sql, *args):
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as c:
        return c.execute(sql, args).fetchall()


def run(url, sql):
    with psycopg.connect(url, autocommit=True) as c:
        c.execute(sql)


def enqueue(app, bodies: list[dict]) -> None:
    with state(app).db.connection() as conn:
        tickets.enqueue_payloads(conn, [(P.parse_obj(b), json.dumps(b)) for b in bodies])


def storm(seed: int, n: int = 160) -> list[dict]:
    """A seeded random sequence of Alertmanager notifications: 6 groups of 4 alerts, one alert in
    two groups (a route with `continue`), alerts firing, resolving, re-firing as new episodes,
    retries, resolved notifications of episodes never seen firing, and a Watchdog group."""
    rnd = random.Random(seed)
    groups = {g: [f"g{g}-a{j}" for j in range(4)] for g in range(6)}
    groups[1].append("shared")
    groups[2].append("shared")
    state: dict[str, tuple[datetime, datetime | None]] = {}  # fingerprint -> episode (startsAt, endsAt)
    out = []
    for i in range(n):
        t = T0 + timedelta(seconds=10 * i)
        if rnd.random() < 0.05:
            out.append(T.payload([T.alert("Watchdog", starts_at=T0, severity="none", fp="watchdog")], group_key="wd"))
            continue
        g = rnd.randrange(6)
        alerts = []
        for fp in groups[g]:
            if rnd.random() < 0.3:
                continue  # not in this notification
            starts, ends = state.get(fp, (None, None))
            roll = rnd.random()
            if starts is None or (ends is not None and roll < 0.5):
                starts, ends = t - timedelta(seconds=rnd.randrange(1, 5)), None  # a new episode
                if rnd.random() < 0.1:
                    ends = t  # its resolved notification comes first
            elif ends is None and roll < 0.3:
                ends = t
            state[fp] = (starts, ends)
            alertname = "ServiceDown" if fp.endswith(("a0", "shared")) else f"Alert{fp[-1]}"
            a = T.alert(alertname, starts_at=starts, ends_at=ends, fp=fp, status="resolved" if ends else "firing",
                        service=f"svc-{g}", instance=fp, severity=rnd.choice(["critical", "warning"]))
            alerts.append(a)
        if alerts:
            out.append(T.payload(alerts, group_key=f"group-{g}"))
    return out


def snapshot(url) -> dict:
    """The whole ticket state with database ids replaced by stable names (incident key + rank)."""
    ts = rows(url, "select t.*, g.group_key from tickets t left join ticket_groups g on g.id = t.group_id order by id")
    name, rank = {}, {}
    for t in ts:
        rank[t["incident_key"]] = rank.get(t["incident_key"], 0) + 1
        name[t["id"]] = f"{t['incident_key']}#{rank[t['incident_key']]}"
    skip = {"id", "group_id"}
    out = {"tickets": {name[t["id"]]: {k: v for k, v in t.items() if k not in skip} for t in ts}}
    out["alerts"] = sorted((a["fingerprint"], a["starts_at"], name[a["ticket_id"]], a["status"], a["ends_at"],
                            json.dumps(a["labels"], sort_keys=True), a["group_key"], a["first_seen"], a["last_seen"])
                           for a in rows(url, "select a.*, g.group_key from ticket_alerts a "
                                              "left join ticket_groups g on g.id = a.group_id"))
    out["events"] = [(name[e["ticket_id"]], e["kind"], e["actor"], json.dumps(e["details"], sort_keys=True), e["at"])
                     for e in rows(url, "select * from ticket_events order by ticket_id, at, id")]
    out["events"].sort(key=lambda e: e[0])  # per ticket in order (sorted is stable)

    def ticket_payload(p):
        return {k: v for k, v in p["ticket"].items() if k not in skip}
    out["notifications"] = sorted((name[n["ticket_id"]], n["channel"], n["kind"], n["recipient"],
                                   json.dumps({**n["payload"], "ticket": ticket_payload(n["payload"])}, sort_keys=True))
                                  for n in rows(url, "select * from ticket_notifications"))
    out["jobs"] = sorted((name[j["ticket_id"]], j["kind"], j["status"], ":a" in j["dedup_key"])
                         for j in rows(url, "select * from automation_jobs"))
    out["resolved_first"] = sorted(tuple(r.values()) for r in rows(
        url, "select fingerprint, starts_at, ends_at from ticket_resolved_episodes"))
    out["groups"] = sorted((g["group_key"], g["receiver"], g["last_alert_count"]) for g in rows(
        url, "select * from ticket_groups"))
    out["heartbeats"] = rows(url, "select alertname, last_seen from ticket_heartbeats")
    out["pending"] = rows(url, "select count(*) n from ticket_payloads where processed_at is null or error is not null")
    return out, name


@pytest.mark.parametrize("seed,incident_by,reopen_window", [(1, "group", "1h"), (2, "alert", "1h"),
                                                            (3, "group", "0s")])
def test_batches_end_as_one_by_one(make_pg_db, seed, incident_by, reopen_window):
    bodies = storm(seed)
    apps, seen = {}, {"one": [], "batch": []}
    try:
        for mode in ("one", "batch"):
            apps[mode] = app = make(make_pg_db(), incident_by=incident_by, reopen_window=reopen_window)
            for ev in ("ticket_opened", "ticket_updated", "ticket_resolved", "ticket_reopened"):
                state(app).hooks.subscribe(ev, lambda event, _m=mode, **kw: seen[_m].append((event, kw)))
            enqueue(app, bodies)
        st = state(apps["one"])
        with st.db.connection() as conn:
            n = 0
            while tickets.process_next(st.ctx, conn, now=NOW) is not None:
                n += 1
        assert n == len(bodies)
        st = state(apps["batch"])
        with st.db.connection() as conn:
            got = [len(tickets.process_batch(st.ctx, conn, now=NOW, limit=500)) for _ in range(3)]
        assert got[0] > len(bodies) // 2 and sum(got) == len(bodies), got  # few batches, and the lot
        (one, one_names), (batch, batch_names) = (snapshot(state(apps[m]).cfg["database"]["url"])
                                                  for m in ("one", "batch"))
        assert one["pending"] == [{"n": 0}]
        for mode in ("one", "batch"):  # the counts kept as episodes come and go = a full recount
            assert rows(state(apps[mode]).cfg["database"]["url"], """
                select t.id, t.alert_count, t.firing_count, greatest(c.n, 1) n, c.f from tickets t
                join (select ticket_id, count(distinct fingerprint) n, count(*) filter (where status = 'firing') f
                      from ticket_alerts group by 1) c on c.ticket_id = t.id
                where t.alert_count <> greatest(c.n, 1) or t.firing_count <> c.f""") == [], mode
        for part in one:
            assert batch[part] == one[part], part
        assert one["tickets"] and one["events"] and one["notifications"] and one["jobs"]

        def hooks(mode, names):
            return sorted((e, names[kw["ticket_id"]], kw.get("change"), kw.get("alerts"), kw.get("status"),
                           kw.get("reason"), json.dumps(kw.get("attached_labels"), sort_keys=True))
                          for e, kw in seen[mode])
        assert hooks("batch", batch_names) == hooks("one", one_names)
        # the payloads' recorded results agree too (ticket ids by name)
        results = {}
        for mode, names in (("one", one_names), ("batch", batch_names)):
            res = rows(state(apps[mode]).cfg["database"]["url"], "select id, result from ticket_payloads order by id")
            results[mode] = [{k: (sorted(names[i] for i in v) if isinstance(v, list) else v)
                              for k, v in r["result"].items() if k != "payload_id"} for r in res]
        assert results["batch"] == results["one"]
    finally:
        for app in apps.values():
            close_app(app)


def test_a_payload_the_database_refuses_fails_alone_and_its_group_waits(pg_db):
    app = make(pg_db)
    try:
        st = state(app)
        bodies = [T.payload([T.alert("ServiceDown", fp=f"fp-{g}", service=f"svc-{g}")], group_key=f"g{g}")
                  for g in range(8)]
        # in the middle of the first wave, a payload whose alert the database refuses (a constraint:
        # a real refusal, at apply time), and a later payload of its group
        bodies.insert(3, T.payload([T.alert("ServiceDown", fp="poison", service="svc-8")], group_key="g8"))
        bodies.append(T.payload([T.alert("ServiceDown", fp="fp-8b", service="svc-8")], group_key="g8"))
        run(pg_db, "alter table ticket_alerts add constraint no_poison check (fingerprint <> 'poison')")
        enqueue(app, bodies)
        with st.db.connection() as conn:
            out = tickets.process_batch(st.ctx, conn, now=NOW)
        assert len(out) == 9 and [r.payload_id for r in out if r.failed] == [4]
        keys = sorted(t["incident_key"] for t in rows(pg_db, "select incident_key from tickets"))
        assert keys == [f"g{g}" for g in range(8)]
        [bad] = rows(pg_db, "select attempts, error, processed_at from ticket_payloads where id = 4")
        assert bad["attempts"] == 1 and "no_poison" in bad["error"] and bad["processed_at"] is None
        # g8's second payload waits for the first (per-group order)
        assert rows(pg_db, "select count(*) n from ticket_payloads where processed_at is null")[0]["n"] == 2
        # no job for what rolled back: one remediation job per ticket opened, nothing else
        jobs = rows(pg_db, "select j.kind, t.incident_key from automation_jobs j join tickets t on t.id = j.ticket_id")
        assert sorted(j["incident_key"] for j in jobs) == keys and {j["kind"] for j in jobs} == {"remediation"}
        run(pg_db, "alter table ticket_alerts drop constraint no_poison")
        assert scheduler.process_pending(st) == 2  # the refused one (retried), then the rest of its group
        [g8] = rows(pg_db, "select status, alert_count, firing_count from tickets where incident_key = 'g8'")
        assert (g8["status"], g8["alert_count"], g8["firing_count"]) == ("open", 2, 2)
    finally:
        close_app(app)


def test_jobs_commit_with_the_ticket_change_or_not_at_all(pg_db):
    app = make(pg_db)
    try:
        st = state(app)
        enqueue(app, [T.payload([T.alert("ServiceDown", fp="fp-1")], group_key="g1")])
        # killed before the commit: the transaction that opened the ticket and queued its job goes away
        conn = psycopg.connect(pg_db, row_factory=dict_row)  # not autocommit: a transaction around the batch
        try:
            conn.execute("select 1")  # ... is open: process_batch's own becomes a savepoint of it
            assert len(tickets.process_batch(st.ctx, conn, now=NOW)) == 1
            assert conn.execute("select count(*) n from automation_jobs").fetchone()["n"] == 1
            assert conn.execute("select count(*) n from tickets").fetchone()["n"] == 1
        finally:
            conn.close()  # what a kill leaves: the connection gone without a commit
        assert rows(pg_db, "select count(*) n from tickets")[0]["n"] == 0
        assert rows(pg_db, "select count(*) n from automation_jobs")[0]["n"] == 0
        # the job cannot be written: the ticket change is not either (and the payload is retried)
        run(pg_db, "alter table automation_jobs add constraint no_jobs check (kind <> 'remediation')")
        assert scheduler.process_pending(st) == 1
        assert rows(pg_db, "select count(*) n from tickets")[0]["n"] == 0
        [p] = rows(pg_db, "select attempts, error from ticket_payloads")
        assert p["attempts"] == 1 and "no_jobs" in p["error"]
        run(pg_db, "alter table automation_jobs drop constraint no_jobs")
        assert scheduler.process_pending(st) == 1
        [t] = rows(pg_db, "select id from tickets")
        [j] = rows(pg_db, "select ticket_id, kind, status from automation_jobs")
        assert (j["ticket_id"], j["kind"], j["status"]) == (t["id"], "remediation", "pending")
        # its resolve queues the restore job with it
        enqueue(app, [T.payload([T.resolved(T.alert("ServiceDown", fp="fp-1"), NOW)], group_key="g1")])
        assert scheduler.process_pending(st) == 1
        assert sorted(j["kind"] for j in rows(pg_db, "select kind from automation_jobs")) == ["remediation", "restore"]
    finally:
        close_app(app)


def test_superseding_reads_an_alerts_firing_episodes_only(pg_db):
    """Every notification ends the older firing episodes of its alerts (tickets._SUPERSEDE). A
    flapping alert gathers a resolved episode per re-fire: the statement must find the newest
    start and the firing episodes through indexes, not by reading the alert's whole history."""
    from webhook_receiver.db import connect, migrate

    with connect(pg_db, autocommit=True) as c:
        migrate(c)
        tid = c.execute("""insert into tickets (fingerprint, status, alertname, incident_key, starts_at)
                           values ('x', 'open', 'a', 'k', now()) returning id""").fetchone()["id"]
        c.execute("""insert into ticket_alerts (ticket_id, fingerprint, starts_at, status)
                     select %s, 'fp' || f, now() - e * interval '1 minute',
                            case when e <= 1 then 'firing' else 'resolved' end
                     from generate_series(1, 200) f, generate_series(0, 99) e""", (tid,))
        c.execute("analyze ticket_alerts")
        fps = [f"fp{i}" for i in range(1, 51)]
        plan = str(c.execute("explain (format json) " + tickets._SUPERSEDE, {"now": "now", "fps": fps}).fetchall())
        assert "ticket_alerts_firing" in plan and "Seq Scan" not in plan, plan
        # and what it does: the older of each alert's two firing episodes is ended at the newer's start
        got = c.execute(tickets._SUPERSEDE, {"now": datetime.now(timezone.utc), "fps": fps}).fetchall()
        assert len(got) == 50 and {r["fingerprint"] for r in got} == set(fps)
        n = c.execute("""select count(*) n from ticket_alerts where status = 'firing'
                         and fingerprint = any(%s)""", (fps,)).fetchone()["n"]
        assert n == 50
