"""receiver.reconcile: `opsstack up` points it at the stack's Alertmanager unless members are given."""
from __future__ import annotations

from core.config import load_data, view
from stack import runtime
from webhook_receiver import reconcile


def _resolved(tmp_path, **receiver):
    cfg = load_data({"stack": {"run_dir": str(tmp_path / ".run")}, "receiver": receiver})
    return runtime.resolve(cfg, persist=False)


def test_defaults_to_the_stacks_alertmanager(tmp_path):
    r = _resolved(tmp_path)
    assert r["receiver"]["reconcile"]["alertmanager_urls"] == [r["runtime"]["urls"]["alertmanager"]]
    assert reconcile.urls(view(r, "receiver").reconcile) == (r["runtime"]["urls"]["alertmanager"],)


def test_given_members_are_kept_and_an_empty_list_or_disabled_turns_it_off(tmp_path):
    members = ["http://127.0.0.1:19093/", "http://127.0.0.1:19094"]
    r = _resolved(tmp_path, reconcile={"alertmanager_urls": members})
    assert reconcile.urls(view(r, "receiver").reconcile) == ("http://127.0.0.1:19093", "http://127.0.0.1:19094")
    assert reconcile.urls(view(_resolved(tmp_path, reconcile={"alertmanager_urls": []}), "receiver").reconcile) == ()
    off = _resolved(tmp_path, reconcile={"enabled": False})
    assert reconcile.urls(view(off, "receiver").reconcile) == ()
    # not through `opsstack up` (a receiver on its own): no member known, nothing to reconcile
    assert reconcile.urls(view(load_data({}), "receiver").reconcile) == ()
