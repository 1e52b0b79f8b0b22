"""nginx access logs: responses per vhost and status, requests per user-agent class.

Two formats:

- ``json``: the format the demo's nginx writes (``NGINX_LOG_FORMAT`` below, escape=json; the
  vhost is ``$server_name``, a name from nginx's own config, never the client's Host header):
  ``{"time":"...","vhost":"...","status":401,"method":"GET","bytes":12,"rt":0.003,"ua":"...","addr":"..."}``
- ``combined``: nginx's default ``combined`` format; the vhost is the log's configured
  ``vhost`` (one log per server block).

Blocks of lines (exporters/security/tail.py) are parsed with one regular expression over the
whole block and counted with ``collections.Counter`` (no Python work per line on the fast
path); a block with lines the expression does not match falls back to a line at a time (JSON
with other key orders is still read with ``json.loads``); lines that match nothing are
counted as unparsed.

Labels stay bounded: ``status`` is the code itself for the tracked codes (401, 403, 404, 429,
444 by default) and the class (2xx, 3xx, 4xx, 5xx, other) for the rest; ``vhost`` values
must look like a host name and at most ``max_vhosts`` distinct ones get their own series
(``access.vhosts`` and the combined logs' vhosts first), the rest count as ``__other__``; ``agent`` is a class (AGENT_CLASSES).
"""
from __future__ import annotations

import collections
import json
import re
import threading

# The nginx log_format the demo uses (docs/metrics.md "Security exporter").
NGINX_LOG_FORMAT = (
    "log_format opsstack_json escape=json '{\"time\":\"$time_iso8601\",\"vhost\":\"$server_name\","
    "\"status\":$status,\"method\":\"$request_method\",\"bytes\":$body_bytes_sent,"
    "\"rt\":$request_time,\"ua\":\"$http_user_agent\",\"addr\":\"$remote_addr\"}';"
)

# A fail2ban filter (filter.d/<name>.conf) over that format: 401/403 answers per client address.
# fail2ban cuts the matched date out of the line before its failregex runs.
FAIL2BAN_FILTER = (
    "[Definition]\n"
    "failregex = \"status\":(?:401|403),.*\"addr\":\"<ADDR>\"\\}$\n"
    "datepattern = \"time\":\"%%Y-%%m-%%dT%%H:%%M:%%S%%z\"\n"
)

_STR = r'([^"\\\n]*(?:\\.[^"\\\n]*)*)'  # a JSON string's inside (unrolled: fast)
# the fields of NGINX_LOG_FORMAT in its order: no backtracking on the fast path
_JSON_RE = re.compile(r'^\{"time":"[^"\n]*","vhost":"' + _STR + r'","status":(\d{3}),"method":"[^"\n]*",'
                      r'"bytes":[0-9]*,"rt":[0-9.]*,"ua":"' + _STR + r'","addr":"[^"\n]*"\}$', re.M)
# other key orders and extra keys: json.loads per line (the slow path)
_JSON_LOOSE = re.compile(r'^\{"time":"[^"\n]*","vhost":"' + _STR + r'","status":(\d{3}),[^\n]*?"ua":"' + _STR
                         + r'"[^\n]*$')
_COMBINED_RE = re.compile(r'^\S+ \S+ \S+ \[[^\]\n]*\] "(?:[^"\\\n]|\\.)*" (\d{3}) \S+ "(?:[^"\\\n]|\\.)*" "'
                          + _STR + '"[^\\n]*$', re.M)

AGENT_CLASSES = ("browser", "bot", "scanner", "tool", "monitor", "empty", "other")
_SCANNER = re.compile(r"sqlmap|nikto|nmap|masscan|zgrab|nuclei|wpscan|dirbuster|gobuster|ffuf|feroxbuster|"
                      r"acunetix|nessus|openvas|w3af|havij|zmeu|netsparker|burp|arachni|jorgee|"
                      r"l9explore|censysinspect|httpx - open-source", re.I)
_MONITOR = re.compile(r"opsstack-prober|blackbox|prometheus|uptime|pingdom|statuscake|kube-probe|"
                      r"elb-healthchecker|nagios|zabbix|datadog|site24x7", re.I)
_TOOL = re.compile(r"^(curl|wget|python-requests|python-urllib|python-httpx|aiohttp|go-http-client|java/|"
                   r"okhttp|libwww-perl|httpie|axios|node-fetch|undici|apache-httpclient|postmanruntime|"
                   r"ruby|php/|powershell|scrapy)", re.I)
_BOT = re.compile(r"bot\b|bot/|crawl|spider|slurp|facebookexternalhit|bingpreview|mediapartners|"
                  r"yandex|baidu|duckduckgo|semrush|ahrefs|petalbot|gptbot|claudebot|bytespider", re.I)
