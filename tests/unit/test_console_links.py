"""safe_href: the one rule for links built from alert data in the console (pure)."""
from __future__ import annotations

import pytest

from webhook_receiver.console import _safe_next, safe_href


@pytest.mark.parametrize("url", [
    "https://example.invalid/runbooks/ServiceDown.md",
    "http://127.0.0.1:9090/graph?g0.expr=up",
    "HTTPS://Example.invalid/x#frag",
    "/api/v1/tickets/1/attachments/graph.png",
])
def test_http_and_site_paths_are_links(url):
    assert safe_href(url) == url


@pytest.mark.parametrize("url", [
    "javascript:alert(1)", "JaVaScRiPt:alert(1)", " javascript:alert(1)", "java\tscript:alert(1)",
    "java\nscript:alert(1)", "\x01javascript:alert(1)", "data:text/html,<script>alert(1)</script>",
    "vbscript:msgbox(1)", "//evil.example/x", "/\\evil.example", "https:evil.example", "http:///x",
    "runbooks/x.md", "ftp://example.invalid/x", "https://exa mple.invalid/", "https://[::1", "",
    None, 42, "https://example.invalid/" + "a" * 3000,
])
def test_everything_else_is_text(url):
    assert safe_href(url) is None


@pytest.mark.parametrize("nxt,out", [
    ("/console/tickets/3", "/console/tickets/3"), ("/console/?group=2", "/console/?group=2"),
    ("https://evil.example/", "/console/"), ("//evil.example/console/", "/console/"),
    ("/console//evil.example", "/console/"), ("/console/\\evil", "/console/"), ("", "/console/"),
])
def test_login_redirects_stay_in_the_console(nxt, out):
    assert _safe_next(nxt) == out
