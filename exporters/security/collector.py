"""The security exporter's collector (`opsstack exporter security`): TLS, access and WAF
logs, fail2ban, pgBackRest, restore verification. Metric names: docs/metrics.md,
"Security exporter".

What runs when:
- **tls** (live): every endpoint's handshake at scrape time, all on one asyncio loop (a
  thread of its own) under one deadline (``tls.probe_timeout``), as exporters/app does;
- **logs** (background): one thread polls every log's Tailer every ``tail.poll_interval``,
  counts what it reads, and saves the positions (``<state_dir>/tail-state.json``) after each
  poll; a scrape serves the counters;
- **fail2ban** (live): a few read-only queries on fail2ban's database;
- **pgbackrest** (background, ``backup.interval``): `pgbackrest info`, the last good result
  served with its age (0 = in every scrape);
- **restore_verify** (live): reads the result file `opsstack security verify-restore` writes.

Each one exports ``opsstack_security_collector_success|duration_seconds|age_seconds|
interval_seconds{collector}`` (age: time since its last good result; 0 for live ones), and
its source in ``opsstack_exporter_up{exporter="security"}``.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from core.config import view
from core.exporter import ExporterCollector, Scrape
from core.logs import first_line
from exporters.security.access import AccessCounts, Bounded
from exporters.security.fail2ban import Fail2banDb
from exporters.security.pgbackrest import read_info
from exporters.security.restore import read_results
from exporters.security.tail import StateFile, Tailer
from exporters.security.tls import REASONS, TlsResult, insecure_context, parse_address, probe_tls, verify_context
from exporters.security.waf import WafCounts

log = logging.getLogger("opsstack.exporter.security")

GRACE = 0.5


def state_dir(sec, stack) -> Path:
    """``exporters.security.state_dir``, or <stack.run_dir>/security."""
    return Path(sec.state_dir) if sec.state_dir else Path(stack.run_dir) / "security"


def result_file(sec, stack) -> Path:
    return Path(sec.backup.verify.result_file) if sec.backup.verify.result_file \
        else state_dir(sec, stack) / "restore-verify.json"


class _Status:
    """One collector's last run: success, duration, when it last succeeded."""

    def __init__(self, interval: float):
        self.interval = interval
        self.success = False
        self.duration = 0.0
        self.last_good: float | None = None
        self.ran = False

    def record(self, ok: bool, duration: float) -> None:
        self.ran, self.success, self.duration = True, ok, duration
        if ok:
            self.last_good = time.time()

    def age(self) -> float:
        if self.interval == 0:
            return 0.0
        return time.time() - self.last_good if self.last_good else float("nan")


class _Every:
    """``fn()`` every ``interval`` seconds in a daemon thread of its own, until ``stop``."""

    def __init__(self, name: str, fn, interval: float):
        self.name, self.fn, self.interval = name, fn, interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.fn()
            self._stop.wait(self.interval)

    def stop(self, timeout: float) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None


