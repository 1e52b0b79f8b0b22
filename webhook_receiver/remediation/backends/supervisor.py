"""supervisor: control a program of the native stack over supervisord's XML-RPC API.

Operations: restart (stop, then start), start, stop, signal, replace (stop, drop the
process group, re-read the config and add the group again: a fresh process built from
the current configuration, not only a restart).
"""
from __future__ import annotations

import http.client
import time
import xmlrpc.client
from urllib.parse import quote, urlsplit, urlunsplit

from .base import Backend, BackendError, BackendTimeout, Result

# supervisor.xmlrpc.Faults
NOT_RUNNING = 70
ALREADY_STARTED = 60
ALREADY_ADDED = 90
STILL_RUNNING = 91
BAD_NAME = 10


class _TimeoutTransport(xmlrpc.client.Transport):
    def __init__(self, timeout: float):
        super().__init__()
        self._timeout = timeout

    def make_connection(self, host):
        conn = super().make_connection(host)
        conn.timeout = self._timeout
        return conn


def rpc_url(settings: dict, cfg: dict) -> str:
    url = settings.get("url")
    if not url:
        port = cfg["stack"]["ports"]["supervisor"]
        if port == "auto":
            raise BackendError("supervisor port unknown: set stack.ports.supervisor or "
                               "remediation.backends.supervisor.url (or run under `opsstack up`)")
        url = f"http://{cfg['stack']['host']}:{port}/RPC2"
    if settings.get("username"):
        parts = urlsplit(url)
        cred = f"{quote(settings['username'], safe='')}:{quote(settings.get('password') or '', safe='')}"
        url = urlunsplit((parts.scheme, f"{cred}@{parts.hostname}:{parts.port}", parts.path or "/RPC2", "", ""))
    return url


class SupervisorBackend(Backend):
    name = "supervisor"

    def proxy(self, timeout: float):
        return xmlrpc.client.ServerProxy(rpc_url(self.settings, self.cfg), transport=_TimeoutTransport(timeout),
                                         allow_none=True)

    def describe(self, operation, params):
        url = rpc_url(self.settings, self.cfg)
        safe = urlsplit(url)
        return {"backend": "supervisor", "operation": operation, "program": params["program"],
                "rpc": f"{safe.scheme}://{safe.hostname}:{safe.port}{safe.path}",
                **({"signal": params["signal"]} if "signal" in params else {})}

    def run(self, operation, params, timeout):
        program = str(params["program"])
        deadline = time.monotonic() + timeout
        try:
            s = self.proxy(timeout).supervisor
            steps: list[str] = []
            before = self._pid(s, program)
            if operation in ("restart", "stop", "replace"):
                steps.append(self._stop(s, program))
            if operation == "replace":
                steps += self._replace(s, program)
            if operation in ("restart", "start", "replace"):
                steps.append(self._start(s, program, deadline))
            if operation == "signal":
                s.signalProcess(program, str(params["signal"]))
                steps.append(f"signalled {params['signal']}")
            info = s.getProcessInfo(program)
        except xmlrpc.client.Fault as f:
            raise BackendError(f"supervisor fault {f.faultCode}: {f.faultString}") from None
        except TimeoutError:
            raise BackendTimeout(f"supervisor did not answer within {timeout:g}s") from None
        except (OSError, http.client.HTTPException, xmlrpc.client.ProtocolError) as exc:
            raise BackendError(f"supervisor unreachable: {self._scrub(str(exc))}") from None
        out = f"{program}: {'; '.join(steps)}; now {info['statename']} pid {info['pid']} (was pid {before})"
        ok = info["statename"] == "RUNNING" if operation != "stop" else info["statename"] != "RUNNING"
        if operation == "signal":
            ok = True
        return Result(ok, out, {"pid_before": before, "pid_after": info["pid"], "state": info["statename"]})

    def _scrub(self, text: str) -> str:
        """An error text without the RPC password (a ProtocolError names the URL with user:password@)."""
        pw = self.settings.get("password")
        if pw:
            text = text.replace(quote(pw, safe=""), "***").replace(pw, "***")
        return text

    @staticmethod
    def _pid(s, program):
        try:
            return s.getProcessInfo(program)["pid"]
        except xmlrpc.client.Fault as f:
            if f.faultCode == BAD_NAME:
                raise BackendError(f"supervisor has no program {program!r}") from None
            raise

    @staticmethod
    def _stop(s, program) -> str:
        try:
            s.stopProcess(program, True)
            return "stopped"
        except xmlrpc.client.Fault as f:
            if f.faultCode == NOT_RUNNING:
                return "was not running"
            raise

    @staticmethod
    def _start(s, program, deadline) -> str:
        try:
            s.startProcess(program, True)
            return "started"
        except xmlrpc.client.Fault as f:
            if f.faultCode != ALREADY_STARTED:
                raise
            # e.g. autostart after addProcessGroup: wait for it to leave STARTING
            while time.monotonic() < deadline:
                if s.getProcessInfo(program)["statename"] != "STARTING":
                    break
                time.sleep(0.2)
            return "already running"

    @staticmethod
    def _replace(s, program) -> list[str]:
        group = program.split(":", 1)[0]
        try:
            s.removeProcessGroup(group)
        except xmlrpc.client.Fault as f:
            if f.faultCode != BAD_NAME:
                raise
        s.reloadConfig()
        try:
            s.addProcessGroup(group)
        except xmlrpc.client.Fault as f:
            if f.faultCode != ALREADY_ADDED:
                raise
        return [f"group {group} removed and re-added from the current configuration"]
