"""Receiver helpers for tests and benches: Alertmanager-shaped payloads, a receiver config, a real
receiver process. (Was webhook_receiver/testing.py; tests import
import it as ``T``.)"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import yaml

from core.config import load_data
from core.procs import free_port, tail, wait_http

TOKEN = "test-receiver-token"


def rfc3339(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def fingerprint(labels: dict) -> str:
    return hashlib.sha256(repr(sorted(labels.items())).encode()).hexdigest()[:16]


def alert(alertname: str = "ServiceDown", status: str = "firing", starts_at: datetime | str | None = None,
          ends_at: datetime | None = None, fp: str | None = None, **labels) -> dict:
    labels = {"alertname": alertname, "severity": "critical", "tier": "1", "service": "user-app",
              "team": "ops", **labels}
    starts = starts_at or datetime(2026, 11, 26, 9, 0, tzinfo=timezone.utc)
    return {
        "status": status,
        "labels": labels,
        "annotations": {"summary": f"{alertname} fired.", "description": f"{alertname} on {labels.get('service')}",
                        "runbook_url": f"https://example.invalid/runbooks/{alertname}.md"},
        "startsAt": starts if isinstance(starts, str) else rfc3339(starts),
        "endsAt": rfc3339(ends_at) if ends_at else "0001-01-01T00:00:00Z",
        "generatorURL": "http://127.0.0.1:9090/graph?g0.expr=up",
        "fingerprint": fp or fingerprint(labels),
    }


def payload(alerts: list[dict], status: str | None = None, group_key: str | None = None,
            receiver: str = "opsstack-critical") -> dict:
    status = status or ("firing" if any(a["status"] == "firing" for a in alerts) else "resolved")
    common = dict(alerts[0]["labels"]) if alerts else {}
    for a in alerts[1:]:
        common = {k: v for k, v in common.items() if a["labels"].get(k) == v}
    return {
        "version": "4",
        "groupKey": group_key or '{}/{severity="critical"}:{alertname="%s"}' % common.get("alertname", ""),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": receiver,
        "groupLabels": {k: common[k] for k in ("alertname", "service") if k in common},
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": alerts,
    }


def resolved(a: dict, ends_at: datetime | None = None) -> dict:
    out = copy.deepcopy(a)
    out["status"] = "resolved"
    out["endsAt"] = rfc3339(ends_at or datetime.now(timezone.utc))
    return out


def config(db_url: str, **sections) -> dict:
    """A validated config for a receiver on ``db_url`` (sections deep-merged over defaults)."""
    data = {"database": {"url": db_url}, "receiver": {"token": TOKEN, "db_timeout": "2s", "processing": "inline",
                                                       "background": "workers", "scheduler": {"enabled": False},
                                                       # a spool of its own (queued processing): never another test's
                                                       "spool": {"dir": tempfile.mkdtemp(prefix="opsstack-spool-")}}}
    for k, v in sections.items():
        data[k] = _merge(data.get(k, {}), v)
    return load_data(data)


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@contextlib.contextmanager
def read_only_role(db_url: str, prefix: str):
    """A login role that may read every table of ``db_url`` (made already) but write none: yields
    (its URL, grant_writes()); dropped afterwards. The database refuses writes for real."""
    import psycopg

    role = prefix + db_url.rsplit("/", 1)[1][-10:]
    with psycopg.connect(db_url, autocommit=True) as c:
        c.execute(f"create role {role} login")
        c.execute(f"grant select on all tables in schema public to {role}")
        c.execute(f"grant usage on all sequences in schema public to {role}")

    def grant_writes():
        with psycopg.connect(db_url, autocommit=True) as c:
            c.execute(f"grant insert, update, delete on all tables in schema public to {role}")
    try:
        yield db_url.replace("postgres@", f"{role}@"), grant_writes
    finally:
        with psycopg.connect(db_url, autocommit=True) as c:
            c.execute(f"drop owned by {role}")
            c.execute(f"drop role {role}")


def auth(token: str = TOKEN) -> dict:
    return {"Authorization": f"Bearer {token}"}


def reader(client, token: str = TOKEN):
    """A Flask test client that sends ``Authorization: Bearer <token>`` on every request (API reads
    need a credential unless receiver.api.anonymous_read); headers given to a call still win."""
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


class ReceiverProcess:
    """`opsstack receiver serve` (real gunicorn) on a free loopback port, for tests and benches."""

    def __init__(self, cfg_data: dict, workdir, workers: int = 1, extra_args: list[str] | None = None):
        self.port = free_port()
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        # its own run_dir unless given (the spool is there: never the checkout's .run, shared)
        data = _merge(_merge({"stack": {"run_dir": str(self.workdir / "run")}}, cfg_data),
                      {"stack": {"host": "127.0.0.1", "ports": {"receiver": self.port}}, "receiver": {"workers": workers}})
        self.config_file = self.workdir / "receiver.yaml"
        self.config_file.write_text(yaml.safe_dump(data))
        self.log = self.workdir / "receiver.log"
        self.extra_args = extra_args or []
        self.proc = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> "ReceiverProcess":
        exe = Path(sys.executable).with_name("opsstack")
        env = {k: v for k, v in os.environ.items() if k not in ("OPSSTACK_DATABASE_URL", "OPSSTACK_RECEIVER_TOKEN")}
        out = open(self.log, "ab")
        self.proc = subprocess.Popen([str(exe), "-c", str(self.config_file), "receiver", "serve", *self.extra_args],
                                     stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            wait_http(self.url + "/readyz", timeout=timeout, proc=self.proc)
        except Exception as exc:
            self.stop()
            raise RuntimeError(f"receiver did not start: {exc}\n{tail(self.log)}") from None
        return self

    def stop(self, sig=None) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig or signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:  # anything of its session still there (workers, the background process)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def samples(text: str) -> dict:
    """Prometheus text exposition -> {(sample name, sorted label items): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out
