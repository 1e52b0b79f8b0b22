"""The webhook's local spool (receiver.intake: spool, the default with queued processing):
answered once on disk, loaded into PostgreSQL in arrival order, exactly once, also after the
database was away; a damaged or torn segment never blocks the rest."""
from __future__ import annotations

import json
import logging
import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest

from tests.support import receiver as T
from tests.support.wait import wait_for
from webhook_receiver import spool
from webhook_receiver.app import close_app, create_app, state
from webhook_receiver.payload import parse_obj
from webhook_receiver.scheduler import process_pending

pytestmark = pytest.mark.integration


def post(client, body):
    return client.post("/webhook/alertmanager", data=json.dumps(body),
                       headers={**T.auth(), "Content-Type": "application/json"})


def one(url, sql, *args):
    with psycopg.connect(url) as c:
        return c.execute(sql, args).fetchone()


def segments(app) -> list[Path]:
    st = state(app)
    return sorted(spool.folder(st).glob("*" + spool.SUFFIX))


@pytest.fixture
def sapp(pg_db, tmp_path):
    a = create_app(T.config(pg_db, receiver={"processing": "queued", "spool": {"dir": str(tmp_path / "spool")}}))
    yield a
    close_app(a)


def test_answered_from_disk_then_loaded_and_applied(sapp, pg_db):
    c = sapp.test_client()
    before = datetime.now(timezone.utc)
    a = T.alert()
    t0 = time.time()
    r = post(c, T.payload([a]))
    t1 = time.time()  # the record's stamp is between t0 and t1
    assert r.status_code == 200 and r.get_json() == {"status": "accepted", "spooled": True}
    # on disk, not yet in the database (no loader thread in this app)
    assert one(pg_db, "select count(*) from ticket_payloads")[0] == 0
    [seg] = segments(sapp)
    recs, stop, why = spool.decode(seg.read_bytes())
    assert len(recs) == 1 and why is None and stop == seg.stat().st_size
    assert json.loads(recs[0][3])["alerts"][0]["labels"] == a["labels"]
    assert json.loads(recs[0][2])[2:] == ["firing", 1]  # the loader's metadata: group, receiver, status, alerts
    post(c, T.payload([T.resolved(a)]))
    size = seg.stat().st_size
    # the first record as if written an hour ago (its header's stamp; the CRC covers the body only)
    with open(seg, "r+b") as f:
        magic, length, crc, stamp = spool.HEADER.unpack(f.read(spool.HEADER.size))
        assert t0 * 1e9 - 1e7 <= stamp <= t1 * 1e9 + 1e7  # stamped when written (wall clock, ns)
        f.seek(0)
        f.write(spool.HEADER.pack(magic, length, crc, stamp - 3600 * 10**9))
    s0 = time.time()
    m = T.samples(c.get("/metrics").get_data(as_text=True))
    s1 = time.time()
    assert m[("opsstack_receiver_spool_bytes", ())] == size
    assert m[("opsstack_receiver_spool_pending_bytes", ())] == size
    # the oldest record not loaded is the first one: its age at the scrape, by its stamp
    assert 3600 + s0 - t1 - 0.01 <= m[("opsstack_receiver_spool_pending_age_seconds", ())] <= 3600 + s1 - t0 + 0.01
    assert process_pending(state(sapp)) == 2
    m = T.samples(c.get("/metrics").get_data(as_text=True))
    assert m[("opsstack_receiver_spool_pending_bytes", ())] == 0
    assert m[("opsstack_receiver_spool_pending_age_seconds", ())] == 0
    assert m[("opsstack_receiver_spool_bytes", ())] == size  # this process still writes it
    n, first, status = one(pg_db, "select count(*), min(received_at), (select status from tickets) from ticket_payloads")
    assert n == 2 and status == "resolved"
    # received_at is when the spool took it (its stamp, moved an hour back above), not when it was loaded
    assert before - timedelta(hours=1) <= first <= datetime.now(timezone.utc) - timedelta(hours=1)
    assert one(pg_db, "select loaded_to from ticket_spool_segments where name = %s", seg.name)[0] == seg.stat().st_size
    # loaded once only
    assert process_pending(state(sapp)) == 0
    assert one(pg_db, "select count(*) from ticket_payloads")[0] == 2


def test_alerts_are_kept_while_the_database_refuses_them(pg_db, tmp_path):
    """The database takes no writes (privileges revoked for real): the webhook still answers 200
    from the spool, and the alert becomes a ticket once the database takes writes again."""
    from webhook_receiver.db import connect, migrate

    with connect(pg_db) as conn:  # the tables, made by their owner
        migrate(conn)
        conn.commit()
    with T.read_only_role(pg_db, "opsstack_spl_") as (url, grant_writes):
        app = create_app(T.config(url, receiver={"processing": "queued", "spool": {"dir": str(tmp_path / "sp")}}))
        try:
            c = app.test_client()
            assert post(c, T.payload([T.alert()])).status_code == 200
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                process_pending(state(app))
            assert one(pg_db, "select count(*) from ticket_payloads")[0] == 0
            assert len(segments(app)) == 1  # still on disk
            grant_writes()
            assert process_pending(state(app)) == 1
            assert one(pg_db, "select count(*) from tickets")[0] == 1
        finally:
            close_app(app)


