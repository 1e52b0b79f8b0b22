"""receiver.spool.fsync: null follows the durability of the database the spool feeds."""
from __future__ import annotations

from core.config import load_data
from stack import runtime
from webhook_receiver import spool


def _resolved(tmp_path, database=None, **receiver):
    cfg = load_data({"stack": {"run_dir": str(tmp_path / ".run")}, "receiver": receiver,
                     "database": database or {}})
    return runtime.resolve(cfg, persist=False)


def test_fsync_follows_the_embedded_clusters_durability(tmp_path):
    assert _resolved(tmp_path)["receiver"]["spool"]["fsync"] is True
    r = _resolved(tmp_path, database={"embedded": {"durable": False}})
    assert r["receiver"]["spool"]["fsync"] is False and spool.fsync_wanted(r) is False
    # an external database: fsync on; a setting given is kept either way
    assert _resolved(tmp_path, database={"url": "postgresql://db/x"})["receiver"]["spool"]["fsync"] is True
    assert _resolved(tmp_path, database={"embedded": {"durable": False}},
                     spool={"fsync": True})["receiver"]["spool"]["fsync"] is True
    # a receiver on its own (not through `opsstack up`): fsync
    assert spool.fsync_wanted(load_data({})) is True


def test_the_default_folder_is_per_database_and_never_holds_the_password(tmp_path):
    cfg = load_data({"stack": {"run_dir": str(tmp_path)}})
    a = spool.default_dir(cfg, "postgresql://u:secret@db1:5432/opsstack")
    b = spool.default_dir(cfg, "postgresql://u:other@db1:5432/opsstack")
    c = spool.default_dir(cfg, "postgresql://u:secret@db2:5432/opsstack")
    assert a == b != c and a.parent == tmp_path / "receiver-spool"
    assert "secret" not in str(a)
    given = load_data({"receiver": {"spool": {"dir": str(tmp_path / "mine")}}})
    assert spool.default_dir(given, "postgresql://db/x") == tmp_path / "mine"
