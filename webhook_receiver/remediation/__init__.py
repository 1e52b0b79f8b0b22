"""Automatic recovery: playbooks (YAML) -> an action ladder, verified through Prometheus.

    from webhook_receiver.remediation import Runner
    Runner(cfg, db_url).handle_ticket(ticket_id)

See runner.py for the order of the safety gates and docs/remediation.md for playbooks.
"""
from .model import Action, Playbook, find, load_playbooks  # noqa: F401
from .runner import Alert, Outcome, Runner  # noqa: F401