def item(body: dict) -> tuple[str, str]:
    """A (metadata, JSON text) record as the webhook spools it."""
    return spool.meta_of(parse_obj(body)), json.dumps(body)


def _writer_of_a_gone_process(directory: Path) -> spool.SpoolWriter:
    """A writer whose segment carries the pid of a process that has exited (sealed)."""
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    w = spool.SpoolWriter(directory, fsync=False)
    w.pid = int(p.stdout)
    return w


def _sealed_segment(app, n: int) -> Path:
    """A segment of ``n`` notifications (groups g0..), left by a process that has exited."""
    st = state(app)
    gone = _writer_of_a_gone_process(spool.folder(st))
    gone.append([item(T.payload([T.alert(instance=f"i{i}")], group_key=f"g{i}")) for i in range(n)])
    gone.close()
    [seg] = segments(app)
    return seg


def test_two_processes_one_group_loads_in_arrival_order(sapp, pg_db):
    """A group's firing written by one (since gone) process and its resolve by another load in
    the order they were answered, and the gone process's segment is deleted once loaded."""
    st = state(sapp)
    d = spool.folder(st)
    a = T.alert()
    gone = _writer_of_a_gone_process(d)
    gone.append([item(T.payload([a]))])
    gone.close()
    c = sapp.test_client()
    assert post(c, T.payload([T.resolved(a)])).status_code == 200
    assert len(segments(sapp)) == 2
    assert process_pending(st) == 2
    assert one(pg_db, "select status from tickets")[0] == "resolved"
    ids = [r for r in psycopg.connect(pg_db).execute("select status from ticket_payloads order by id")]
    assert [r[0] for r in ids] == ["firing", "resolved"]
    # the gone process's segment: sealed, loaded, deleted (and its progress row with it)
    process_pending(st)
    left = segments(sapp)
    assert len(left) == 1 and str(os.getpid()) in left[0].name
    assert one(pg_db, "select count(*) from ticket_spool_segments")[0] == 1


def test_a_torn_tail_is_dropped_and_the_rest_loaded(sapp, pg_db, caplog):
    """A process that died inside a write left half a record (never answered): the whole records
    before it load, the rest is dropped with a warning, and the segment goes."""
    st = state(sapp)
    seg = _sealed_segment(sapp, 3)
    with open(seg, "ab") as f:
        f.write(spool.encode(*item(T.payload([T.alert(instance="torn")])), 1)[:30])
    with caplog.at_level(logging.WARNING, logger="webhook_receiver.spool"):
        assert process_pending(st) == 3
    assert "event=spool_damaged" in caplog.text and "torn record" in caplog.text
    assert one(pg_db, "select count(*) from tickets")[0] == 3
    process_pending(st)
    assert segments(sapp) == []


def test_a_damaged_record_in_a_sealed_segment_drops_only_what_follows_it(sapp, pg_db):
    st = state(sapp)
    seg = _sealed_segment(sapp, 4)
    data = bytearray(seg.read_bytes())
    recs, _, _ = spool.decode(bytes(data))
    data[recs[1][0] + spool.HEADER.size + 5] ^= 0xFF  # a flipped byte in the third record's body
    seg.write_bytes(bytes(data))
    assert process_pending(st) == 2
    assert one(pg_db, "select count(*) from tickets")[0] == 2


def test_two_loaders_on_one_folder_load_each_record_once(sapp, pg_db):
    """A second loader (another process that did not get the folder's lock, or a race after a
    restart) cannot load what the first did: the offset moves in the rows' transaction."""
    st = state(sapp)
    c = sapp.test_client()
    for i in range(5):
        post(c, T.payload([T.alert(instance=f"i{i}")], group_key=f"g{i}"))
    d = spool.folder(st)
    first, second = spool.Loader(st.db, d), spool.Loader(st.db, d)
    # both read the same offsets; the first commits, the second finds its offset moved
    orig = second.db.run
    calls = []

    def run_after_first(fn):
        if not calls:
            calls.append(1)
            res = orig(fn)  # the second's read of the offsets (0)
            assert first.load_once() == 5
            return res
        return orig(fn)
    second.db = type("D", (), {"run": staticmethod(run_after_first), "ensure_migrated": st.db.ensure_migrated})()
    assert second.load_once() == 0
    assert one(pg_db, "select count(*) from ticket_payloads")[0] == 5


