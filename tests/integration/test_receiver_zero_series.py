"""Counters that matter when they are zero (issue 14): a fresh receiver's /metrics already has
the notification failure series of every configured channel and the remediation outcome series
of every playbook, at 0, so panels show 0 rather than "No data"."""
from __future__ import annotations

import pytest

from tests.support import receiver as T
from webhook_receiver.app import close_app, create_app
from webhook_receiver.remediation.metrics import ATTEMPT_OUTCOMES, RUN_OUTCOMES

pytestmark = pytest.mark.integration



def test_a_fresh_receiver_exports_zero_series(pg_db):
    cfg = T.config(pg_db, notifications={
        "channels": [{"name": "mail", "type": "smtp", "to": ["ops@example.invalid"]},
                     {"name": "hook", "type": "webhook", "url": "http://127.0.0.1:9/x"}],
        "rules": [{"channels": ["mail"]}]},
        remediation={"playbooks": [{"name": "fix-svc", "match": {"alertname": "DemoHigh"},
                                    "actions": [{"name": "poke", "backend": "http",
                                                 "params": {"url": "http://127.0.0.1:9/fix"}},
                                                {"name": "kick", "backend": "http",
                                                 "params": {"url": "http://127.0.0.1:9/kick"}}]}]})
    app = create_app(cfg)
    try:
        m = T.samples(app.test_client().get("/metrics").get_data(as_text=True))
    finally:
        close_app(app)
    for ch in ("mail", "hook"):  # a channel no rule uses yet is still watched
        for name in ("opsstack_tickets_notification_failures_total", "opsstack_tickets_notifications_sent_total",
                     "opsstack_tickets_notifications_failed"):
            assert m.get((name, (("channel", ch),))) == 0, (name, ch)
    for outcome in RUN_OUTCOMES:
        assert m.get(("opsstack_remediation_runs_total", (("outcome", outcome), ("playbook", "fix-svc")))) == 0, outcome
    for action in ("poke", "kick"):
        for outcome in ATTEMPT_OUTCOMES:
            key = ("opsstack_remediation_attempts_total",
                   (("action", action), ("outcome", outcome), ("playbook", "fix-svc")))
            assert m.get(key) == 0, key
    assert m.get(("opsstack_remediation_tickets_resolved_total", (("closed_by", "automation"),))) == 0
