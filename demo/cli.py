"""`opsstack demo ...`: serve one demo service, list/inject/heal faults, drive the admin API.

    opsstack demo serve --service S           one service process (the launcher runs one per service)
    opsstack demo faults [--active]           fault kinds (and, with --active, what is injected now)
    opsstack demo fault KIND [--service S] [--region R] [--rate X] [--duration D]
    opsstack demo heal [--service S] [--kind K] [--region R]
    opsstack demo route --service S (--healthy R1,R2 | --restore)
    opsstack demo purge [--service S] [--tags T1,T2]
    opsstack demo replace --service S [--region R]
    opsstack demo state [--service S]
    opsstack demo mailsink                    the local mail sink (SMTP + web page; the launcher runs it)
    opsstack demo backups                     the embedded database's backup schedule (the launcher runs it)
    opsstack demo approver                    approve pending event requests after demo.airflow_approver_delay

The faults backup-stale and replica-lag act on the embedded database's pgBackRest repository
and replica (demo/backups.py), not on a service: --service/--region/--rate do not apply.

Client commands find the running stack's ports in demo.ports: the `opsstack` CLI gives them
the config the running stack was resolved with (<run_dir>/opsstack.resolved.yaml). `run(args, cfg)` is the entry
point: it builds the config views (demo, platform, stack) once and hands them down.
"""
from __future__ import annotations

import json
import threading
import time
import sys
import urllib.error
import urllib.request

from prometheus_client import disable_created_metrics

from core.config import view
from core.exporter import wait_until_stopped
from demo import approver, backups, edge
from demo.airflow.client import AirflowClient
from demo.airflow.launcher import access
from demo.faults import KINDS, parse_seconds
from demo.mailsink import MailSink
from demo.service import DemoService


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="action")
    p = sub.add_parser("serve", help="run one demo service process")
    p.add_argument("--service", required=True)
    p.add_argument("--no-load", action="store_true", help="do not run the built-in load generator")
    p = sub.add_parser("faults", help="list the fault kinds")
    p.add_argument("--active", action="store_true", help="also show the faults active in the running stack")
    p = sub.add_parser("fault", help="inject a fault into the running demo platform")
    p.add_argument("kind")
    p.add_argument("--service", help="default: every service")
    p.add_argument("--region")
    p.add_argument("--rate", help="meaning depends on the kind (see `opsstack demo faults`)")
    p.add_argument("--duration", help="heal by itself after this many seconds (capped by demo.faults.max_duration)")
    p = sub.add_parser("heal", help="heal injected faults")
    p.add_argument("--service", help="default: every service")
    p.add_argument("--kind")
    p.add_argument("--region")
    p = sub.add_parser("route", help="set the regions the traffic router treats as healthy")
    p.add_argument("--service", required=True)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--healthy", help="comma-separated regions")
    g.add_argument("--restore", action="store_true")
    p = sub.add_parser("purge", help="purge the response cache (by tags)")
    p.add_argument("--service")
    p.add_argument("--tags", help="comma-separated tags; default everything")
    p = sub.add_parser("replace", help="replace a region's instance (new listener, cold cache)")
    p.add_argument("--service", required=True)
    p.add_argument("--region", help="default: every region")
    p = sub.add_parser("state", help="print the state of the running demo services (JSON)")
    p.add_argument("--service")
    sub.add_parser("mailsink", help="run the local mail sink (SMTP on stack.ports.mailsink_smtp, "
                                    "web page on stack.ports.mailsink_web)")
    sub.add_parser("approver", help="approve the Event Management service's pending event requests after "
                                    "demo.airflow_approver_delay (a simulated manager/executive; demo/approver.py)")
    sub.add_parser("backups", help="run the embedded database's backup schedule, restore verification and "
                                   "backup faults (demo/backups.py)")


class NotRunning(Exception):
    pass


