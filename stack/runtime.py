"""Resolve a config into a concrete runtime: ports, URLs, database URL, token.

`opsstack up` resolves once and writes <run_dir>/opsstack.resolved.yaml; every supervised
program is started with `-c` pointing at it, so a program only reads its config and
never chooses ports itself. 'auto' ports are chosen once and remembered in
<run_dir>/ports.json so that running `up` again keeps the same URLs.
"""
from __future__ import annotations

import copy
import json
import os
import secrets
from pathlib import Path

import yaml

from core.config import RESOLVED_NAME, run_dir  # noqa: F401 (part of the runtime's interface)
from core.procs import free_port, port_open
from demo import backups
from demo import edge
from stack import loki_config

ENV_DATABASE_URL = "OPSSTACK_DATABASE_URL"
ENV_RECEIVER_TOKEN = "OPSSTACK_RECEIVER_TOKEN"


def demo_port_names(cfg: dict) -> list[tuple[str, str]]:
    """(service, 'admin' | region) pairs that the demo platform listens on."""
    out = []
    for s in cfg["platform"]["services"]:
        out.append((s["name"], "admin"))
        out.extend((s["name"], r) for r in cfg["platform"]["regions"])
    return out


def _load_json(p: Path) -> dict:
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}


def allocate_ports(cfg: dict, rdir: Path, persist: bool = True) -> dict:
    """Concrete ports for every component; 'auto' ones picked free and remembered."""
    host = cfg["stack"]["host"]
    remembered = _load_json(rdir / "ports.json") if persist else {}
    used: set[int] = set()

    def pick(key: str, configured) -> int:
        if configured != "auto":
            used.add(configured)
            return configured
        prev = remembered.get(key)
        if isinstance(prev, int) and prev not in used:
            used.add(prev)
            return prev
        while True:
            p = free_port(host)
            if p not in used and not port_open(host, p):
                used.add(p)
                return p

    ports = {name: pick(name, v) for name, v in cfg["stack"]["ports"].items()}
    demo: dict[str, dict[str, int]] = {}
    if cfg["demo"]["enabled"]:
        for svc, slot in demo_port_names(cfg):
            demo.setdefault(svc, {})[slot] = pick(f"demo/{svc}/{slot}", "auto")
    ports["demo"] = demo
    # the demo's edge (demo/edge.py): nginx per service x region, varnishd, redis, fake Cloudflare
    ports["edge"] = edge.allocate(cfg, pick) if cfg["demo"]["enabled"] and cfg["demo"]["edge"]["enabled"] else {}
    if persist:
        flat = {k: v for k, v in ports.items() if k not in ("demo", "edge")}
        flat.update({f"demo/{s}/{slot}": p for s, d in demo.items() for slot, p in d.items()})
        flat.update(edge.flat_ports(ports["edge"]))
        rdir.mkdir(parents=True, exist_ok=True)
        (rdir / "ports.json").write_text(json.dumps(flat, indent=1, sort_keys=True))
    return ports


