"""The OpenAPI 3.0 document of the receiver's API, served at /api/v1/openapi.json."""
from __future__ import annotations

_TS = {"type": "string", "format": "date-time"}
_TS_NULL = {"type": "string", "format": "date-time", "nullable": True}


def _err(desc: str) -> dict:
    return {"description": desc, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _ok(ref: str, desc: str = "OK") -> dict:
    return {"description": desc, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


_TID = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}}

_ACTION_ERRORS = {"400": _err("Bad input"), "401": _err("No or unknown token"), "403": _err("Token lacks write"),
                  "404": _err("No such ticket"), "503": _err("Database unavailable")}


def _action(summary: str, body: dict | None, conflict: bool = False) -> dict:
    op = {"summary": summary, "tags": ["tickets"], "parameters": [_TID], "security": [{"bearer": []}],
          "responses": {"200": _ok("TicketDetail", "The ticket after the change"), **_ACTION_ERRORS}}
    if conflict:
        op["responses"]["409"] = _err("Not possible in the ticket's state (e.g. resolved)")
    if body is not None:
        op["requestBody"] = {"required": bool(body.get("required")),
                             "content": {"application/json": {"schema": body}}}
    return op


def ticket_paths(people: list[str] | None = None) -> dict:
    """The path items of the api blueprint (tickets, on-call); ``people`` (oncall.people names)
    are the values reassign accepts."""
    text = {"type": "string", "maxLength": 4000, "nullable": True}
    assignee = {"type": "string", "minLength": 1, "maxLength": 200}
    if people:
        assignee["enum"] = sorted(people)
    return {
        "/api/v1/tickets": {"get": {
            "summary": "List tickets, newest first", "tags": ["tickets"],
            "parameters": [
                {"name": "status", "in": "query", "required": False, "style": "form", "explode": False,
                 "description": "one or more, comma-separated (or repeated)",
                 "schema": {"type": "array", "minItems": 1,
                            "items": {"type": "string", "enum": ["open", "acknowledged", "resolved"]}}},
                {"name": "severity", "in": "query", "required": False, "style": "form", "explode": False,
                 "schema": {"type": "array", "minItems": 1,
                            "items": {"type": "string", "enum": ["critical", "warning", "info"]}}},
                {"name": "service", "in": "query", "required": False, "schema": {"type": "string", "maxLength": 200}},
                {"name": "alertname", "in": "query", "required": False, "schema": {"type": "string", "maxLength": 200}},
                {"name": "fingerprint", "in": "query", "required": False, "schema": {"type": "string", "maxLength": 200}},
                {"name": "group_id", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}},
                {"name": "limit", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
                {"name": "offset", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 0, "maximum": 10**9, "default": 0}},
            ],
            "responses": {"200": {"description": "A JSON list of tickets", "content": {"application/json": {
                "schema": {"type": "array", "items": {"$ref": "#/components/schemas/Ticket"}}}}},
                "400": _err("Bad filter"), "401": _err("Token required"), "503": _err("Database unavailable")}}},
        "/api/v1/tickets/{id}": {"get": {
            "summary": "One ticket with its alerts and event timeline", "tags": ["tickets"], "parameters": [_TID],
            "responses": {"200": _ok("TicketDetail"), "401": _err("Token required"), "404": _err("No such ticket"),
                          "503": _err("Database unavailable")}}},
        "/api/v1/tickets/{id}/acknowledge": {"post": _action(
            "Acknowledge: stops the escalation", {"type": "object", "properties": {"note": text}}, conflict=True)},
        "/api/v1/tickets/{id}/resolve": {"post": _action(
            "Resolve by hand", {"type": "object", "properties": {"note": text}})},
        "/api/v1/tickets/{id}/comment": {"post": _action(
            "Add a comment to the timeline",
            {"type": "object", "required": ["text"], "properties": {"text": {
                "type": "string", "minLength": 1, "maxLength": 4000}}})},
        "/api/v1/tickets/{id}/reassign": {"post": _action(
            "Give the ticket to someone (a name from oncall.people)",
            {"type": "object", "required": ["assignee"],
             "properties": {"assignee": assignee, "note": text}})},
        "/api/v1/tickets/{id}/escalate": {"post": _action(
            "Page the next escalation level now", {"type": "object", "properties": {"reason": text}},
            conflict=True)},
        "/api/v1/oncall": {"get": {
            "summary": "Who is on call now, per schedule", "tags": ["oncall"],
            "responses": {"200": {"description": "Schedules", "content": {"application/json": {"schema": {
                "type": "array", "items": {"type": "object", "properties": {
                    "schedule": {"type": "string"}, "person": {"type": "string"}, "next_handover": _TS}}}}}},
                "401": _err("Token required")}}},
    }


