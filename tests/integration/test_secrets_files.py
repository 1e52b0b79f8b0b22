"""Secrets stay secret on disk and in logs.

- Every file `opsstack up` writes under <run_dir> that holds a secret (the resolved config, the
  receiver token, the generated console password, configs that point at them) is created 0600,
  not chmod-ed after writing: shown with the umask at 0 (a plain write would make 0666) and
  os.chmod watched.
- A failing automation job logs no token, password hash or database password (it used to log
  its arguments with %r, the whole config among them).
"""
from __future__ import annotations

import logging
import os
import stat
import time

import psycopg
import pytest
import yaml

from stack import runtime
from core.config import load_data
from stack.launcher import Stack

pytestmark = pytest.mark.integration

API_TOKEN = "api-token-SECRET-81c3"
SESSION_SECRET = "session-SECRET-4b2a"
USER_HASH = "scrypt:32768:8:1$SALTsalt0$HASHhash0123456789"


def _cfg(tmp_path, **extra) -> dict:
    return load_data({"stack": {"run_dir": str(tmp_path / ".run")},
                      "receiver": {"api": {"tokens": [{"name": "ci", "token": API_TOKEN}]},
                                   "console": {"session_secret": SESSION_SECRET}},
                      **extra})


@pytest.fixture
def umask0():
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def chmods(monkeypatch):
    """Every os.chmod call (a secret file must be private from its creation, not made so after)."""
    calls = []
    real = os.chmod

    def spy(path, mode, *a, **kw):
        calls.append((str(path), mode))
        return real(path, mode, *a, **kw)
    monkeypatch.setattr(os, "chmod", spy)
    return calls


def _secret_files(rdir, secrets) -> dict:
    """Every file under rdir whose content holds one of the secrets -> its mode."""
    out = {}
    for root, _dirs, files in os.walk(rdir):
        for f in files:
            p = os.path.join(root, f)
            try:
                text = open(p, "rb").read().decode("utf-8", "replace")
            except OSError:
                continue
            if any(s in text for s in secrets):
                out[os.path.relpath(p, rdir)] = stat.S_IMODE(os.lstat(p).st_mode)
    return out


def test_up_writes_every_secret_file_0600_from_creation(tmp_path, umask0, chmods):
    cfg = _cfg(tmp_path)
    stack = Stack(cfg)
    # what `opsstack up` does before starting supervisord
    resolved = runtime.resolve(cfg)
    runtime.write_resolved(resolved)
    stack.render(resolved, stack.programs(resolved))
    rdir = tmp_path / ".run"
    token = (rdir / "receiver_token").read_text()
    password = (rdir / "console_password").read_text()
    admin_hash = resolved["receiver"]["console"]["users"][0]["password_hash"]
    secrets = [token, password, admin_hash, API_TOKEN, SESSION_SECRET]
    found = _secret_files(rdir, secrets)
    for name in (runtime.RESOLVED_NAME, "receiver_token", "console_password"):
        assert name in found, (name, sorted(found))
    assert {n: oct(m) for n, m in found.items() if m != 0o600} == {}
    # private from the start: nothing was chmod-ed into privacy after being written
    assert [c for c in chmods if os.path.basename(c[0]) in found] == []
    # files that point at a credential (alertmanager.yml names the token file) are private too
    for name in ("alertmanager.yml", "supervisord.conf", "prometheus.yml"):
        assert stat.S_IMODE((rdir / name).stat().st_mode) == 0o600, name
    # what the receiver reads is the real thing
    assert yaml.safe_load((rdir / runtime.RESOLVED_NAME).read_text())["receiver"]["token"] == token

    # a second `up` (files exist) keeps them private; an old world-readable resolved file is replaced
    os.chmod(rdir / runtime.RESOLVED_NAME, 0o644)
    chmods.clear()
    resolved = runtime.resolve(cfg)
    runtime.write_resolved(resolved)
    stack.render(resolved, stack.programs(resolved))
    found = _secret_files(rdir, secrets)
    assert {n: oct(m) for n, m in found.items() if m != 0o600} == {}
    assert resolved["receiver"]["token"] == token


def test_up_prints_no_console_password(tmp_path, capsys):
    """`opsstack up` names the file that holds the generated console password, never the password."""
    from argparse import Namespace

    from stack.commands import up

    cfg = _cfg(tmp_path)
    resolved = runtime.resolve(cfg)
    pw = (tmp_path / ".run" / "console_password").read_text()

    class FakeStack:  # only the printing is under test here: no programs are started
        logs = tmp_path / ".run" / "logs"

        def __init__(self, _cfg):
            pass

        def up(self, progress):
            return resolved

        def status(self):
            return {"running": True, "components": {"receiver": {"url": "http://127.0.0.1:1", "healthy": True}}}

    orig = up.Stack
    up.Stack = FakeStack
    try:
        assert up.run(Namespace(quiet=True), cfg) == 0
    finally:
        up.Stack = orig
    out = capsys.readouterr().out
    assert pw not in out and "console_password" in out


# ------------------------------------------------------------------ logs
DB_PASSWORD = "dbPASSWORD-never-logged-5e"
JIRA_TOKEN = "jira-TOKEN-never-logged-7a"


def _url_with_password(pg_db: str) -> str:
    # the test server trusts loopback: the password is not checked, only carried around
    return pg_db.replace("postgresql://postgres@", f"postgresql://postgres:{DB_PASSWORD}@", 1)


def test_a_failing_automation_job_logs_no_secret(pg_db, caplog):
    from core.procs import free_port
    from tests.support import receiver as T
    from webhook_receiver.app import close_app, create_app

    url = _url_with_password(pg_db)
    assert DB_PASSWORD in url
    cfg = T.config(url, enrichment={"enabled": True, "prometheus_url": f"http://127.0.0.1:{free_port()}",
                                    "timeout": "1s"},
                   receiver={"api": {"tokens": [{"name": "ci", "token": API_TOKEN}]},
                             "console": {"session_secret": SESSION_SECRET,
                                         "users": [{"name": "alice", "password_hash": USER_HASH}]}},
                   itsm={"jira": {"api_token": JIRA_TOKEN}})
    caplog.set_level(logging.INFO)
    app = create_app(cfg)
    try:
        # the enrichment job cannot store its attachments: it fails
        with psycopg.connect(pg_db, autocommit=True) as c:
            c.execute("drop table ticket_attachments cascade")
        r = app.test_client().post("/webhook/alertmanager", json=T.payload([T.alert()]), headers=T.auth())
        assert r.status_code == 200
        deadline = time.monotonic() + 60
        while "automation_job_failed" not in caplog.text:
            assert time.monotonic() < deadline, "the enrichment job never failed:\n" + caplog.text[-3000:]
            time.sleep(0.1)
    finally:
        close_app(app)
    text = caplog.text + "".join(r.exc_text or "" for r in caplog.records)
    for secret in (T.TOKEN, DB_PASSWORD, USER_HASH, API_TOKEN, SESSION_SECRET, JIRA_TOKEN):
        assert secret not in text, (secret, text[-3000:])
