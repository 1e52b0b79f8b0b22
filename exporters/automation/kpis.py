"""The automation KPIs from what the sources gave: pure functions, no I/O (tests feed them runs).

Label values: a dag_id or task_id comes from Airflow (anyone who can add a DAG file names it), so
it is sanitised (``label()``: letters, digits, ``_ . -``, at most 64 characters; anything else
changed, with a short hash of the original so two ids never merge) and capped: the ``max_dags``
DAGs with the most runs in the window keep their own label, the rest are summed as
``dag_id="_other"`` (likewise ``max_tasks`` for the failed tasks).
"""
from __future__ import annotations

import hashlib
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field

from exporters.automation.airflow import RUN_STATES, Dag, Run, TaskFailure

OTHER = "_other"
QUANTILES = (0.5, 0.95)
_BAD = re.compile(r"[^A-Za-z0-9_.-]")
MAX_LABEL = 64


def label(value: str) -> str:
    """A bounded, safe label value for an id from a source (module doc)."""
    clean = _BAD.sub("_", value)
    if clean == value and 0 < len(value) <= MAX_LABEL and value != OTHER:
        return value
    digest = hashlib.sha1(value.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{clean[:MAX_LABEL - 9]}_{digest}"


def quantile(values: list[float], q: float) -> float | None:
    """The q-quantile, linear between the closest ranks (numpy's default); None when empty."""
    if not values:
        return None
    v = sorted(values)
    pos = (len(v) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


@dataclass
class DagStats:
    runs: dict[str, int] = field(default_factory=lambda: {s: 0 for s in RUN_STATES})
    durations: list[float] = field(default_factory=list)         # finished runs (success, failed)
    success_durations: list[float] = field(default_factory=list)
    queued: list[float] = field(default_factory=list)            # start - queued_at
    oldest_running: float | None = None
    time_saved_seconds: float = 0.0
    manual: bool = False                                         # some member has manual minutes

    @property
    def finished(self) -> int:
        return self.runs["success"] + self.runs["failed"]


@dataclass
class Kpis:
    dags_active: int
    dags_paused: int
    per_dag: dict[str, DagStats]                                 # label -> stats
    speedup: dict[str, float]                                    # label -> ratio
    task_failures: dict[tuple[str, str], int]                    # (dag label, task label) -> count
    error_ratio: float | None
    processing_seconds_avg: float | None
    workflows_in_operation: int


def in_window(r: Run, since: float) -> bool:
    """A run counts in the window when it is queued or running now, or started (or ended) in it."""
    if r.state in ("queued", "running"):
        return True
    return any(t is not None and t >= since for t in (r.start, r.end))


def compute(dags: list[Dag], runs: list[Run], failures: list[TaskFailure], *, now: float, since: float,
            manual_minutes: dict, manual_default: float | None, max_dags: int, max_tasks: int) -> Kpis:
    runs = [r for r in runs if r.state in RUN_STATES and in_window(r, since)]
    count: dict[str, int] = defaultdict(int)
    for r in runs:
        count[r.dag_id] += 1
    known = {d.dag_id for d in dags} | set(count)
    ranked = sorted(known, key=lambda d: (-count.get(d, 0), d))
    own = set(ranked[:max_dags])

    def dl(dag_id: str) -> str:
        return label(dag_id) if dag_id in own else OTHER

    per: dict[str, DagStats] = {}
    for d in ranked:
        per.setdefault(dl(d), DagStats())
    by_dag: dict[str, list[float]] = defaultdict(list)                 # success durations per dag_id
    successes: dict[str, int] = defaultdict(int)
    all_success: list[float] = []
    for r in runs:
        st = per[dl(r.dag_id)]
        st.runs[r.state] += 1
        successes[r.dag_id] += r.state == "success"
        dur = r.end - r.start if r.start is not None and r.end is not None and r.end >= r.start else None
        if r.state in ("success", "failed") and dur is not None:
            st.durations.append(dur)
            if r.state == "success":
                st.success_durations.append(dur)
                by_dag[r.dag_id].append(dur)
                all_success.append(dur)
        if r.queued_at is not None and r.start is not None and r.start >= r.queued_at:
            st.queued.append(r.start - r.queued_at)
        if r.state == "running" and r.start is not None:
            age = max(0.0, now - r.start)
            st.oldest_running = age if st.oldest_running is None else max(st.oldest_running, age)

    speedup: dict[str, float] = {}
    for dag_id in known:
        minutes = manual_minutes.get(dag_id, manual_default)
        if minutes is None:
            continue
        st = per[dl(dag_id)]
        st.manual = True
        st.time_saved_seconds += float(minutes) * successes[dag_id] * 60.0
        mean = sum(by_dag[dag_id]) / len(by_dag[dag_id]) if by_dag[dag_id] else 0.0
        if dag_id in own and mean > 0:
            speedup[label(dag_id)] = float(minutes) * 60.0 / mean

    tasks: dict[tuple[str, str], int] = defaultdict(int)
    for f in failures:  # every failure counts, its DAG listed or not
        if f.dag_id not in own:
            per.setdefault(OTHER, DagStats())
        tasks[(dl(f.dag_id), label(f.task_id))] += 1
    if len(tasks) > max_tasks:  # the most failing keep their task_id, the rest per DAG as _other
        keep = set(sorted(tasks, key=lambda k: (-tasks[k], k))[:max_tasks])
        capped: dict[tuple[str, str], int] = defaultdict(int)
        for k, n in tasks.items():
            capped[k if k in keep else (k[0], OTHER)] += n
        tasks = capped

    failed = sum(s.runs["failed"] for s in per.values())
    finished = sum(s.finished for s in per.values())
    active = sum(1 for d in dags if not d.paused)
    return Kpis(
        dags_active=active, dags_paused=sum(1 for d in dags if d.paused), per_dag=per, speedup=speedup,
        task_failures=dict(tasks), error_ratio=failed / finished if finished else None,
        processing_seconds_avg=sum(all_success) / len(all_success) if all_success else None,
        workflows_in_operation=active)
