"""`opsstack receiver serve|migrate|hash-password`.

serve: gunicorn (gthread workers) bound to stack.host:stack.ports.receiver, with
receiver.workers workers, and one background process (receiver.background: process) that
applies queued payloads and runs the scheduler loop (escalations, outbox, heartbeats) — or
those threads in every worker (background: workers). Safe with any number of workers and
replicas (advisory locks, unique keys, FOR UPDATE SKIP LOCKED).
"""
from __future__ import annotations

import getpass
import logging
import os
import sys
import tempfile

from core.config import ConfigError
from webhook_receiver.auth import hash_password
from webhook_receiver.db import connect, migrate

log = logging.getLogger(__name__)


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    s = sub.add_parser("serve", help="run the receiver under gunicorn")
    s.add_argument("--bind", help="host:port (default: stack.host:stack.ports.receiver)")
    s.add_argument("--workers", type=int, help="default: receiver.workers")
    s.add_argument("--no-scheduler", action="store_true", help="do not run the escalation/outbox loop here")
    sub.add_parser("migrate", help="apply the database migrations and exit")
    h = sub.add_parser("hash-password", help="print a password hash for receiver.console.users")
    h.add_argument("--password", help="default: prompt (or one line on stdin)")


def _db_url(cfg: dict) -> str:
    url = os.environ.get("OPSSTACK_DATABASE_URL") or cfg["database"]["url"]
    if not url:
        raise ConfigError("database.url", "is not set (start through `opsstack up` or set OPSSTACK_DATABASE_URL)")
    return url


def _token(cfg: dict) -> str | None:
    return os.environ.get("OPSSTACK_RECEIVER_TOKEN") or cfg["receiver"]["token"]