def document(paths: dict) -> dict:
    """The OpenAPI document around ``paths`` (the components every path refers to)."""
    ticket_props = {
        "id": {"type": "integer"}, "status": {"type": "string", "enum": ["open", "acknowledged", "resolved"]},
        "alertname": {"type": "string"}, "service": {"type": "string"}, "severity": {"type": "string"},
        "tier": {"type": "integer", "minimum": 1, "maximum": 3}, "team": {"type": "string"},
        "fingerprint": {"type": "string"}, "summary": {"type": "string"},
        "opened_at": _TS, "acknowledged_at": _TS_NULL, "acknowledged_by": {"type": "string", "nullable": True},
        "resolved_at": _TS_NULL, "resolved_by": {"type": "string", "nullable": True}, "starts_at": _TS,
        "reopened_count": {"type": "integer"}, "policy": {"type": "string"},
        "level": {"type": "integer", "description": "current escalation level (1-based)"},
        "assignee": {"type": "string", "nullable": True},
        "next_escalation_at": {**_TS_NULL, "description": "when the next level is paged unless acknowledged"},
        "group_id": {"type": "integer", "nullable": True, "description": "Alertmanager group the alert came in"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "generator_url": {"type": "string"}, "updated_at": _TS,
        "incident_key": {"type": "string", "description": "what makes it one incident: the Alertmanager groupKey "
                                                          "(receiver.incident_by: group) or the alert fingerprint"},
        "alert_count": {"type": "integer", "description": "distinct alerts (fingerprints) of the incident"},
        "firing_count": {"type": "integer", "description": "its alert episodes still firing (0: it resolves)"},
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "opsstack receiver API", "version": "1.0.0",
                 "description": "Tickets made from Alertmanager alerts: list, read, acknowledge, resolve, "
                                "comment, reassign, escalate. Reads need a bearer token with the read scope (receiver.api.tokens) "
                                "or a console session (anonymous only with receiver.api.anonymous_read); "
                                "writes need an API token with the write scope."},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error", "message"],
                          "properties": {"error": {"type": "string"}, "message": {"type": "string"}}},
                "Ticket": {"type": "object", "required": ["id", "status", "alertname", "service", "severity", "tier",
                                                          "fingerprint", "opened_at", "acknowledged_at", "resolved_at"],
                           "properties": ticket_props},
                "Event": {"type": "object", "properties": {
                    "id": {"type": "integer"}, "at": _TS, "actor": {"type": "string"},
                    "kind": {"type": "string", "description": "opened, notified, escalated, acknowledged, reassigned, "
                                                              "resolved, reopened, comment, alert_attached, "
                                                              "alert_reconciled, notification_failed, "
                                                              "automation_failed"},
                    "details": {"type": "object"}}},
                "Alert": {"type": "object", "properties": {
                    "fingerprint": {"type": "string"}, "starts_at": _TS, "ends_at": _TS_NULL,
                    "status": {"type": "string"}, "labels": {"type": "object"}, "annotations": {"type": "object"},
                    "group_id": {"type": "integer", "nullable": True}, "first_seen": _TS, "last_seen": _TS}},
                "Group": {"type": "object", "nullable": True, "description": "The Alertmanager group", "properties": {
                    "id": {"type": "integer"}, "group_key": {"type": "string"}, "receiver": {"type": "string"},
                    "group_labels": {"type": "object"}, "first_seen": _TS, "last_seen": _TS,
                    "last_alert_count": {"type": "integer", "description": "alerts in its last notification"},
                    "truncated_alerts": {"type": "integer", "description":
                                         "alerts Alertmanager left out of its last notification (webhook max_alerts)"},
                    "max_truncated_alerts": {"type": "integer", "description": "the most ever left out"}}},
                "TicketDetail": {"allOf": [{"$ref": "#/components/schemas/Ticket"}, {"type": "object", "properties": {
                    "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
                    "alerts": {"type": "array", "description": "the incident's alert episodes, firing first "
                                                               "(at most 500: alert_counts has the totals)",
                               "items": {"$ref": "#/components/schemas/Alert"}},
                    "alert_counts": {"type": "object", "properties": {
                        "alerts": {"type": "integer"}, "episodes": {"type": "integer"},
                        "firing": {"type": "integer"}, "resolved": {"type": "integer"}}},
                    "group": {"$ref": "#/components/schemas/Group"},
                    "notifications": {"type": "array", "description": "deliveries: pending, sent or failed "
                                                                      "(after max_attempts) with the last error",
                                      "items": {"type": "object", "properties": {
                                          "id": {"type": "integer"}, "channel": {"type": "string"},
                                          "kind": {"type": "string"},
                                          "status": {"type": "string", "enum": ["pending", "sent", "failed"]},
                                          "attempts": {"type": "integer"},
                                          "last_error": {"type": "string", "nullable": True},
                                          "created_at": _TS, "next_attempt_at": _TS, "sent_at": _TS_NULL}}}}}]},
            },
        },
    }


def _merge(paths: dict, more: dict) -> None:
    for path, item in more.items():
        if path in paths:
            raise ValueError(f"OpenAPI path {path} is defined twice")
        paths[path] = item


def spec(people: list[str] | None = None, extra_paths: dict | None = None) -> dict:
    """The document of the api blueprint's paths plus ``extra_paths`` (they may not redefine one)."""
    paths = ticket_paths(people)
    _merge(paths, extra_paths or {})
    return document(paths)


def for_app(app, people: list[str] | None = None) -> dict:
    """The document of every path the app serves: each registered blueprint that has an
    ``openapi_paths(people)`` attribute contributes its path items (in registration order), so
    the document cannot drift from the blueprints the factory registered."""
    paths: dict = {}
    for bp in app.blueprints.values():
        fn = getattr(bp, "openapi_paths", None)
        if fn is not None:
            _merge(paths, fn(people))
    return document(paths)