class LogWatcher:
    """Polls the access and WAF logs' tailers in a thread; counts live in AccessCounts/WafCounts."""

    def __init__(self, sec, state_path: Path):
        t = sec.tail
        self.interval = float(t.poll_interval)
        known = tuple(sec.access.vhosts) + tuple(a.vhost or a.name for a in sec.access.logs if a.format == "combined")
        self.vhosts = Bounded(sec.access.max_vhosts, tuple(v.lower() for v in known))
        self.access = AccessCounts(sec.access.statuses, self.vhosts)
        self.waf = WafCounts({k: tuple(v) for k, v in sec.waf.classes.items()}, sec.waf.block_statuses, self.vhosts)
        self.store = StateFile(state_path)
        saved = self.store.load()
        self.logs: list[tuple[str, str, Tailer, object]] = []  # (name, kind, tailer, how to count a block)
        for a in sec.access.logs:
            tailer = Tailer(a.path, state=saved.get(a.name), max_line=t.max_line, rotate_grace=t.rotate_grace,
                            start_at=t.start_at)
            self.logs.append((a.name, "access", tailer, self._access_sink(a.name, a.format, a.vhost or a.name)))
        for w in sec.waf.logs:
            tailer = Tailer(w.path, state=saved.get(w.name), max_line=t.max_line, rotate_grace=t.rotate_grace,
                            start_at=t.start_at)
            self.logs.append((w.name, "waf", tailer, self._waf_sink(w.name)))
        self.status = _Status(self.interval)
        self._lock = threading.Lock()
        self._every = _Every("security-logs", self.poll_once, self.interval)

    def _access_sink(self, name, fmt, vhost):
        return lambda text, n: self.access.add_block(name, fmt, text, n, vhost=vhost)

    def _waf_sink(self, name):
        return lambda text, n: self.waf.add_block(name, text, n)

    def poll_once(self) -> None:
        t0 = time.perf_counter()
        ok = True
        with self._lock:
            for name, _, tailer, sink in self.logs:
                try:
                    tailer.poll(sink)
                except Exception as exc:  # noqa: BLE001 - one bad log never stops the others
                    ok = False
                    log.warning("event=tail_failed log=%s path=%s error=%r", name, tailer.path, first_line(exc))
            try:
                self.store.save({name: tailer.state() for name, _, tailer, _ in self.logs if tailer.state()})
            except OSError as exc:
                ok = False
                log.warning("event=tail_state_save_failed path=%s error=%r", self.store.path, first_line(exc))
        self.status.record(ok, time.perf_counter() - t0)

    def start(self) -> None:
        if self.logs:
            self._every.start()

    def stop(self) -> None:
        self._every.stop(30)
        with self._lock:
            for _, _, tailer, _ in self.logs:
                tailer.close()


class BackupCache:
    """`pgbackrest info`, refreshed in a thread every ``interval`` (0: in every scrape)."""

    def __init__(self, backup):
        self.cfg = backup
        self.interval = float(backup.interval)
        self.status = _Status(self.interval)
        self.stanzas: list | None = None
        self.error: str | None = None
        self._every = _Every("security-pgbackrest", self.refresh, self.interval)
        self._lock = threading.Lock()

    def refresh(self) -> None:
        t0 = time.perf_counter()
        try:
            got = read_info(self.cfg.pgbackrest, self.cfg.config, tuple(self.cfg.stanzas), timeout=self.cfg.timeout)
        except Exception as exc:  # noqa: BLE001 - served as success 0, logged
            self.error = first_line(exc)
            self.status.record(False, time.perf_counter() - t0)
            log.warning("event=pgbackrest_info_failed error=%r", self.error)
            return
        with self._lock:
            self.stanzas, self.error = got, None
        self.status.record(True, time.perf_counter() - t0)

    def start(self) -> None:
        if self.interval > 0:
            self._every.start()

    def current(self):
        if self.interval == 0:
            self.refresh()
        with self._lock:
            return self.stanzas

    def stop(self) -> None:
        self._every.stop(self.cfg.timeout + 5)