def run(args, cfg) -> int:
    if args.action == "hash-password":
        pw = args.password
        if pw is None:
            pw = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
        if not pw:
            print("opsstack: empty password", file=sys.stderr)
            return 2
        print(hash_password(pw))
        return 0
    cfg = dict(cfg, database=dict(cfg["database"], url=_db_url(cfg)), receiver=dict(cfg["receiver"], token=_token(cfg)))
    if args.action == "migrate":
        try:
            with connect(cfg["database"]["url"]) as conn:
                v = migrate(conn)
        except Exception as exc:  # noqa: BLE001
            print(f"opsstack: receiver migrate failed: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
            return 1
        print(f"receiver schema at version {v}")
        return 0
    if not cfg["receiver"]["token"]:
        log.warning("event=no_token hint='set receiver.token or OPSSTACK_RECEIVER_TOKEN: every webhook gets 401'")
    port = cfg["stack"]["ports"]["receiver"]
    bind = args.bind or f"{cfg['stack']['host']}:{port}"
    if not args.bind and port == "auto":
        raise ConfigError("stack.ports.receiver", "is 'auto': run through `opsstack up` or pass --bind")
    return serve(cfg, bind, args.workers or cfg["receiver"]["workers"], scheduler=not args.no_scheduler)


def gunicorn_app(factory, options: dict):
    """A gunicorn application around ``factory()`` (also used by bench/receiver_bench.py)."""
    from gunicorn.app.base import BaseApplication

    class _App(BaseApplication):
        def load_config(self):
            for k, v in options.items():
                self.cfg.set(k, v)

        def load(self):
            return factory()

    return _App()


def lower_priority(nice: int) -> None:
    """The background process yields the CPU to the web workers: under an alert storm the intake
    (each request answered once its payload is committed) goes first, and applying payloads gets
    every cycle the intake leaves (receiver.background_nice; threads and children inherit it)."""
    if nice:
        try:
            os.nice(int(nice))
        except OSError as exc:  # pragma: no cover - raising one's nice is always allowed on Unix
            log.warning("event=background_nice_failed nice=%s error=%r", nice, str(exc))


def serve(cfg: dict, bind: str, workers: int, scheduler: bool = True, configure_app=None,
          processor: bool = True) -> int:
    """Run gunicorn (blocks). ``configure_app(app)`` may add routes (bench/receiver_bench.py)."""
    # multiprocess metrics need the folder before prometheus_client is imported anywhere
    import atexit
    import shutil

    mdir = tempfile.mkdtemp(prefix="opsstack-receiver-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = mdir
    master = os.getpid()
    atexit.register(lambda: os.getpid() == master and shutil.rmtree(mdir, ignore_errors=True))
    try:  # migrate once before the workers start (they would serialise on the lock anyway)
        with connect(cfg["database"]["url"]) as conn:
            migrate(conn)
    except Exception as exc:  # noqa: BLE001 - workers retry; /readyz stays 503 meanwhile
        log.warning("event=migrate_deferred error=%r", (str(exc).strip().splitlines() or [""])[0])

    def factory():
        # deferred: the app imports webhook_receiver.metrics, whose counters must be created after
        # PROMETHEUS_MULTIPROC_DIR is set (above), in the worker
        from webhook_receiver.app import create_app, start_scheduler  # deferred: after PROMETHEUS_MULTIPROC_DIR

        app = create_app(cfg)
        if configure_app is not None:
            configure_app(app)
        start_scheduler(app, scheduler=scheduler, processor=processor)
        return app

    def child_exit(server, worker):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)

    bg = {"pid": None, "exiting": False}

    def spawn_background() -> int:
        master = os.getpid()  # before the fork: a child forked while the master exits must not
        pid = os.fork()       # take its new parent (init, supervisord) for the master and run on
        if pid:
            return pid
        # child: leave gunicorn's signal handling; end on SIGTERM or when the master is gone
        import signal
        import threading

        # SIGTERM too: until its own handler is set below (after a slow import), gunicorn's
        # inherited one would swallow it and the master's on_exit would wait for this child forever
        for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGCHLD, signal.SIGUSR1,
                    signal.SIGUSR2, signal.SIGTTIN, signal.SIGTTOU, signal.SIGWINCH, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        code = 0
        lower_priority(cfg["receiver"].get("background_nice", 0))
        try:
            # deferred: see factory() (metrics counters after PROMETHEUS_MULTIPROC_DIR)
            from webhook_receiver.app import run_background  # deferred: after PROMETHEUS_MULTIPROC_DIR

            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *a: stop.set())

            def watch():
                while not stop.wait(1.0):
                    if os.getppid() != master:
                        stop.set()
            threading.Thread(target=watch, daemon=True).start()
            run_background(cfg, stop, scheduler=scheduler)
        except BaseException:  # noqa: BLE001
            log.exception("event=background_failed")
            code = 1
        os._exit(code)

    def when_ready(server):
        """Start the background process (payloads, escalations, notifications) and keep it up."""
        import threading
        import time

        if cfg["receiver"]["background"] != "process" or not (processor or scheduler):
            return

        def keep():
            while not bg["exiting"]:
                if bg["pid"] is None:
                    bg["pid"] = spawn_background()
                    log.info("event=background_process pid=%s", bg["pid"])
                time.sleep(1.0)
                try:
                    os.kill(bg["pid"], 0)  # gunicorn's master reaps it when it exits
                except ProcessLookupError:
                    if not bg["exiting"]:
                        log.warning("event=background_process_died pid=%s action=restart", bg["pid"])
                        bg["pid"] = None
        threading.Thread(target=keep, name="receiver-background-keeper", daemon=True).start()

    def on_exit(server):
        import signal

        bg["exiting"] = True
        if bg["pid"]:
            try:
                os.kill(bg["pid"], signal.SIGTERM)
                os.waitpid(bg["pid"], 0)
            except OSError:
                pass

    options = {
        "bind": bind, "workers": workers, "worker_class": "gthread", "threads": cfg["receiver"]["threads"],
        "timeout": 60, "graceful_timeout": 10, "keepalive": 5, "accesslog": None, "errorlog": "-",
        "loglevel": "info", "proc_name": "opsstack-receiver", "child_exit": child_exit,
        "when_ready": when_ready, "on_exit": on_exit,
        "limit_request_line": 8190, "control_socket_disable": True,
    }
    # each worker's heartbeat is a file it touches on every turn of its loop: in memory (tmpfs)
    # that never waits on the disk, which the database's WAL and Prometheus keep busy in a storm
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        options["worker_tmp_dir"] = "/dev/shm"
    log.info("event=receiver_serving bind=%s workers=%s", bind, workers)
    gunicorn_app(factory, options).run()
    return 0
