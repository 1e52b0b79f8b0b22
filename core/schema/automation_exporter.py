"""The `exporters.automation` config section (registered as the "automation" key in
core/schema/exporters.py): the automation exporter, which reads Apache Airflow's REST API (v2 of
Airflow 3 or v1 of Airflow 2), the receiver's tickets and the Event Management demo service's
event-request API, and exports the automation KPIs (docs/automation.md, "Exporter").

Off by default: `opsstack up` runs it when this is enabled or when the demo runs Airflow
(demo.airflow).
"""
from __future__ import annotations

import re

from core.spec import ConfigError, Field

# Airflow's own rule for a dag_id (airflow.utils.helpers.KEY_REGEX): letters, digits, _ . -
DAG_ID = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")

SECTION = {
    "enabled": Field("bool", False, help="run the exporter (also run when demo.airflow is on)"),
    "window": Field("duration", "24h", minimum=60, help="runs, failures, tickets and requests of this window"),
    "timeout": Field("duration", "5s", minimum=0.1,
                     help="one HTTP request to a source (shorter than stack.scrape_timeout: reads run at scrape time)"),
    "cache_ttl": Field("duration", "10s", minimum=0,
                       help="a scrape within this long of the last read serves what that read got "
                            "(the age is exported); 0 = read at every scrape"),
    "max_dags": Field("int", 100, minimum=1, maximum=10000,
                      help="dag_id label values per scrape; the DAGs past it are summed as dag_id=\"_other\""),
    "max_tasks": Field("int", 200, minimum=1, maximum=10000,
                       help="(dag_id, task_id) series of opsstack_automation_task_failures; the rest as _other"),
    "max_runs": Field("int", 50000, minimum=100, maximum=1000000,
                      help="DAG runs read per scrape at most (the oldest past it are left out, logged)"),
    "page_limit": Field("int", 100, minimum=1, maximum=1000,
                        help="items asked per page (Airflow caps it at its maximum_page_limit, 100 by default)"),
    "max_response_bytes": Field("int", 16 * 1024 * 1024, minimum=1024,
                                help="a larger answer of a source is refused (source down)"),
    "runs_query": Field("str", "batch", choices=("batch", "per_dag"),
                        help="batch: GET /dags/~/dagRuns for every DAG at once; per_dag: one listing per DAG"),
    "manual_minutes": Field("dict", {"event_creation": 360.0},
                            help="dag_id -> minutes the same work takes a person (time saved, speed-up)"),
    "manual_minutes_default": Field("float", None, nullable=True, minimum=0.01,
                                    help="minutes for the DAGs not in manual_minutes (null: no time-saved or "
                                         "speed-up series for them)"),
    "airflow": {
        "url": Field("url", None, nullable=True,
                     help="Airflow's API server (e.g. http://127.0.0.1:8080); null: the demo's "
                          "(stack.ports.airflow) when it runs one"),
        "api_version": Field("str", "auto", choices=("auto", "v2", "v1"),
                             help="v2: Airflow 3 (token from POST /auth/token); v1: Airflow 2 (basic auth); "
                                  "auto: v2, else v1"),
        "username": Field("str", "admin"),
        "password": Field("str", None, nullable=True, secret=True,
                          help="null: from password_file, else no credential sent (an API that needs none)"),
        "password_file": Field("str", None, nullable=True,
                               help="a file holding the password: plain text, or the simple auth manager's "
                                    "JSON {user: password}; null with url null: the demo Airflow's "
                                    "<run_dir>/airflow/passwords.json"),
    },
    "receiver": {
        "enabled": Field("bool", True, help="automation rate of incidents and response time, from the receiver"),
        "url": Field("url", None, nullable=True, help="the receiver (null: the stack's own)"),
        "token": Field("str", None, nullable=True, secret=True,
                       help="a read token of receiver.api.tokens (null: receiver.token)"),
        "max_tickets": Field("int", 2000, minimum=1, maximum=100000,
                             help="tickets read per refresh at most (newest first)"),
        "max_details": Field("int", 200, minimum=0, maximum=10000,
                             help="ticket timelines read per refresh at most (closed-by-automation candidates)"),
    },
    "event_requests": {
        "enabled": Field("bool", True, help="automation rate of event requests and the approval queue"),
        "url": Field("url", None, nullable=True,
                     help="the Event Management service's admin listener serving /api/v1/event-requests "
                          "(null: the demo's, when the demo runs)"),
        "service": Field("str", "event-management", help="the demo service serving it (url null)"),
        "limit": Field("int", 500, minimum=1, maximum=100000,
                       help="completed requests read at most, newest first (the demo's API gives 500 at most)"),
    },
}


def check(cfg):
    a = cfg["exporters"]["automation"]
    for dag, minutes in a["manual_minutes"].items():
        if not isinstance(dag, str) or not DAG_ID.match(dag) or isinstance(minutes, bool) \
                or not isinstance(minutes, (int, float)) or minutes <= 0:
            raise ConfigError(f"exporters.automation.manual_minutes.{dag}",
                              f"must map a dag_id to minutes > 0, got {minutes!r}")
    runs = a["enabled"] or bool(cfg["demo"]["enabled"] and cfg["demo"].get("airflow") is True)
    if runs and a["timeout"] >= cfg["stack"]["scrape_timeout"]:  # only a running exporter is scraped
        raise ConfigError("exporters.automation.timeout", "must be shorter than stack.scrape_timeout "
                          "(the sources are read at scrape time)")
