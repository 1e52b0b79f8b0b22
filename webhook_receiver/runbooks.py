"""/runbooks: the runbooks of docs/runbooks/ served by the receiver, rendered to HTML.

Every alert's ``runbook_url`` annotation is ``<alerts.runbook_base_url>/<Alert>.md`` and the
default base is this receiver's own ``/runbooks`` (alert_rules/common.py), so the link in a
ticket, an e-mail or a Slack message opens a page that exists.

- ``GET /runbooks/`` lists the runbooks; ``GET /runbooks/<Name>.md`` (or ``<Name>``) renders
  one; ``?raw=1`` gives the Markdown source as text/plain.
- Only names found in the folder are served: the name is looked up in the folder's listing,
  never joined into a path, so ``..``, slashes, encoded tricks or a name that is not there are
  404.
- Markdown is rendered with markdown-it (CommonMark + tables) with raw HTML off: an HTML tag
  in a runbook is shown as text; link targets other than http(s), mailto and relative ones are
  dropped by markdown-it's own link check (javascript:, vbscript:, file:, data: except images).
  The pages run no script (CSP ``script-src 'none'``).
- Open without a credential (docs/security.md, "Runbooks"): they are the project's public
  documentation, hold no ticket data, and people open them from e-mails and chat.
"""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from flask import Blueprint, Response, abort, current_app, request
from markdown_it import MarkdownIt
from markupsafe import escape

from webhook_receiver.state import state

bp = Blueprint("runbooks", __name__, url_prefix="/runbooks")

DEFAULT_DIR = Path(__file__).resolve().parents[1] / "docs" / "runbooks"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")

CSP = ("default-src 'none'; script-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
       "form-action 'none'; frame-ancestors 'none'; base-uri 'none'")

_md = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>body{{font-family:sans-serif;max-width:52em;margin:1em auto;padding:0 1em;line-height:1.45}}
code{{background:#f3f3f3;padding:0 .2em}}pre{{background:#f3f3f3;padding:.5em;overflow:auto}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.2em .5em}}</style>
</head><body><nav><a href="{index}">All runbooks</a></nav>
{body}
</body></html>
"""


def folder() -> Path:
    """The runbooks folder of this app (receiver.runbooks_dir, else docs/runbooks of this checkout)."""
    configured = state(current_app).receiver.runbooks_dir
    return Path(configured) if configured else DEFAULT_DIR


@lru_cache(maxsize=8)
def _listing(path: str, mtime: float) -> dict[str, Path]:
    """{name without .md: file} of the folder; cached until the folder changes."""
    d = Path(path)
    return {p.stem: p for p in sorted(d.glob("*.md")) if p.is_file() and _NAME.match(p.stem)}


def available() -> dict[str, Path]:
    d = folder()
    try:
        mtime = d.stat().st_mtime
    except OSError:
        return {}
    return _listing(str(d), mtime)


def render(text: str) -> str:
    """Markdown to HTML, raw HTML escaped (pure)."""
    return _md.render(text)


def _page(title: str, body: str) -> Response:
    html = PAGE.format(title=escape(title), index=escape(request.script_root + "/runbooks/"), body=body)
    resp = Response(html, mimetype="text/html")
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["Referrer-Policy"] = "no-referrer"
    return resp


@bp.get("/")
def index():
    items = "".join(f'<li><a href="{escape(name)}.md">{escape(name)}</a></li>' for name in available())
    return _page("Runbooks", f"<h1>Runbooks</h1><ul>{items}</ul>")


@bp.get("/<name>")
def runbook(name: str):
    stem = name[:-3] if name.endswith(".md") else name
    path = available().get(stem) if _NAME.match(stem) else None
    if path is None:
        abort(404, description="no such runbook")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        abort(404, description="no such runbook")
    if request.args.get("raw"):
        resp = Response(text, mimetype="text/plain")
        resp.headers["Content-Security-Policy"] = CSP
        return resp
    return _page(stem, render(text))
