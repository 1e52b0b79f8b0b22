"""`itsm:` optional forwarding of tickets to JIRA (REST v3) and ServiceNow (Table API).

Every change goes through an outbox in PostgreSQL and is delivered by a worker that
retries with backoff; failures stay visible (API and metrics) until delivered.
"""
from core.spec import ConfigError, Field

SECTION = {
    "retry_interval": Field("duration", "10s", minimum=0.01, help="first retry delay (doubles)"),
    "max_retry_interval": Field("duration", "10m", minimum=0.01),
    "max_attempts": Field("int", 20, minimum=1, help="then the delivery is marked failed"),
    "timeout": Field("duration", "10s", minimum=0.1),
    "poll_interval": Field("duration", "2s", minimum=0.01),
    "jira": {
        "enabled": Field("bool", False),
        "url": Field("url", None, nullable=True, help="https://your-site.atlassian.net"),
        "email": Field("str", None, nullable=True, help="basic auth user (with api_token)"),
        "api_token": Field("str", None, nullable=True, secret=True),
        "bearer_token": Field("str", None, nullable=True, secret=True, help="instead of email + api_token"),
        "project": Field("str", "OPS"),
        "issue_type": Field("str", "Task"),
        "labels": Field("list", ["opsstack"]),
        "label_prefix": Field("str", "opsstack-", help="label = prefix + ticket key"),
        "resolve_transition": Field("str", "Done"),
        "reopen_transition": Field("str", "To Do"),
    },
    "servicenow": {
        "enabled": Field("bool", False),
        "url": Field("url", None, nullable=True, help="https://your-instance.service-now.com"),
        "username": Field("str", None, nullable=True),
        "password": Field("str", None, nullable=True, secret=True),
        "assignment_group": Field("str", None, nullable=True),
        "caller_id": Field("str", None, nullable=True),
        "category": Field("str", None, nullable=True),
        "close_code": Field("str", "Solution provided"),
        "resolved_state": Field("str", "6"),
        "reopen_state": Field("str", "2"),
        # severity label -> urgency/impact 1 (high) .. 3 (low)
        "urgency": Field("dict", {"critical": "1", "warning": "2", "info": "3"}),
    },
}


def check(cfg):
    it = cfg["itsm"]
    if it["jira"]["enabled"]:
        j = it["jira"]
        if not j["url"]:
            raise ConfigError("itsm.jira.url", "is required when itsm.jira.enabled is true")
        if not j["bearer_token"] and not (j["email"] and j["api_token"]):
            raise ConfigError("itsm.jira", "needs email + api_token or bearer_token")
    if it["servicenow"]["enabled"]:
        s = it["servicenow"]
        if not s["url"]:
            raise ConfigError("itsm.servicenow.url", "is required when itsm.servicenow.enabled is true")
        if not (s["username"] and s["password"]):
            raise ConfigError("itsm.servicenow", "needs username and password")
