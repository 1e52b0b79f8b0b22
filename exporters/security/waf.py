"""ModSecurity audit log (JSON, one transaction a line): blocked requests by attack class.

Reads both JSON shapes:

- ModSecurity v3 (libmodsecurity, the nginx connector; ``SecAuditLogFormat JSON``,
  ``SecAuditLogType Serial``): ``{"transaction": {"request": {"headers": {"Host": ...}},
  "response": {"http_code": 403}, "messages": [{"details": {"ruleId": "942100", ...}}]}}``;
- ModSecurity v2 (Apache): ``{"request": {...}, "response": {"status": 403}, "audit_data":
  {"messages": ["... [id \\"942100\\"] ..."], "action": {"intercepted": true}}}``.

The ``vhost`` label is the request's Host header when it names a vhost already known (from the
access logs' ``$server_name`` or ``access.vhosts``), else ``__other__``: a Host header is the
client's choice and never adds a label value.

A transaction is **blocked** when v2 says ``intercepted``, or (v3, which has no such flag) when
its response status is one of ``block_statuses`` (403 by default: CRS's anomaly-score rules
949110/959100 deny with it) and a rule matched. Its **attack class** comes from the ids of the
rules that matched, by prefix (``classes``, default sqli 942, xss 941, scanner 913, protocol
920 and 921); the first class in that order that matched is the one counted, none -> "other".
The CRS bookkeeping rules (901 init, 905 exceptions, 949/959 blocking evaluation, 980
correlation) do not make a class. Every class a transaction matched, blocked or not, is
also counted in ``detected``.
"""
from __future__ import annotations

import collections
import json
import re
import threading

from exporters.security.access import OTHER, Bounded

DEFAULT_CLASSES = {"sqli": ("942",), "xss": ("941",), "scanner": ("913",), "protocol": ("920", "921")}
BOOKKEEPING = ("901", "905", "949", "959", "980")
_V2_ID = re.compile(r'\[id "(\d+)"\]')


def parse_transaction(line: str) -> tuple[str, int, list[str], bool | None] | None:
    """(host, status, rule ids, intercepted or None when the log does not say) of one audit
    log line, or None when it is not a transaction."""
    try:
        d = json.loads(line)
    except ValueError:
        return None
    if not isinstance(d, dict):
        return None
    t = d.get("transaction")
    if isinstance(t, dict) and ("messages" in t or "response" in t):  # v3
        req = t.get("request") or {}
        headers = req.get("headers") or {}
        host = _header(headers, "host") or str(t.get("host_ip") or "")
        status = _int((t.get("response") or {}).get("http_code"))
        ids = []
        for m in t.get("messages") or []:
            rid = ((m or {}).get("details") or {}).get("ruleId")
            if rid:
                ids.append(str(rid))
        return host, status, ids, None
    if "audit_data" in d or "request" in d:  # v2
        req = d.get("request") or {}
        host = _header(req.get("headers") or {}, "host")
        status = _int((d.get("response") or {}).get("status"))
        audit = d.get("audit_data") or {}
        ids = []
        for m in audit.get("messages") or []:
            ids += _V2_ID.findall(str(m))
        action = audit.get("action") or {}
        intercepted = bool(action.get("intercepted")) if "intercepted" in action else None
        return host, status, ids, intercepted
    return None


def _header(headers: dict, name: str) -> str:
    for k, v in headers.items():
        if str(k).lower() == name:
            return str(v)
    return ""


def _int(v) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0


def classes_of(ids: list[str], classes: dict[str, tuple[str, ...]]) -> list[str]:
    """The attack classes the rule ids fall in, in ``classes`` order."""
    out = []
    for name, prefixes in classes.items():
        if any(i.startswith(p) for i in ids for p in prefixes):
            out.append(name)
    return out


class WafCounts:
    def __init__(self, classes: dict | None = None, block_statuses=(403,), vhosts: Bounded | None = None):
        self.classes = {k: tuple(str(p) for p in v) for k, v in (classes or DEFAULT_CLASSES).items()}
        self.block_statuses = frozenset(int(s) for s in block_statuses)
        self.vhosts = vhosts or Bounded(50)
        self.blocked: collections.Counter = collections.Counter()    # (vhost, class) -> n
        self.detected: collections.Counter = collections.Counter()   # (vhost, class) -> n
        self.transactions: collections.Counter = collections.Counter()  # vhost -> n
        self.unparsed: collections.Counter = collections.Counter()   # log -> n
        self._lock = threading.Lock()

    def add_block(self, log: str, text: str, lines: int) -> None:
        rows, bad = [], 0
        for line in text.splitlines():
            if not line.strip():
                continue
            t = parse_transaction(line)
            if t is None:
                bad += 1
            else:
                rows.append(t)
        with self._lock:
            for host, status, ids, intercepted in rows:
                vh = self.vhosts.lookup(host) if host else OTHER
                self.transactions[vh] += 1
                real = [i for i in ids if not i.startswith(BOOKKEEPING)]
                found = classes_of(real, self.classes)
                for c in found:
                    self.detected[(vh, c)] += 1
                if real and not found:
                    self.detected[(vh, "other")] += 1
                blocked = intercepted if intercepted is not None else (status in self.block_statuses and bool(ids))
                if blocked:
                    self.blocked[(vh, found[0] if found else "other")] += 1
            if bad:
                self.unparsed[log] += bad

    def class_names(self) -> list[str]:
        return [*self.classes, "other"]

    def snapshot(self):
        with self._lock:
            return dict(self.blocked), dict(self.detected), dict(self.transactions), dict(self.unparsed)