class SecurityCollector(ExporterCollector):
    exporter = "security"

    def __init__(self, sec, stack, start_background: bool = True):
        """``sec``, ``stack``: views of exporters.security and stack (core.config.view)."""
        self.sec = sec
        self.state_dir = state_dir(sec, stack)
        self.result_file = result_file(sec, stack)
        self.endpoints = []
        for e in sec.tls.endpoints:
            host, port = parse_address(e.address)
            ca = e.ca_file or sec.tls.ca_file
            self.endpoints.append((e.name, host, port, e.server_name or host, ca))
        self._contexts = {ca: verify_context(ca) for *_, ca in self.endpoints}
        self._insecure = insecure_context()
        self._tls_errors: dict[tuple[str, str], int] = {}
        self._tls_probes: dict[str, int] = {}
        self._tls_lock = threading.Lock()
        self._loop = self._thread = self._sem = None
        if self.endpoints:
            self._loop = asyncio.new_event_loop()
            self._sem = asyncio.Semaphore(sec.tls.max_concurrency)
            self._thread = threading.Thread(target=self._loop.run_forever, name="security-tls", daemon=True)
            self._thread.start()
        self.logs = LogWatcher(sec, self.state_dir / "tail-state.json")
        self.fail2ban = Fail2banDb(sec.fail2ban.db_path, sec.fail2ban.recent_window) if sec.fail2ban.db_path else None
        self.backup = BackupCache(sec.backup) if sec.backup.enabled else None
        self.statuses = {"tls": _Status(0), "fail2ban": _Status(0), "restore_verify": _Status(0)}
        if start_background:
            self.start()

    @classmethod
    def from_config(cls, cfg: dict, start_background: bool = True) -> "SecurityCollector":
        return cls(view(cfg, "exporters.security"), view(cfg, "stack"), start_background=start_background)

    def start(self) -> None:
        self.logs.start()
        if self.backup is not None:
            self.backup.start()

    def close(self) -> None:
        self.logs.stop()
        if self.backup is not None:
            self.backup.stop()
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            if not self._thread.is_alive():
                self._loop.close()

    # ------------------------------------------------------------------ tls
    def probe_all(self) -> dict[str, TlsResult]:
        timeout = float(self.sec.tls.probe_timeout)
        out: dict[str, TlsResult] = {}

        async def run():
            deadline = self._loop.time() + timeout

            async def one(name, host, port, server_name, ca):
                out[name] = await probe_tls(host, port, server_name, deadline, verify=self._contexts[ca],
                                            insecure=self._insecure, slots=self._sem)
            await asyncio.gather(*(one(*e) for e in self.endpoints))

        fut = asyncio.run_coroutine_threadsafe(run(), self._loop)
        try:
            fut.result(timeout=timeout + GRACE)
        except FutureTimeout:
            fut.cancel()
        return {e[0]: out.get(e[0]) or TlsResult(reason="timeout", error="no result from the probe loop in time")
                for e in self.endpoints}

    def _tls(self, scrape: Scrape):
        t0 = time.perf_counter()
        results = self.probe_all()
        lab = ["endpoint"]
        fam = {
            "ok": GaugeMetricFamily("opsstack_tls_probe_success", "1 if the last handshake succeeded and the chain "
                                    "verified against the CA bundle, else 0.", labels=lab),
            "leaf": GaugeMetricFamily("opsstack_tls_leaf_not_after_timestamp_seconds", "notAfter of the leaf "
                                      "certificate (read even when verification fails).", labels=lab),
            "chain": GaugeMetricFamily("opsstack_tls_chain_not_after_timestamp_seconds", "Earliest notAfter over "
                                       "the verified chain (leaf to trust anchor); absent when it does not verify.",
                                       labels=lab),
            "chain_n": GaugeMetricFamily("opsstack_tls_verified_chain_certificates", "Certificates in the verified "
                                         "chain.", labels=lab),
            "presented": GaugeMetricFamily("opsstack_tls_presented_certificates", "Certificates the server sent.",
                                           labels=lab),
            "proto": GaugeMetricFamily("opsstack_tls_protocol_info", "Negotiated TLS version of the last handshake "
                                       "(value 1).", labels=["endpoint", "version"]),
            "hs": GaugeMetricFamily("opsstack_tls_handshake_duration_seconds", "Time of the last TLS handshake.",
                                    labels=lab),
            "err": GaugeMetricFamily("opsstack_tls_handshake_error", "1 for the reason the last handshake failed, "
                                     "0 for the other reasons.", labels=["endpoint", "reason"]),
        }
        errs = CounterMetricFamily("opsstack_tls_handshake_errors", "Failed handshakes by reason.",
                                   labels=["endpoint", "reason"])
        probes = CounterMetricFamily("opsstack_tls_probes", "Handshakes attempted.", labels=lab)
        with self._tls_lock:
            for name, r in results.items():
                self._tls_probes[name] = self._tls_probes.get(name, 0) + 1
                if r.reason:
                    self._tls_errors[(name, r.reason)] = self._tls_errors.get((name, r.reason), 0) + 1
                    log.info("event=tls_probe_failed endpoint=%s reason=%s error=%r", name, r.reason, r.error)
            for name, r in sorted(results.items()):
                fam["ok"].add_metric([name], 1.0 if r.ok else 0.0)
                if r.leaf_not_after is not None:
                    fam["leaf"].add_metric([name], r.leaf_not_after)
                if r.chain_not_after is not None:
                    fam["chain"].add_metric([name], r.chain_not_after)
                    fam["chain_n"].add_metric([name], r.chain_length)
                if r.presented:
                    fam["presented"].add_metric([name], r.presented)
                if r.protocol:
                    fam["proto"].add_metric([name, r.protocol], 1.0)
                if r.handshake_seconds is not None:
                    fam["hs"].add_metric([name], r.handshake_seconds)
                for reason in REASONS:
                    fam["err"].add_metric([name, reason], 1.0 if r.reason == reason else 0.0)
                    errs.add_metric([name, reason], self._tls_errors.get((name, reason), 0))
                probes.add_metric([name], self._tls_probes[name])
        warn = GaugeMetricFamily("opsstack_tls_expiry_warning_seconds", "Configured warning threshold: a "
                                 "certificate expiring sooner than this is a warning (tls.warning_before).")
        warn.add_metric([], float(self.sec.tls.warning_before))
        crit = GaugeMetricFamily("opsstack_tls_expiry_critical_seconds", "Configured critical threshold "
                                 "(tls.critical_before).")
        crit.add_metric([], float(self.sec.tls.critical_before))
        self.statuses["tls"].record(True, time.perf_counter() - t0)
        return [*fam.values(), errs, probes, warn, crit]

    # ------------------------------------------------------------------ logs
    def _logs(self):
        lw = self.logs
        responses, agents, unparsed = lw.access.snapshot()
        blocked, detected, transactions, waf_unparsed = lw.waf.snapshot()
        out = []
        if any(k == "access" for _, k, _, _ in lw.logs):
            c = CounterMetricFamily("opsstack_access_responses", "Responses in the nginx access logs by vhost and "
                                    "status (tracked codes, else the class: 2xx, 3xx, 4xx, 5xx).",
                                    labels=["vhost", "status"])
            for (vh, st), n in sorted(responses.items()):
                c.add_metric([vh, st], n)
            a = CounterMetricFamily("opsstack_access_requests_by_agent", "Requests in the nginx access logs by "
                                    "vhost and user-agent class (browser, bot, scanner, tool, monitor, empty, "
                                    "other).", labels=["vhost", "agent"])
            for (vh, ag), n in sorted(agents.items()):
                a.add_metric([vh, ag], n)
            out += [c, a]
        if any(k == "waf" for _, k, _, _ in lw.logs):
            b = CounterMetricFamily("opsstack_waf_blocked_requests", "Requests ModSecurity blocked, by vhost and "
                                    "attack class (from the CRS rule ids).", labels=["vhost", "attack_class"])
            # every known vhost x class from 0 (bounded: access.vhosts x waf.classes): a first attack
            # read in one scrape is then an increase from 0 that rate() sees, not a new series it cannot
            blocked = {**{(vh, cl): 0 for vh in self.sec.access.vhosts
                          for cl in (*self.sec.waf.classes, "other")}, **blocked}
            for (vh, cl), n in sorted(blocked.items()):
                b.add_metric([vh, cl], n)
            d = CounterMetricFamily("opsstack_waf_detections", "Transactions in which ModSecurity rules of an attack "
                                    "class matched (blocked or not).", labels=["vhost", "attack_class"])
            for (vh, cl), n in sorted(detected.items()):
                d.add_metric([vh, cl], n)
            t = CounterMetricFamily("opsstack_waf_audited_transactions", "Transactions in the ModSecurity audit "
                                    "logs.", labels=["vhost"])
            for vh, n in sorted(transactions.items()):
                t.add_metric([vh], n)
            out += [b, d, t]
        lab = ["log"]
        fams = {
            "lines": CounterMetricFamily("opsstack_logtail_lines", "Lines read from the log (each once, "
                                         "across rotations and restarts of this exporter's process).", labels=lab),
            "bytes": CounterMetricFamily("opsstack_logtail_read_bytes", "Bytes of complete lines read.",
                                         labels=lab),
            "unparsed": CounterMetricFamily("opsstack_logtail_unparsed_lines", "Lines not in the log's format.",
                                            labels=lab),
            "trunc": CounterMetricFamily("opsstack_logtail_truncated_lines", "Lines longer than tail.max_line, "
                                         "cut to it.", labels=lab),
            "utf8": CounterMetricFamily("opsstack_logtail_invalid_utf8_lines", "Lines with invalid UTF-8 "
                                        "(escaped).", labels=lab),
            "rot": CounterMetricFamily("opsstack_logtail_rotations", "Rotations seen, by mode (create: renamed "
                                       "and recreated; copytruncate: truncated in place).", labels=["log", "mode"]),
            "lost": CounterMetricFamily("opsstack_logtail_lost_rotations", "Rotations whose rotated file "
                                        "could not be found to finish (compressed or deleted while stopped).",
                                        labels=lab),
            "lag": GaugeMetricFamily("opsstack_logtail_lag_bytes", "Bytes of the log not read yet.", labels=lab),
            "present": GaugeMetricFamily("opsstack_logtail_file_present", "1 while the log file is open.",
                                         labels=lab),
        }
        for name, kind, tailer, _ in lw.logs:
            s = tailer.stats
            fams["lines"].add_metric([name], s.lines)
            fams["bytes"].add_metric([name], s.bytes)
            fams["unparsed"].add_metric([name], (unparsed if kind == "access" else waf_unparsed).get(name, 0))
            fams["trunc"].add_metric([name], s.truncated_lines)
            fams["utf8"].add_metric([name], s.invalid_utf8_lines)
            fams["rot"].add_metric([name, "create"], s.rotations_create)
            fams["rot"].add_metric([name, "copytruncate"], s.rotations_truncate)
            fams["lost"].add_metric([name], s.lost_rotations)
            fams["lag"].add_metric([name], tailer.lag_bytes())
            fams["present"].add_metric([name], 1.0 if tailer.cur is not None else 0.0)
        return out + list(fams.values())

    # ------------------------------------------------------------------ fail2ban
    def _fail2ban(self):
        t0 = time.perf_counter()
        st = self.fail2ban.read()
        lab = ["jail"]
        banned = GaugeMetricFamily("opsstack_fail2ban_banned", "Addresses banned now, per jail.", labels=lab)
        recent = GaugeMetricFamily("opsstack_fail2ban_recent_bans", "Bans that started within "
                                   "fail2ban.recent_window, per jail.", labels=lab)
        total = CounterMetricFamily("opsstack_fail2ban_bans", "Bans recorded in fail2ban's database (those present "
                                    "at the exporter's start, then each new one).", labels=lab)
        enabled = GaugeMetricFamily("opsstack_fail2ban_jail_enabled", "1 for an enabled jail.", labels=lab)
        for jail in sorted(set(st.jails) | set(st.banned) | set(st.bans_total)):
            banned.add_metric([jail], st.banned.get(jail, 0))
            recent.add_metric([jail], st.recent.get(jail, 0))
            total.add_metric([jail], st.bans_total.get(jail, 0))
            if jail in st.jails:
                enabled.add_metric([jail], 1.0 if st.jails[jail] else 0.0)
        window = GaugeMetricFamily("opsstack_fail2ban_recent_window_seconds", "The window of "
                                   "opsstack_fail2ban_recent_bans (fail2ban.recent_window).")
        window.add_metric([], float(self.sec.fail2ban.recent_window))
        self.statuses["fail2ban"].record(True, time.perf_counter() - t0)
        return [banned, recent, total, enabled, window]

    # ------------------------------------------------------------------ backups
    def _thresholds(self):
        rpo = GaugeMetricFamily("opsstack_backup_rpo_seconds", "Recovery point objective (backup.rpo): the most "
                                "data, in time, a restore may lose.")
        rpo.add_metric([], float(self.sec.backup.rpo))
        rto = GaugeMetricFamily("opsstack_backup_rto_seconds", "Recovery time objective (backup.rto): the longest "
                                "a restore may take.")
        rto.add_metric([], float(self.sec.backup.rto))
        return [rpo, rto]

    def _pgbackrest(self, stanzas):
        lab, lt = ["stanza"], ["stanza", "type"]
        code = GaugeMetricFamily("opsstack_backup_stanza_status_code", "pgBackRest's status code of the stanza "
                                 "(0 = ok).", labels=lab)
        msg = GaugeMetricFamily("opsstack_backup_stanza_status_info", "pgBackRest's status message of the stanza "
                                "(value 1).", labels=["stanza", "message"])
        running = GaugeMetricFamily("opsstack_backup_running", "1 while a backup of the stanza runs (its lock "
                                    "is held).", labels=lab)
        last = GaugeMetricFamily("opsstack_backup_last_completion_timestamp_seconds", "When the newest backup of "
                                 "each type finished; absent = none in the repository.", labels=lt)
        dur = GaugeMetricFamily("opsstack_backup_last_duration_seconds", "How long the newest backup of each type "
                                "took.", labels=lt)
        size = GaugeMetricFamily("opsstack_backup_last_size_bytes", "Database size in the newest backup of each "
                                 "type.", labels=lt)
        repo = GaugeMetricFamily("opsstack_backup_last_repository_bytes", "Bytes the newest backup of each type "
                                 "added to the repository.", labels=lt)
        err = GaugeMetricFamily("opsstack_backup_last_error", "1 when pgBackRest flagged the newest backup of the "
                                "type with errors (checksum failures...).", labels=lt)
        sets = GaugeMetricFamily("opsstack_backup_sets", "Backups of each type in the repository.", labels=lt)
        amin = GaugeMetricFamily("opsstack_backup_archive_min_wal_position_bytes", "Oldest WAL segment in the "
                                 "archive, as a WAL position.", labels=lab)
        amax = GaugeMetricFamily("opsstack_backup_archive_max_wal_position_bytes", "Newest WAL segment in the "
                                 "archive, as a WAL position (compare opsstack_db_wal_position_bytes).", labels=lab)
        for s in stanzas:
            code.add_metric([s.name], s.status_code)
            msg.add_metric([s.name, s.status_message[:80]], 1.0)
            running.add_metric([s.name], 1.0 if s.backup_running else 0.0)
            for t, b in sorted(s.last.items()):
                last.add_metric([s.name, t], b.stop)
                dur.add_metric([s.name, t], b.duration)
                size.add_metric([s.name, t], b.size)
                repo.add_metric([s.name, t], b.repo_size)
                err.add_metric([s.name, t], 1.0 if b.error else 0.0)
            for t, n in sorted(s.counts.items()):
                sets.add_metric([s.name, t], n)
            if s.archive_min is not None:
                amin.add_metric([s.name], s.archive_min)
            if s.archive_max is not None:
                amax.add_metric([s.name], s.archive_max)
        return [code, msg, running, last, dur, size, repo, err, sets, amin, amax]

    def _restore_verify(self):
        t0 = time.perf_counter()
        results = read_results(self.result_file) if self.result_file.exists() else {}
        lab = ["stanza"]
        ok = GaugeMetricFamily("opsstack_backup_restore_verify_success", "1 when the last restore verification of "
                               "the stanza restored, started and answered the query.", labels=lab)
        ran = GaugeMetricFamily("opsstack_backup_restore_verify_last_run_timestamp_seconds", "When the last "
                                "restore verification finished.", labels=lab)
        good = GaugeMetricFamily("opsstack_backup_restore_verify_last_success_timestamp_seconds", "When the last "
                                 "successful restore verification finished (absent = never).", labels=lab)
        dur = GaugeMetricFamily("opsstack_backup_restore_verify_duration_seconds", "How long the last restore "
                                "verification took: restore + start + query (compare opsstack_backup_rto_seconds).",
                                labels=lab)
        for name, r in sorted(results.items()):
            ok.add_metric([name], 1.0 if r.success else 0.0)
            ran.add_metric([name], r.finished)
            if r.last_success:
                good.add_metric([name], r.last_success)
            dur.add_metric([name], r.duration_seconds)
        self.statuses["restore_verify"].record(True, time.perf_counter() - t0)
        return [ok, ran, good, dur]

    # ------------------------------------------------------------------ scrape
    def collect_sources(self, scrape: Scrape):
        if self.endpoints:
            with scrape.source("tls"):
                yield from self._tls(scrape)
        if self.logs.logs:
            with scrape.source("logs"):
                yield from self._logs()
            if self.logs.status.ran:
                scrape.set_up("logs", self.logs.status.success, None if self.logs.status.success
                              else "a log could not be read (see the log lines)")
        if self.fail2ban is not None:
            try:
                fams = self._fail2ban()
            except Exception as exc:  # noqa: BLE001 - success 0 + up 0 + one log line
                self.statuses["fail2ban"].record(False, 0.0)
                scrape.set_up("fail2ban", False, first_line(exc))
            else:
                scrape.set_up("fail2ban", True)
                yield from fams
        yield from self._thresholds()
        if self.backup is not None:
            stanzas = self.backup.current()
            if self.backup.status.ran:  # before the first background run there is nothing to say
                scrape.set_up("pgbackrest", self.backup.status.success,
                              None if self.backup.status.success else self.backup.error)
            if stanzas is not None:
                yield from self._pgbackrest(stanzas)
            with scrape.source("restore_verify"):
                yield from self._restore_verify()
        yield from self._collector_status()

    def _collector_status(self):
        statuses = {}
        if self.endpoints:
            statuses["tls"] = self.statuses["tls"]
        if self.logs.logs:
            statuses["logs"] = self.logs.status
        if self.fail2ban is not None:
            statuses["fail2ban"] = self.statuses["fail2ban"]
        if self.backup is not None:
            statuses["pgbackrest"] = self.backup.status
            statuses["restore_verify"] = self.statuses["restore_verify"]
        lab = ["collector"]
        ok = GaugeMetricFamily("opsstack_security_collector_success", "1 when the collector's last run read its "
                               "source.", labels=lab)
        dur = GaugeMetricFamily("opsstack_security_collector_duration_seconds", "Time of the collector's last run.",
                                labels=lab)
        age = GaugeMetricFamily("opsstack_security_collector_age_seconds", "Age of what the collector serves: 0 "
                                "for live ones, else the time since its last good run (NaN before the first).",
                                labels=lab)
        itv = GaugeMetricFamily("opsstack_security_collector_interval_seconds", "How often the collector runs in "
                                "the background (0 = live, in every scrape).", labels=lab)
        for name, st in statuses.items():
            ok.add_metric([name], 1.0 if st.success else 0.0)
            dur.add_metric([name], st.duration)
            age.add_metric([name], st.age())
            itv.add_metric([name], st.interval)
        return [ok, dur, age, itv]