def running_ports(demo, stack) -> tuple[str, dict]:
    """(host, demo ports) of the running stack (``demo``, ``stack``: the views of those
    sections). The `opsstack` CLI hands the client commands the config the running stack
    was resolved with (stack/cli.py), which holds demo.ports."""
    if not demo.ports:
        raise NotRunning("the demo platform is not running (no demo ports in the config); "
                         "start it with `make up` or `opsstack up`")
    return stack.host, demo.ports


def call(host: str, port: int, method: str, path: str, body: dict | None = None, timeout: float = 10,
         restart_grace: float = 8.0) -> dict:
    """One admin API call. A refused connection is retried for `restart_grace` seconds: a
    service being restarted (by supervisor or a playbook) is back within that."""
    data = None if body is None else json.dumps(body).encode()
    deadline = time.monotonic() + restart_grace
    while True:
        req = urllib.request.Request(f"http://{host}:{port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            return _call_once(req, host, port, timeout)
        except _Refused as exc:
            if time.monotonic() >= deadline:
                raise NotRunning(str(exc)) from None
            time.sleep(0.25)


class _Refused(Exception):
    pass


def _call_once(req, host: str, port: int, timeout: float) -> dict:
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            msg = json.loads(exc.read()).get("error", "")
        except ValueError:
            msg = ""
        raise ValueError(msg or f"HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        msg = (f"no answer from the demo admin API at {host}:{port} ({reason}); "
               "is the stack running? (`opsstack up`, `opsstack status`)")
        if isinstance(reason, ConnectionRefusedError):
            raise _Refused(msg) from None
        raise NotRunning(msg) from None


def _services(platform, ports, service: str | None) -> list[str]:
    names = [s.name for s in platform.services if s.name in ports] or list(ports)
    if service is None:
        return names
    if service not in ports:
        raise ValueError(f"unknown service {service!r} (services: {', '.join(names)})")
    return [service]


def _serve(args, demo, platform, stack, database=None) -> int:
    disable_created_metrics()

    try:
        svc = DemoService(demo, platform, stack, args.service, database)
    except ValueError as exc:
        print(f"opsstack demo: {exc}", file=sys.stderr)
        return 2
    try:
        svc.start(load=False if args.no_load else None)
    except OSError as exc:
        print(f"opsstack demo: cannot listen: {exc}", file=sys.stderr)
        svc.stop()
        return 1
    wait_until_stopped()
    svc.stop()
    return 0


def _mailsink(stack) -> int:
    ports = stack.ports
    if not isinstance(ports.mailsink_smtp, int) or not isinstance(ports.mailsink_web, int):
        print("opsstack demo: stack.ports.mailsink_smtp/mailsink_web are 'auto' "
              "(run the mail sink through `opsstack up`, or set them)", file=sys.stderr)
        return 2
    try:
        sink = MailSink(stack.host, ports.mailsink_smtp, ports.mailsink_web).start()
    except (OSError, RuntimeError) as exc:
        print(f"opsstack demo: mail sink cannot listen: {exc}", file=sys.stderr)
        return 1
    wait_until_stopped()
    sink.stop()
    return 0


def run(args, cfg) -> int:
    demo, platform, stack = view(cfg, "demo"), view(cfg, "platform"), view(cfg, "stack")
    if args.action == "serve":
        return _serve(args, demo, platform, stack, view(cfg, "database"))
    if args.action == "approver":
        url = approver.base_url(demo, platform, stack)
        if url is None:
            print("opsstack demo approver: no Event Management service with an admin port in demo.ports "
                  "(run it through `opsstack up`, or pass the resolved config with -c)", file=sys.stderr)
            return 2
        airflow = None
        if demo.enabled and demo.airflow is True:  # the dispatcher starts the DAG per new request
            airflow = AirflowClient.from_access(access(cfg))
        return approver.run(url, demo.airflow_approver_delay, airflow)
    if args.action == "mailsink":
        return _mailsink(stack)
    if args.action == "backups":
        return _backups(cfg, stack)
    if args.action == "faults" and not args.active:
        for kind, (what, rate) in KINDS.items():
            print(f"{kind:<17} {what}\n{'':<17} --rate: {rate}")
        for kind, what in backups.KINDS.items():
            print(f"{kind:<17} {what}\n{'':<17} --rate: unused (embedded database, not a service)")
        for kind, (what, rate) in EDGE_KINDS.items():
            print(f"{kind:<17} {what}\n{'':<17} --rate: {rate}")
        return 0
    if args.action in ("fault", "heal") and (getattr(args, "kind", None) in backups.KINDS):
        return _db_fault(args, cfg, demo, stack)
    if args.action == "heal" and args.kind is None and args.service is None:  # every fault: the database's too
        target = backups.Target.from_views(view(cfg, "database"), stack)
        try:
            healed = backups.heal(target)
        except (RuntimeError, OSError) as exc:
            print(f"opsstack demo: database: {exc}", file=sys.stderr)
            healed = []
        if healed:
            print(f"database: healed {', '.join(healed)}")
    try:
        if args.action == "fault" and args.kind in EDGE_KINDS:
            return _edge_fault(args, cfg)
        host, ports = running_ports(demo, stack)
        status = _client(args, platform, host, ports)
        if edge.enabled(cfg) and demo.edge.ports:
            _edge_after(args, cfg)
        return status
    except NotRunning as exc:
        print(f"opsstack demo: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"opsstack demo: {exc}", file=sys.stderr)
        return 2


def _backups(cfg, stack) -> int:
    database = view(cfg, "database")
    sched = backups.Scheduler(backups.Target.from_views(database, stack), database.embedded.backup,
                              backups.resolved_file(stack))
    threading.Thread(target=sched.run, name="demo-backups", daemon=True).start()
    wait_until_stopped()
    sched.stop()
    return 0


def _db_fault(args, cfg, demo, stack) -> int:
    """backup-stale / replica-lag: on the embedded database, not a service (demo/backups.py)."""
    target = backups.Target.from_views(view(cfg, "database"), stack)
    try:
        if args.action == "fault":
            max_d = demo.faults.max_duration
            d = max_d if args.duration in (None, "") else min(parse_seconds(args.duration), max_d)
            if d <= 0:
                raise ValueError("duration must be > 0")
            f = backups.inject(target, args.kind, d)
            print(f"database: {f['kind']} injected (heals by itself in {f['expires'] - f['started']:.0f}s)")
        else:
            healed = backups.heal(target, args.kind)
            print(f"database: healed {', '.join(healed) or 'nothing (no active fault)'}")
    except (RuntimeError, OSError) as exc:
        print(f"opsstack demo: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"opsstack demo: {exc}", file=sys.stderr)
        return 2
    return 0


# faults of the edge itself (demo/edge.py); the others act in the service processes
EDGE_KINDS = {
    "waf-attack": ("a burst of real SQLi/XSS/scanner/protocol requests through one nginx listener (--service/"
                   "--region, default the first service's home region), blocked by ModSecurity (403), from a few "
                   "loopback attacker addresses (fail2ban bans them); --duration paces it (default 30s)",
                   "number of requests (default 1600)"),
    "cert-expiry": ("one TLS endpoint's certificate is swapped for one expiring in 3 days (--service/--region "
                    "pick it); heal puts the good one back; nginx is reloaded", "days left (default 3)"),
}
STORM_TAGS = ["events"]  # what a cache-miss storm leaves behind in Varnish and Redis


def _edge_fault(args, cfg) -> int:
    if not (edge.enabled(cfg) and cfg["demo"]["edge"]["ports"]):
        raise NotRunning("the demo edge is not running (demo.edge.enabled, `make up`)")
    if args.kind == "waf-attack":
        seconds = edge.WAF_ATTACK_SECONDS if args.duration in (None, "") else parse_seconds(args.duration)
        codes = edge.waf_attack(cfg, int(float(args.rate)) if args.rate else edge.WAF_ATTACK_REQUESTS,
                                getattr(args, "service", None), args.region, seconds)
        print("waf-attack: answers " + ", ".join(f"{n} x {c or 'no answer'}" for c, n in sorted(codes.items())))
        return 0
    res = edge.cert_expiry(cfg, getattr(args, "service", None), args.region,
                           float(args.rate) if args.rate else edge.FAULT_CERT_DAYS)
    print(f"cert-expiry: {res['endpoint']} now serves a certificate expiring in {res['days']:g} days "
          "(`opsstack demo heal --kind cert-expiry` puts the good one back)")
    return 0


def _edge_after(args, cfg) -> None:
    """The edge's part of a service-side action: a cache-miss storm also empties Varnish and Redis
    of the storm's tags when injected, and healing it purges them again (the TTLs are restored,
    the uncacheable leftovers go: edge.purge_tags); heal also puts swapped certificates back."""
    kind = getattr(args, "kind", None)
    if (args.action == "fault" and kind == "cache-miss-storm") or \
            (args.action == "heal" and kind in (None, "cache-miss-storm")):
        try:
            res = edge.purge_tags(cfg, STORM_TAGS)
            print(f"edge: purged tags {', '.join(STORM_TAGS)} (varnish {res['varnish']} objects, "
                  f"redis {res['redis']} keys)")
        except (OSError, RuntimeError, ValueError) as exc:
            print(f"opsstack demo: edge purge failed: {exc}", file=sys.stderr)
    if args.action == "heal" and kind in (None, "cert-expiry"):
        healed = edge.heal_cert_expiry(cfg)
        if healed:
            print(f"edge: certificates put back on {', '.join(healed)}")
    if args.action == "faults":
        swapped = edge.cert_faults(cfg)
        if swapped:
            print(json.dumps({"edge": {"cert-expiry": swapped}}, indent=1))


def _client(args, platform, host: str, ports) -> int:
    a = args.action
    services = _services(platform, ports, getattr(args, "service", None))
    out: dict = {}
    for s in services:
        admin = ports[s]["admin"]
        if a == "faults":
            out[s] = call(host, admin, "GET", "/admin/faults")["active"]
        elif a == "fault":
            body = {"kind": args.kind, "region": args.region, "rate": args.rate, "duration": args.duration}
            f = call(host, admin, "POST", "/admin/faults", body)["fault"]
            print(f"{s}: {f['kind']} injected (region {f['region'] or 'all'}, rate {f['rate']:g}, "
                  f"heals by itself in {f['expires'] - f['started']:.0f}s)")
        elif a == "heal":
            healed = call(host, admin, "POST", "/admin/heal", {"kind": args.kind, "region": args.region})["healed"]
            print(f"{s}: healed {', '.join(f['kind'] for f in healed) or 'nothing (no active fault)'}")
        elif a == "route":
            healthy = None if args.restore else [r.strip() for r in args.healthy.split(",") if r.strip()]
            res = call(host, admin, "POST", "/admin/route", {"healthy": healthy})
            print(f"{s}: healthy regions {', '.join(res['healthy'])}")
        elif a == "purge":
            tags = [t.strip() for t in args.tags.split(",")] if args.tags else None
            print(f"{s}: purged {call(host, admin, 'POST', '/admin/cache/purge', {'tags': tags})['purged']} entries")
        elif a == "replace":
            res = call(host, admin, "POST", "/admin/replace", {"region": args.region})
            print(f"{s}: replaced {', '.join(res['replaced'])}")
        elif a == "state":
            out[s] = call(host, admin, "GET", "/admin/state")
    if a in ("faults", "state"):
        print(json.dumps(out, indent=1, sort_keys=True))
    return 0
