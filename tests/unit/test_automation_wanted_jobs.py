"""Which automation jobs a set of ticket changes queues (Automation.wanted_jobs: what the hooks
stager writes inside the ticket transaction), without a database."""
from __future__ import annotations

from tests.support import receiver as T
from webhook_receiver.automation import Automation

PLAYBOOK = {"name": "restart", "match": {"alertname": "ServiceDown"}, "target": "demo-{service}",
            "actions": [{"name": "restart", "backend": "command", "params": {"argv": ["true"]}}],
            "on_resolved": [{"name": "restore", "backend": "command", "params": {"argv": ["true"]}}]}


def auto(**sections) -> Automation:
    return Automation(T.config("postgresql://postgres@127.0.0.1:1/none", **sections))


def test_changes_queue_their_jobs_once_per_change():
    a = auto(enrichment={"enabled": False}, remediation={"playbooks": [PLAYBOOK]})
    calls = [("ticket_opened", {"ticket_id": 1}), ("ticket_reopened", {"ticket_id": 2}),
             ("ticket_resolved", {"ticket_id": 3}),
             ("ticket_updated", {"ticket_id": 4, "change": "alert_attached", "status": "open", "event_id": 9,
                                 "attached_labels": [{"alertname": "DiskFull"}, {"alertname": "ServiceDown"}]}),
             ("ticket_updated", {"ticket_id": 5, "change": "alert_attached", "status": "open", "event_id": 10,
                                 "attached_labels": [{"alertname": "DiskFull"}]}),  # no playbook matches
             ("ticket_updated", {"ticket_id": 6, "change": "alert_attached", "status": "resolved", "event_id": 11,
                                 "attached_labels": [{"alertname": "ServiceDown"}]}),
             ("ticket_updated", {"ticket_id": 7, "change": "acknowledged", "status": "acknowledged"})]
    assert a.wanted_jobs(calls) == [(1, "remediation", None, False, None), (2, "remediation", None, False, None),
                                    (3, "restore", None, False, None), (4, "remediation", "a9", True, None)]


def test_an_incident_no_playbook_knows_has_its_remediation_recorded_skipped():
    a = auto(enrichment={"enabled": False}, remediation={"playbooks": [PLAYBOOK]})
    calls = [("ticket_opened", {"ticket_id": 1, "alert_labels": [{"alertname": "DiskFull"}]}),
             ("ticket_opened", {"ticket_id": 2, "alert_labels": [{"alertname": "DiskFull"},
                                                                 {"alertname": "ServiceDown", "service": "x"}]}),
             ("ticket_reopened", {"ticket_id": 3, "alert_labels": [{"alertname": "Other"}]}),
             ("ticket_opened", {"ticket_id": 4})]  # labels not given (an older caller): it runs
    assert a.wanted_jobs(calls) == [(1, "remediation", None, False, "no playbook matches the incident's alerts"),
                                    (2, "remediation", None, False, None),
                                    (3, "remediation", None, False, "no playbook matches the incident's alerts"),
                                    (4, "remediation", None, False, None)]


def test_nothing_when_automation_is_off():
    a = auto(enrichment={"enabled": False}, remediation={"enabled": False, "playbooks": [PLAYBOOK]})
    assert a.wanted_jobs([("ticket_opened", {"ticket_id": 1}), ("ticket_resolved", {"ticket_id": 1})]) == []


def test_log_excerpt_alone_wants_enrichment_only_with_a_loki_or_a_file():
    from core.config import load_data, view
    from webhook_receiver import jobs

    def kinds(enrichment, loki_url=None):
        cfg = load_data({"enrichment": enrichment})
        return jobs.wanted(view(cfg, "enrichment"), view(cfg, "remediation"), [], None, loki_url)

    assert kinds({}) == set()  # auto, no stack Loki, no Prometheus: nothing to attach
    assert kinds({}, "http://127.0.0.1:3100") == {"enrichment"}
    assert kinds({"logs": {"source": "file", "file": "/x/{service}.log"}}) == {"enrichment"}
    assert kinds({"logs": {"source": "none"}}, "http://127.0.0.1:3100") == set()
