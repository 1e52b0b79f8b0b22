"""`make test`: the whole suite in two lanes that run side by side.

    .venv/bin/python scripts/run_tests.py [--serial] [--basetemp DIR] [-- PYTEST_ARGS ...]

- lane ``e2e``: tests/e2e, the native stack's tests, one after the other in one pytest (they share
  the session's stack: tests/e2e/conftest.py). Its first test watches a fresh stack for 10 minutes.
- lane ``rest``: tests/unit, tests/integration and tests/browser in another pytest.

Why two lanes: the e2e lane is mostly waiting (the quiet window, alerts' `for:` durations), and so
is the rest (servers starting, conditions polled): measured on the 2-core CI box, each alone kept
the CPUs about a fifth busy (14 % during the quiet window, 20-29 % over any 5 minutes of the
integration tests). Side by side the suite takes about as long as its longer lane instead of the
sum of both. The two share nothing: every integration test has databases, ports and folders of its
own, the e2e stack its own embedded PostgreSQL, Redis and ports ('auto'), and each lane its own
--basetemp (<basetemp>/e2e, <basetemp>/rest). The fresh stack's quiet window thus runs on a host
that is doing other work, as a user's host does.

Each lane's output is streamed line by line with its name in front, and kept whole in
<basetemp>/<lane>.log; a failed lane's failures (pytest's FAILED/ERROR lines and each failure's
first ``E`` line) are printed again at the very end, so a log that keeps only the tail shows them.
The exit status is the first failing lane's (0 when both pass); a lane that
collects no test fails. --serial runs the lanes one after the other (e2e last, as before).
SIGINT/SIGTERM are passed on to both pytests, so their fixtures still stop what they started.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LANES = {
    "e2e": ["tests/e2e"],
    "rest": ["tests/unit", "tests/integration", "tests/browser"],
}


def _pump(name: str, proc: subprocess.Popen, log: Path, lock: threading.Lock, ended: dict) -> None:
    """Copy the lane's output to the log and to stdout; note when the lane ended."""
    with open(log, "w", encoding="utf-8", errors="replace") as f:
        for line in iter(proc.stdout.readline, ""):
            f.write(line)
            f.flush()
            with lock:
                sys.stdout.write(f"[{name}] {line}" if line.endswith("\n") else f"[{name}] {line}\n")
                sys.stdout.flush()
    proc.wait()
    ended[name] = time.monotonic()


def _start(name: str, paths: list[str], basetemp: Path, extra: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "pytest", "-q", "-ra", "--durations=25", "-p", "no:cacheprovider",
           f"--basetemp={basetemp / name}", *extra, *paths]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1, errors="replace")


def run(lanes: dict[str, list[str]], basetemp: Path, extra: list[str], serial: bool) -> int:
    if basetemp.exists():
        shutil.rmtree(basetemp)
    basetemp.mkdir(parents=True)
    lock = threading.Lock()
    procs: dict[str, subprocess.Popen] = {}
    pumps: list[threading.Thread] = []
    started: dict[str, float] = {}
    ended: dict[str, float] = {}

    def forward(sig, _frame):
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(sig)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)

    order = ["rest", "e2e"] if serial else list(lanes)
    for name in order:
        started[name] = time.monotonic()
        procs[name] = p = _start(name, lanes[name], basetemp, extra)
        t = threading.Thread(target=_pump, args=(name, p, basetemp / f"{name}.log", lock, ended), daemon=True)
        t.start()
        pumps.append(t)
        if serial:
            t.join()
    for t in pumps:
        t.join()
    codes = {name: p.wait() for name, p in procs.items()}
    print()
    for name in order:
        what = "passed" if codes[name] == 0 else f"FAILED (pytest exit {codes[name]})"
        print(f"lane {name}: {what} in {ended[name] - started[name]:.0f}s; its whole output: "
              f"{basetemp / (name + '.log')}")
    for name in order:
        if codes[name] != 0:
            for line in failures(basetemp / f"{name}.log"):
                print(f"  [{name}] {line}")
    bad = [codes[n] for n in order if codes[n] != 0]
    return bad[0] if bad else 0


def failures(log: Path, limit: int = 40) -> list[str]:
    """What a failed lane's log says failed, printed again at the very end: CI keeps only the tail
    of the output, and the other lane's lines would push this lane's summary out of it. The
    FAILED/ERROR lines of pytest's short summary (-ra) and each failure's first ``E`` line; a lane
    that died before its summary gives its last lines instead."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as e:
        return [f"(its log cannot be read: {e})"]
    summary = [l for l in lines if l.startswith(("FAILED ", "ERROR "))]
    firsts = []
    for i, l in enumerate(lines):  # a failure's ____ name ____ header, then its first E line
        if l.startswith("____") and l.endswith("____"):
            e = next((x.strip() for x in lines[i + 1:i + 400] if x.startswith("E   ")), None)
            if e:
                firsts.append(f"{l.strip('_ ')}: {e[:300]}")
    return (summary[:limit] + firsts[:limit]) or lines[-limit:]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--serial", action="store_true", help="one lane after the other (e2e last)")
    ap.add_argument("--basetemp", default=str(ROOT / ".pytest-tmp"),
                    help="each lane's --basetemp is <this>/<lane> (default: .pytest-tmp in the checkout)")
    ap.add_argument("pytest_args", nargs="*", help="passed to both pytests (after --)")
    a = ap.parse_args(argv)
    return run(LANES, Path(a.basetemp).resolve(), a.pytest_args, a.serial)


if __name__ == "__main__":
    sys.exit(main())
