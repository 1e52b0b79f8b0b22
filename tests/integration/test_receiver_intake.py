"""Group commit of the webhook's raw payloads into the database (webhook_receiver.intake, processing:
queued, intake: database; the spool's own: test_receiver_spool.py)."""
from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path

import psycopg
import pytest
import requests

from tests.support import receiver as T
from tests.support.wait import wait_for
from webhook_receiver import intake
from webhook_receiver.app import close_app, create_app, state
from webhook_receiver.payload import parse_obj

pytestmark = pytest.mark.integration


def post(client, body):
    return client.post("/webhook/alertmanager", data=json.dumps(body),
                       headers={**T.auth(), "Content-Type": "application/json"})


def rows(url, sql):
    with psycopg.connect(url) as c:
        return c.execute(sql).fetchall()


def concurrent_posts(app, n_threads: int, per_thread: int, tag: str) -> list[tuple[str, int, dict]]:
    """POST from n_threads threads at once (a barrier); [(group_key, status, json)]."""
    out: list = []
    lock = threading.Lock()
    barrier = threading.Barrier(n_threads)

    def run(k: int):
        client = app.test_client()
        barrier.wait()
        for i in range(per_thread):
            gk = f"{tag}/{k}/{i}"
            r = post(client, T.payload([T.alert(service=f"svc-{k}-{i}", fp=f"{tag}{k:04x}{i:04x}")], group_key=gk))
            with lock:
                out.append((gk, r.status_code, r.get_json()))
    ts = [threading.Thread(target=run, args=(k,)) for k in range(n_threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    return out


def test_concurrent_posts_each_get_their_own_committed_payload(pg_db):
    app = create_app(T.config(pg_db, receiver={"processing": "queued", "intake": "database", "pool_size": 4}))
    try:
        got = concurrent_posts(app, n_threads=24, per_thread=5, tag="gc")
        assert len(got) == 120
        assert all(st == 200 and js["status"] == "accepted" for _, st, js in got), got
        ids = {gk: js["payload_id"] for gk, _, js in got}
        assert len(set(ids.values())) == 120  # each its own id
        stored = dict(rows(pg_db, "select group_key, id from ticket_payloads where processed_at is null"))
        assert stored == ids  # every payload is there, under the id its request was answered with
        body = rows(pg_db, f"select body from ticket_payloads where id = {ids['gc/3/2']}")[0][0]
        assert body["groupKey"] == "gc/3/2" and body["alerts"][0]["labels"]["service"] == "svc-3-2"
        w = app.extensions[intake.EXT]
        assert w.stored == 120 and w.batches < 120  # commits were shared
    finally:
        close_app(app)


class _HeldDb:
    """The real Database, but the first write waits until ``release`` is set."""

    def __init__(self, db):
        self.db = db
        self.release = threading.Event()
        self.calls: list[int] = []

    def run(self, fn):
        if not self.calls:
            self.calls.append(0)
            assert self.release.wait(30)
        self.calls.append(1)
        return self.db.run(fn)


def test_what_waits_during_a_commit_goes_into_the_next_one(pg_db):
    app = create_app(T.config(pg_db, receiver={"processing": "queued", "intake": "database"}))
    try:
        held = _HeldDb(state(app).db)
        w = intake.Writer(held, timeout=30)
        notes = [parse_obj(T.payload([T.alert(fp=f"h{i:04x}")], group_key=f"held/{i}")) for i in range(11)]
        res: dict = {}

        def submit(i):
            res[i] = w.submit(notes[i], json.dumps(T.payload([T.alert(fp=f"h{i:04x}")], group_key=f"held/{i}")))
        first = threading.Thread(target=submit, args=(0,))
        first.start()
        while not held.calls:  # the writer holds the first batch (1 payload)
            threading.Event().wait(0.005)
        rest = [threading.Thread(target=submit, args=(i,)) for i in range(1, 11)]
        for t in rest:
            t.start()
        while len(w._queue) < 10:
            threading.Event().wait(0.005)
        held.release.set()
        for t in [first, *rest]:
            t.join(30)
        assert w.batches == 2 and w.stored == 11  # 1, then the 10 that queued meanwhile
        assert sorted(res) == list(range(11)) and len(set(res.values())) == 11
        stored = dict(rows(pg_db, "select group_key, id from ticket_payloads"))
        assert stored == {f"held/{i}": res[i] for i in range(11)}
        # payloads of one batch get ids in the order they queued (arrival order per group)
        assert [res[i] for i in range(1, 11)] == sorted(res[i] for i in range(1, 11))
    finally:
        close_app(app)


def test_one_payload_postgresql_refuses_does_not_fail_its_batch(pg_db):
    app = create_app(T.config(pg_db, receiver={"processing": "queued", "intake": "database"}))
    try:
        held = _HeldDb(state(app).db)
        w = intake.Writer(held, timeout=30)
        note = parse_obj(T.payload([T.alert()]))
        ok_text = json.dumps(T.payload([T.alert()]))
        out: dict = {}

        def submit(i, text):
            try:
                out[i] = w.submit(note, text)
            except intake.StoreFailed as exc:
                out[i] = exc
        ts = [threading.Thread(target=submit, args=(0, ok_text))]
        ts[0].start()
        while not held.calls:
            threading.Event().wait(0.005)
        ts += [threading.Thread(target=submit, args=(i, "{not json" if i == 2 else ok_text)) for i in (1, 2, 3)]
        for t in ts[1:]:
            t.start()
        while len(w._queue) < 3:
            threading.Event().wait(0.005)
        held.release.set()
        for t in ts:
            t.join(30)
        assert isinstance(out[2], intake.StoreFailed) and isinstance(out[2].cause, psycopg.Error)
        assert all(isinstance(out[i], int) for i in (0, 1, 3))
        assert sorted(r[0] for r in rows(pg_db, "select id from ticket_payloads")) == sorted(out[i] for i in (0, 1, 3))
    finally:
        close_app(app)


def test_a_queued_request_never_waits_past_the_time_limit(pg_db):
    app = create_app(T.config(pg_db, receiver={"processing": "queued", "intake": "database"}))
    held = _HeldDb(state(app).db)
    try:
        w = intake.Writer(held, timeout=0.5)
        note = parse_obj(T.payload([T.alert()]))
        out: dict = {}

        def submit(i):
            try:
                out[i] = w.submit(note, json.dumps(T.payload([T.alert()], group_key=f"late/{i}")))
            except intake.StoreFailed as exc:
                out[i] = exc
        leader = threading.Thread(target=submit, args=(0,))
        leader.start()
        while not held.calls:  # the first request writes, and its write hangs
            threading.Event().wait(0.005)
        ts = [threading.Thread(target=submit, args=(i,)) for i in (1, 2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(5)
        assert not any(t.is_alive() for t in ts)
        assert all(isinstance(out[i], intake.StoreFailed) for i in (1, 2))
        assert w._queue == []  # withdrawn: never written
        held.release.set()
        leader.join(30)
        assert isinstance(out[0], int)
        assert rows(pg_db, "select id, body->>'groupKey' from ticket_payloads") == [(out[0], "late/0")]
        assert not w._busy
        assert isinstance(w.submit(note, json.dumps(T.payload([T.alert()]))), int)  # and it goes on
    finally:
        held.release.set()
        close_app(app)


def test_database_stopped_every_waiting_request_is_503_and_nothing_written(tmp_path):
    from stack.pgcluster import Cluster
    from core.procs import free_port

    cl = Cluster(tmp_path / "data", port=free_port(), preload=())
    cl.start()
    app = create_app(T.config(cl.url(), receiver={"processing": "queued", "intake": "database", "db_timeout": "1s"}))
    try:
        c = app.test_client()
        assert post(c, T.payload([T.alert()], group_key="before")).status_code == 200
        cl.stop()
        got = concurrent_posts(app, n_threads=16, per_thread=2, tag="down")
        assert len(got) == 32
        assert all(st == 503 and js["error"] == "database_unavailable" for _, st, js in got), got
        cl.start()
        assert rows(cl.url(), "select group_key from ticket_payloads") == [("before",)]  # none half-written
        # the pool finds the server again (on a busy machine a reconnect may take longer than the
        # 1 s db_timeout: that request is a 503, which Alertmanager retries, as this does)
        wait_for(lambda: post(c, T.payload([T.alert()], group_key="probe")).status_code == 200,
                 what="a webhook stored after the restart")
        got = concurrent_posts(app, n_threads=8, per_thread=2, tag="back")
        assert all(st == 200 for _, st, _ in got), got
        assert rows(cl.url(), "select count(*) from ticket_payloads where group_key like 'back/%'")[0][0] == 16
    finally:
        close_app(app)
        cl.stop()


@pytest.mark.parametrize("mode", ["queued", "inline"])
def test_body_stored_as_received_and_the_edge_cases(pg_db, mode):
    """The body is stored as received (no second serialisation) when it is plain UTF-8; a BOM,
    a surrogate pair escape and non-ASCII text still work; NaN is a 400 (jsonb refuses it)."""
    app = create_app(T.config(pg_db, receiver={"processing": mode, "intake": "database"}))
    try:
        c = app.test_client()
        h = {**T.auth(), "Content-Type": "application/json"}
        body = json.dumps(T.payload([T.alert(summary_extra="x")], group_key="raw/1"), indent=2).encode()
        assert c.post("/webhook/alertmanager", data=body, headers=h).status_code == 200
        bom = b"\xef\xbb\xbf" + json.dumps(T.payload([T.alert(fp="bom")], group_key="raw/bom")).encode()
        assert c.post("/webhook/alertmanager", data=bom, headers=h).status_code == 200
        pair = json.dumps(T.payload([T.alert(fp="pair", service="caf\u00e9 \U0001F600")], group_key="raw/pair"))
        assert "\\ud83d" in pair
        assert c.post("/webhook/alertmanager", data=pair.encode(), headers=h).status_code == 200
        nan = json.dumps(T.payload([T.alert(fp="nan")], group_key="raw/nan")).replace('"truncatedAlerts": 0',
                                                                                    '"truncatedAlerts": 0, "x": NaN')
        r = c.post("/webhook/alertmanager", data=nan.encode(), headers=h)
        assert r.status_code == 400 and r.get_json()["error"] == "invalid_json"
        got = dict(rows(pg_db, "select group_key, body from ticket_payloads"))
        assert set(got) == {"raw/1", "raw/bom", "raw/pair"}
        assert got["raw/1"] == json.loads(body)
        assert got["raw/pair"]["alerts"][0]["labels"]["service"] == "caf\u00e9 \U0001F600"
    finally:
        close_app(app)


def _children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d))
            except (OSError, ValueError, IndexError):
                continue
    return out


def test_background_process_yields_the_cpu_to_the_web_workers(pg_db, tmp_path):
    """receiver.background_nice: the background process (payload processing, scheduler) runs at a
    lower CPU priority than the gunicorn workers, which keep the server's own priority."""
    rcv = T.ReceiverProcess({"database": {"url": pg_db}, "receiver": {"token": T.TOKEN, "background_nice": 7}},
                            tmp_path / "rcv").start()
    try:
        def background_pid():
            m = re.findall(r"event=background_process pid=(\d+)", rcv.log.read_text())
            return int(m[-1]) if m else None
        bg = wait_for(background_pid, what="the background process started")
        base = os.getpriority(os.PRIO_PROCESS, rcv.proc.pid)
        assert wait_for(lambda: os.getpriority(os.PRIO_PROCESS, bg) == min(base + 7, 19), what="niced")
        workers = [p for p in _children(rcv.proc.pid) if p != bg]
        assert workers and all(os.getpriority(os.PRIO_PROCESS, p) == base for p in workers)
        # it still does its work: a stored payload becomes a ticket
        r = requests.post(rcv.url + "/webhook/alertmanager", data=json.dumps(T.payload([T.alert()])),
                          headers={**T.auth(), "Content-Type": "application/json"}, timeout=30)
        assert r.status_code == 200 and r.json()["status"] == "accepted"
        wait_for(lambda: rows(pg_db, "select count(*) from tickets")[0][0] == 1, what="the ticket")
        # and its database sessions yield as well, where the server runs here as a user we may renice
        backends = [r[0] for r in rows(pg_db, "select pid from pg_stat_activity where datname = current_database() "
                                              "and pid <> pg_backend_pid()")]
        mine = [p for p in backends if os.geteuid() in (0, os.stat(f"/proc/{p}").st_uid)] \
            if os.path.exists("/proc") else []
        if mine:
            nices = {os.getpriority(os.PRIO_PROCESS, p) for p in mine}
            assert any(n >= 7 for n in nices), nices  # the background process's
            assert any(n < 7 for n in nices), nices   # the worker's (the intake) keep theirs
    finally:
        rcv.stop()


def test_lower_backend_priority_only_touches_its_own_backend(pg_db):
    from webhook_receiver.db import connect, lower_backend_priority

    with connect(pg_db) as mine, connect(pg_db) as other:
        pid, other_pid = mine.info.backend_pid, other.info.backend_pid
        before, other_before = (os.getpriority(os.PRIO_PROCESS, p) for p in (pid, other_pid))
        assert lower_backend_priority(mine, 0) is False and os.getpriority(os.PRIO_PROCESS, pid) == before
        may = os.geteuid() in (0, os.stat(f"/proc/{pid}").st_uid)
        assert lower_backend_priority(mine, 3) is may
        assert os.getpriority(os.PRIO_PROCESS, pid) == (min(before + 3, 19) if may else before)
        assert os.getpriority(os.PRIO_PROCESS, other_pid) == other_before
        assert mine.execute("select 1 as one").fetchone()["one"] == 1  # the session goes on