def test_a_full_spool_answers_503_until_loaded(pg_db, tmp_path):
    """Past receiver.spool.max_bytes on disk (the database does not keep up) the webhook answers
    503 (Alertmanager retries) instead of filling the disk; once loaded, sealed segments are
    deleted and notifications are accepted again."""
    app = create_app(T.config(pg_db, receiver={"processing": "queued", "spool": {
        "dir": str(tmp_path / "s"), "max_bytes": 1 << 20, "segment_bytes": 1 << 17}}))
    try:
        c = app.test_client()
        big = T.payload([T.alert(instance=f"i{i}", note="x" * 2000) for i in range(100)])
        codes = [post(c, big).status_code for _ in range(8)]
        assert codes[0] == 200 and codes[-1] == 503, codes
        r = post(c, big)
        assert r.status_code == 503 and r.get_json()["retry"] is True
        accepted = codes.count(200)
        assert process_pending(state(app)) == accepted
        process_pending(state(app))  # the sealed segments, loaded: deleted
        assert len(segments(app)) == 1  # the segment this process still writes
        wait_for(lambda: post(c, big).status_code == 200, timeout=60, what="accepted again once loaded")
    finally:
        close_app(app)


def test_a_real_receiver_applies_from_the_spool_and_restarts_without_loss(pg_db, tmp_path):
    """`receiver serve` (gunicorn, two workers, the background process) answers from the spool
    and applies; killed hard and started again, what it answered is applied exactly once."""
    data = {"database": {"url": pg_db}, "receiver": {"token": T.TOKEN, "processing": "queued"},
            "stack": {"run_dir": str(tmp_path / "run")}}
    import requests

    with T.ReceiverProcess(data, tmp_path / "a", workers=2) as rp:
        for i in range(20):
            r = requests.post(rp.url + "/webhook/alertmanager", json=T.payload([T.alert(instance=f"i{i}")],
                              group_key=f"g{i}"), headers=T.auth(), timeout=30)
            assert r.status_code == 200 and r.json()["spooled"] is True
        wait_for(lambda: one(pg_db, "select count(*) from tickets")[0] == 20, timeout=120,
                 what="20 tickets from the spool")
        rp.stop(sig=9)  # SIGKILL: no clean shutdown
    spool_dir = tmp_path / "run" / "receiver-spool"
    assert any(spool_dir.rglob("*.seg"))
    with T.ReceiverProcess(data, tmp_path / "b", workers=1) as rp:
        r = requests.post(rp.url + "/webhook/alertmanager", json=T.payload([T.alert(instance="after")],
                          group_key="after"), headers=T.auth(), timeout=30)
        assert r.status_code == 200
        wait_for(lambda: one(pg_db, "select count(*) from tickets")[0] == 21, timeout=120,
                 what="the ticket of the notification after the restart")
        # the first run's segments: sealed (their processes are gone), loaded, deleted
        wait_for(lambda: len(list(spool_dir.rglob("*.seg"))) <= 2, timeout=120, what="old segments removed")
    assert one(pg_db, "select count(*) from ticket_payloads")[0] == 21


def test_only_files_the_receiver_wrote_are_loaded(sapp, pg_db, tmp_path):
    """The folder is the receiver's alone (0700); a link or a file of another user in it is never
    turned into alerts, however well-formed."""
    import stat

    st = state(sapp)
    c = sapp.test_client()
    assert post(c, T.payload([T.alert(instance="real")], group_key="real")).status_code == 200
    d = spool.folder(st)
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    forged = tmp_path / "forged.bin"
    forged.write_bytes(spool.encode(*item(T.payload([T.alert(instance="forged")], group_key="forged")), 1))
    os.symlink(forged, d / "elsewhere-1-1.seg")
    if os.geteuid() == 0:  # a file of another user (only root can give one away)
        other = d / "elsewhere-2-2.seg"
        other.write_bytes(forged.read_bytes())
        os.chown(other, 65534, 65534)
    assert process_pending(st) == 1
    assert [r[0] for r in psycopg.connect(pg_db).execute("select incident_key from tickets")] == ["real"]
    assert forged.exists()  # never touched


def test_a_record_larger_than_one_read_loads_whole(sapp, pg_db, monkeypatch):
    """A storm's notification (10,000 alerts: megabytes) is larger than what one pass reads of a
    segment: it is read whole, not left waiting for ever."""
    monkeypatch.setattr(spool, "READ_BYTES", 512)
    c = sapp.test_client()
    big = T.payload([T.alert(instance=f"i{i}") for i in range(50)], group_key="big")
    small = T.payload([T.alert(instance="s")], group_key="small")
    assert post(c, big).status_code == 200 and post(c, small).status_code == 200
    assert len(json.dumps(big)) > 10 * 512
    assert process_pending(state(sapp)) == 2
    assert one(pg_db, "select count(*) from ticket_alerts")[0] == 51