def write_private(path: Path, text: str) -> Path:
    """Write a file that holds a secret: created 0600 from the start (never readable by anyone
    else, whatever the umask), then moved over the old one, so a file that was once wider
    is replaced by a private one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise
    return path


def _read_private(f: Path) -> str:
    """Read a secret file of the run folder; one left readable by others (an older `up`) is made private."""
    if f.stat().st_mode & 0o077:
        os.chmod(f, 0o600)
    return f.read_text().strip()


def receiver_token(cfg: dict, rdir: Path) -> str:
    tok = os.environ.get(ENV_RECEIVER_TOKEN) or cfg["receiver"]["token"]
    if tok:
        return tok
    return _generated_secret(rdir / "receiver_token", 32)


def console_password(rdir: Path) -> str:
    """The generated console password of this run folder (made once, kept in console_password)."""
    return _generated_secret(rdir / "console_password", 12)


def _generated_secret(f: Path, nbytes: int) -> str:
    """The secret kept in file ``f`` (0600), made at random the first time."""
    if f.exists():
        return _read_private(f)
    value = secrets.token_urlsafe(nbytes)
    write_private(f, value)
    return value


def resolve(cfg: dict, persist: bool = True) -> dict:
    """A copy of cfg with ports, endpoints, token and (embedded) database URL filled in.

    The result has an extra top-level key `runtime` with ports and URLs.
    """
    out = copy.deepcopy(cfg)
    rdir = run_dir(cfg)
    host = cfg["stack"]["host"]
    ports = allocate_ports(cfg, rdir, persist=persist)
    out["stack"]["run_dir"] = str(rdir)
    out["stack"]["ports"] = {k: v for k, v in ports.items() if k not in ("demo", "edge")}
    if cfg["demo"]["enabled"]:
        for s in out["platform"]["services"]:
            if not s["endpoints"]:
                s["endpoints"] = {r: f"http://{host}:{ports['demo'][s['name']][r]}"
                                  for r in cfg["platform"]["regions"]}
    out["demo"]["ports"] = ports["demo"]
    if ports["edge"]:  # the edge's ports, and the exporters pointed at its parts
        out["demo"]["edge"]["ports"] = ports["edge"]
        edge.wire(out)
    out["receiver"]["token"] = receiver_token(cfg, rdir)
    console_login = None
    if not cfg["receiver"]["console"]["users"]:
        # no console users configured: one 'admin' with a generated password, so that the
        # console of a fresh `make up` can be opened (the password is printed by `up`)
        from werkzeug.security import generate_password_hash

        pw = console_password(rdir)
        out["receiver"]["console"]["users"] = [
            {"name": "admin", "password_hash": _admin_hash(rdir, pw) if persist else generate_password_hash(pw),
             "display_name": "Administrator"}]
        console_login = {"user": "admin", "password_file": str(rdir / "console_password")}
    db_url = os.environ.get(ENV_DATABASE_URL) or cfg["database"]["url"]
    embedded = not db_url
    if embedded:
        db_url = f"postgresql://postgres@{host}:{ports['postgres']}/{cfg['database']['name']}"
    out["database"]["url"] = db_url
    if embedded:  # its pgBackRest repository: what the security and DB exporters read (demo/backups.py)
        backups.resolve_into(out, rdir)
    urls = {
        "prometheus": f"http://{host}:{ports['prometheus']}",
        "alertmanager": f"http://{host}:{ports['alertmanager']}",
        "node_exporter": f"http://{host}:{ports['node_exporter']}/metrics",
        "receiver": f"http://{host}:{ports['receiver']}",
        "exporter_app": f"http://{host}:{ports['exporter_app']}/metrics",
        "supervisor": f"http://{host}:{ports['supervisor']}",
    }
    if cfg["demo"]["enabled"]:
        for svc, d in ports["demo"].items():
            urls[f"demo_{svc}"] = f"http://{host}:{d['admin']}"
    if cfg["demo"]["enabled"] and cfg["demo"]["mailsink"]:
        urls["mailbox"] = default_mailbox(out, host, ports)
        default_direct_route(out, host, ports)
    if out["receiver"]["reconcile"]["alertmanager_urls"] is None:  # the stack's one Alertmanager
        out["receiver"]["reconcile"]["alertmanager_urls"] = [urls["alertmanager"]]
    spool = out["receiver"]["spool"]
    if spool["fsync"] is None:  # the webhook's spool is as durable as the database it feeds
        spool["fsync"] = bool(out["database"]["embedded"]["durable"]) if embedded else True
    out["logs"]["loki"] = loki_config.resolve_mode(cfg)  # auto -> on | off, like a port (docs/logs.md)
    if out["logs"]["loki"] == "on":
        urls["loki"] = f"http://{host}:{ports['loki']}"
    out["runtime"] = {"ports": ports, "urls": urls, "embedded_database": embedded,
                      "console_login": console_login}
    return out


def _admin_hash(rdir: Path, pw: str) -> str:
    """The generated admin's password hash: the one of the last resolved config while it still
    matches (hashes are salted: a new one each time would make every `up` see the receiver's
    config changed and restart it)."""
    from werkzeug.security import check_password_hash, generate_password_hash

    try:
        prev = yaml.safe_load((rdir / RESOLVED_NAME).read_text())["receiver"]["console"]["users"]
        old = next(u["password_hash"] for u in prev if u.get("name") == "admin")
        if check_password_hash(old, pw):
            return old
    except (OSError, yaml.YAMLError, KeyError, TypeError, StopIteration, ValueError):
        pass
    return generate_password_hash(pw)


def default_direct_route(out: dict, host: str, ports: dict) -> None:
    """With the demo mail sink running and no direct route configured, Alertmanager e-mails the
    alerts about the alert path itself (route="direct": the receiver down, ...) to the sink, not
    only through the receiver they are about (stack/alertmanager_config.py)."""
    direct = out["alertmanager"]["direct"]
    if not direct["email_to"]:
        smtp = f"[{host}]" if ":" in host else host
        direct.update(email_to=["oncall@opsstack.localhost"], smarthost=f"{smtp}:{ports['mailsink_smtp']}",
                      require_tls=False)


def default_mailbox(out: dict, host: str, ports: dict) -> str:
    """With the demo mail sink running and no notification channel configured, make the sink
    the channel every ticket change (L1, L2, L3 pages, acknowledgements, resolutions) goes to,
    and point the console at its page; a configured channel is left alone. The sink's URL."""
    mailbox = f"http://{host}:{ports['mailsink_web']}/"
    n = out["notifications"]
    if not n["channels"]:
        n["channels"] = [{"name": "mailbox", "type": "smtp", "url": None, "token_file": None, "channel": None,
                          "headers": {}, "smtp_host": host, "smtp_port": ports["mailsink_smtp"],
                          "starttls": False, "username": None, "password_file": None,
                          "sender": "opsstack@localhost", "to": ["oncall@opsstack.localhost"],
                          "to_owner": True, "timeout": 5.0}]
        n["rules"] = [{"severities": ["critical", "warning", "info"], "levels": [1, 2, 3],
                       "channels": ["mailbox"]}]
        if not n["mailbox_url"]:
            n["mailbox_url"] = mailbox
    if not n["console_url"]:
        n["console_url"] = f"http://{host}:{ports['receiver']}"
    return mailbox


def write_resolved(resolved: dict) -> Path:
    p = Path(resolved["stack"]["run_dir"]) / RESOLVED_NAME
    data = {k: v for k, v in resolved.items() if k != "runtime"}
    # it holds the receiver token, password hashes, API tokens, the database URL: 0600
    write_private(p, "# generated by `opsstack up`; edit opsstack.yaml instead\n"
                  + yaml.safe_dump(data, sort_keys=False))
    (p.parent / "runtime.json").write_text(json.dumps(resolved["runtime"], indent=1))
    return p


def supervisor_pid(rdir: Path) -> int | None:
    """The pid of the supervisord of the stack in run folder ``rdir``, if it is alive."""
    try:
        pid = int((Path(rdir) / "supervisord.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def running_config(cfg: dict) -> Path | None:
    """The resolved config of the stack running from cfg's run folder, or None when none runs."""
    rdir = run_dir(cfg)
    p = rdir / RESOLVED_NAME
    return p if p.exists() and supervisor_pid(rdir) else None


def load_runtime(cfg: dict) -> dict | None:
    """The runtime.json of a stack started from this config, or None."""
    p = run_dir(cfg) / "runtime.json"
    return _load_json(p) or None
