"""/runbooks (issue 14): every alert's runbook_url points at a runbook the receiver serves;
unknown names and traversal are 404; Markdown is rendered without raw HTML; no credential needed."""
from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from alert_rules import build
from core.config import defaults, load_data
from stack import runtime
from tests.support import receiver as T
from webhook_receiver.app import close_app, create_app
from webhook_receiver.runbooks import DEFAULT_DIR

pytestmark = pytest.mark.integration


@pytest.fixture
def client(pg_db):
    app = create_app(T.config(pg_db, receiver={"api": {"anonymous_read": False}}))
    yield app.test_client()
    close_app(app)


def rendered_runbook_urls(cfg: dict) -> dict[str, str]:
    return {r["alert"]: r["annotations"]["runbook_url"] for _, _, r in build.all_rules(cfg) if "alert" in r}


def test_every_alert_links_a_runbook_this_receiver_serves(client, tmp_path):
    # the rules as `opsstack up` renders them: the base is this receiver's own URL
    cfg = defaults()
    cfg["stack"]["run_dir"] = str(tmp_path / "run")
    resolved = runtime.resolve(cfg, persist=False)
    receiver = resolved["runtime"]["urls"]["receiver"]
    urls = rendered_runbook_urls(resolved)
    assert len(urls) >= 20
    for name, url in urls.items():
        assert url == f"{receiver}/runbooks/{name}.md"
        assert (DEFAULT_DIR / f"{name}.md").is_file(), name
        r = client.get(urlsplit(url).path)  # no credential
        assert r.status_code == 200, (name, r.status_code)
        assert f"<h1>{name}</h1>" in r.get_data(as_text=True)
    # the committed files (docker compose) point at the receiver compose publishes
    assert set(rendered_runbook_urls(defaults()).values()) == {
        f"http://127.0.0.1:9095/runbooks/{n}.md" for n in urls}
    # a configured base wins
    own = load_data({"alerts": {"runbook_base_url": "https://wiki.example.invalid/rb/"}})
    assert rendered_runbook_urls(own)["ServiceDown"] == "https://wiki.example.invalid/rb/ServiceDown.md"


def test_index_raw_and_headers(client):
    r = client.get("/runbooks/")
    assert r.status_code == 200 and 'href="ServiceDown.md"' in r.get_data(as_text=True)
    assert "script-src 'none'" in r.headers["Content-Security-Policy"]
    r = client.get("/runbooks/ServiceDown?raw=1")
    assert r.status_code == 200 and r.mimetype == "text/plain"
    assert r.get_data(as_text=True) == (DEFAULT_DIR / "ServiceDown.md").read_text()
    # the API beside it still wants a credential
    assert client.get("/api/v1/tickets").status_code in (401, 403)


BAD = ["/runbooks/NoSuchAlert.md", "/runbooks/..%2FREADME.md", "/runbooks/..%2f..%2fREADME.md",
       "/runbooks/%2e%2e", "/runbooks/../../README.md", "/runbooks/.md", "/runbooks/development",
       "/runbooks/ServiceDown.md%00", "/runbooks/servicedown.md", "/runbooks/ServiceDown.md.bak",
       "/runbooks/%2Fetc%2Fpasswd", "/runbooks/ServiceDown.md/x", "/runbooks/..", "/runbooks/%5c..%5cREADME.md"]


def test_unknown_and_traversal_names_are_404(client):
    for path in BAD:
        r = client.get(path)
        assert r.status_code == 404, path
        assert b"root:" not in r.data and b"# opsstack" not in r.data, path


def test_markdown_is_rendered_without_raw_html(pg_db, tmp_path):
    (tmp_path / "Evil.md").write_text(
        "# Evil <script>alert(1)</script>\n\n<img src=x onerror=alert(2)>\n\n"
        "[click](javascript:alert(3)) [ok](https://example.invalid/x) [next](ServiceDown.md)\n")
    (tmp_path / "notes.txt").write_text("not a runbook")
    app = create_app(T.config(pg_db, receiver={"runbooks_dir": str(tmp_path)}))
    try:
        c = app.test_client()
        html = c.get("/runbooks/Evil.md").get_data(as_text=True)
        assert "<script" not in html and "<img" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert 'href="javascript' not in html and "[click](javascript:alert(3))" in html  # left as text
        assert 'href="https://example.invalid/x"' in html and 'href="ServiceDown.md"' in html
        assert c.get("/runbooks/notes.txt").status_code == 404
        assert c.get("/runbooks/ServiceDown.md").status_code == 404  # only this folder's files
    finally:
        close_app(app)
