"""command: run a configured program (no shell), bounded by the action's timeout.

params: argv (list, required), env (extra environment), cwd. The process gets its own
session so a timeout kills everything it started.
"""
from __future__ import annotations

import os
import signal
import subprocess

from .base import Backend, BackendError, BackendTimeout, Result, truncate


class CommandBackend(Backend):
    name = "command"

    def describe(self, operation, params):
        return {"backend": "command", "argv": list(params["argv"]),
                **({"cwd": params.get("cwd") or self.settings.get("cwd")} if (params.get("cwd") or self.settings.get("cwd")) else {})}

    def run(self, operation, params, timeout):
        if not self.settings.get("enabled", True):
            raise BackendError("the command backend is disabled (remediation.backends.command.enabled)")
        argv = [str(a) for a in params["argv"]]
        env = {**os.environ, **{str(k): str(v) for k, v in (params.get("env") or {}).items()}}
        cwd = params.get("cwd") or self.settings.get("cwd")
        limit = int(self.settings.get("max_output_bytes", 8192))
        try:
            p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=env, cwd=cwd, start_new_session=True)
        except OSError as exc:
            raise BackendError(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            out, _ = p.communicate()
            raise BackendTimeout(f"timed out after {timeout:g}s: {truncate(out.decode(errors='replace'), 500)}") from None
        text = out.decode(errors="replace")
        return Result(p.returncode == 0, truncate(f"exit {p.returncode}\n{text}", limit), {"exit_code": p.returncode})
