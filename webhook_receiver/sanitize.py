"""Pure helpers that make attacker-controlled text (alert labels, annotations) safe where it
ends up in a protocol field: e-mail / HTTP header values and Slack message text."""
from __future__ import annotations

import re
import unicodedata

_SPACES = re.compile(r"\s+")
# an e-mail address we are willing to put in To: (no quotes, no comments, no lists, no spaces)
_ADDR = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                   r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
# a Slack mention target from the directory: @U123, #C123, !subteam^S123, !here
_MENTION = re.compile(r"^[@#!][A-Za-z0-9._^-]{1,80}$")


def header_value(text, limit: int = 900) -> str:
    """One line of text for a header (e-mail Subject, an HTTP header, a one-line remote field):
    CR, LF, NUL, every other control character and the Unicode line/paragraph separators become
    a space, runs of white space collapse, the result is cut at ``limit`` characters."""
    s = "" if text is None else str(text)
    s = "".join(" " if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c for c in s)
    return _SPACES.sub(" ", s).strip()[:limit]


def email_address(addr) -> str | None:
    """``addr`` when it is a plain address (local@domain), else None."""
    if not isinstance(addr, str) or len(addr) > 254:
        return None
    return addr if _ADDR.match(addr) else None


def slack_text(text) -> str:
    """Text for Slack's mrkdwn: ``&``, ``<`` and ``>`` escaped as Slack documents, so that
    ``<!channel>``, ``<@U123>`` or ``<https://evil|text>`` in a label are shown, never acted on."""
    s = "" if text is None else str(text)
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_mention(target) -> str:
    """``<@U123>`` for a directory entry that is a mention target, else ''."""
    if isinstance(target, str) and _MENTION.match(target):
        return f"<{target}>"
    return ""