_HOSTNAME = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,62})$")
_PORT = re.compile(r"(?<=[a-z0-9.]):\d{1,5}$")
OTHER = "__other__"


def agent_class(ua: str) -> str:
    """The class of a User-Agent string (AGENT_CLASSES)."""
    ua = ua.strip()
    if not ua or ua == "-":
        return "empty"
    if _SCANNER.search(ua):
        return "scanner"
    if _MONITOR.search(ua):
        return "monitor"
    if _TOOL.search(ua):
        return "tool"
    if _BOT.search(ua):
        return "bot"
    if ua.startswith("Mozilla/") or ua.startswith("Opera/"):
        return "browser"
    return "other"


class Bounded:
    """Label values from outside: host-name-like values, the first ``limit`` distinct ones
    keep their own value, the rest (and anything else) become ``__other__``."""

    def __init__(self, limit: int, known: tuple[str, ...] = ()):
        self.limit = int(limit)
        self.kept: set[str] = set(known)

    def __call__(self, value: str) -> str:
        if value in self.kept:
            return value
        v = _PORT.sub("", value.strip().lower())
        if v in self.kept:
            return v
        if not _HOSTNAME.match(v) or len(self.kept) >= self.limit:
            return OTHER
        self.kept.add(v)
        return v

    def lookup(self, value: str) -> str:
        """A value already kept (a vhost from the access logs or the config), else ``__other__``:
        for values a client chose (a Host header), which must not use up the budget."""
        if value in self.kept:
            return value
        v = _PORT.sub("", value.strip().lower())
        return v if v in self.kept else OTHER


def status_label(code: int, tracked: frozenset) -> str:
    if code in tracked:
        return str(code)
    return f"{code // 100}xx" if 200 <= code < 600 else "other"


class AccessCounts:
    """Counters of one or more access logs (thread-safe: the tailer thread adds, scrapes read)."""

    def __init__(self, tracked_statuses=(401, 403, 404, 429, 444), vhosts: Bounded | None = None):
        self.tracked = frozenset(int(s) for s in tracked_statuses)
        self.vhosts = vhosts or Bounded(50)
        self.responses: collections.Counter = collections.Counter()   # (vhost, status) -> n
        self.agents: collections.Counter = collections.Counter()      # (vhost, agent) -> n
        self.unparsed: collections.Counter = collections.Counter()    # log -> n
        self._ua_cache: dict[str, str] = {}
        self._lock = threading.Lock()

    def _ua(self, ua: str) -> str:
        c = self._ua_cache.get(ua)
        if c is None:
            if len(self._ua_cache) > 50_000:
                self._ua_cache.clear()
            c = self._ua_cache[ua] = agent_class(_unescape(ua))
        return c

    def add_block(self, log: str, fmt: str, text: str, lines: int, vhost: str | None = None) -> None:
        """Count a block of ``lines`` complete lines of ``log`` (format ``fmt``)."""
        if fmt == "json":
            found = _JSON_RE.findall(text)
            if len(found) != lines:
                found, bad = _slow_json(text)
            else:
                bad = 0
            tally = collections.Counter(found)           # (vhost, status, ua) -> n
            items = [(v, s, u, n) for (v, s, u), n in tally.items()]
        else:
            found = _COMBINED_RE.findall(text)
            bad = lines - len(found)
            if bad:
                found = [m.groups() for m in (_COMBINED_RE.match(x) for x in text.splitlines()) if m]
                bad = lines - len(found)
            tally = collections.Counter(found)           # (status, ua) -> n
            items = [(vhost or log, s, u, n) for (s, u), n in tally.items()]
        with self._lock:
            for v, s, u, n in items:
                vh = self.vhosts(_unescape(v))
                self.responses[(vh, status_label(int(s), self.tracked))] += n
                self.agents[(vh, self._ua(u))] += n
            if bad:
                self.unparsed[log] += bad

    def snapshot(self) -> tuple[dict, dict, dict]:
        with self._lock:
            return dict(self.responses), dict(self.agents), dict(self.unparsed)


def _slow_json(text: str) -> tuple[list, int]:
    out, bad = [], 0
    for line in text.splitlines():
        m = _JSON_RE.match(line) or _JSON_LOOSE.match(line)
        if m:
            out.append(m.groups())
            continue
        try:
            d = json.loads(line)
            out.append((str(d.get("vhost", "")), str(int(d["status"])), str(d.get("ua", ""))))
        except (ValueError, KeyError, TypeError, AttributeError):
            bad += 1
    return out, bad


def _unescape(s: str) -> str:
    """JSON/nginx escapes in a captured string (\\" \\\\ \\xNN \\uNNNN), without failing."""
    if "\\" not in s:
        return s
    try:
        return json.loads(f'"{s}"')
    except ValueError:
        return s.replace('\\"', '"')
