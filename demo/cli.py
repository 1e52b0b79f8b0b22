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

Client commands find the running stack's ports in demo.ports: the `opsstack` CLI gives them
the config the running stack was resolved with (<run_dir>/opsstack.resolved.yaml). `run(args, cfg)` is the entry
point: it builds the config views (demo, platform, stack) once and hands them down.
"""
from __future__ import annotations

import json
import time
import sys
import urllib.error
import urllib.request

from prometheus_client import disable_created_metrics

from core.config import view
from core.exporter import wait_until_stopped
from demo.faults import KINDS
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


def _serve(args, demo, platform, stack) -> int:
    disable_created_metrics()

    try:
        svc = DemoService(demo, platform, stack, args.service)
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
        return _serve(args, demo, platform, stack)
    if args.action == "mailsink":
        return _mailsink(stack)
    if args.action == "faults" and not args.active:
        for kind, (what, rate) in KINDS.items():
            print(f"{kind:<17} {what}\n{'':<17} --rate: {rate}")
        return 0
    try:
        host, ports = running_ports(demo, stack)
        return _client(args, platform, host, ports)
    except NotRunning as exc:
        print(f"opsstack demo: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"opsstack demo: {exc}", file=sys.stderr)
        return 2


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
