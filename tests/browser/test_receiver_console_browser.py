"""The incident console in headless Chromium: log in, see a ticket, acknowledge it, and the
escalation stops (while an unacknowledged ticket beside it escalates); a javascript: runbook is
no link, and the pages work under their Content-Security-Policy."""
from __future__ import annotations

import json
import os
import shutil
import time
from datetime import timedelta

import pytest
import requests

from tests.support import receiver as T
from tests.support.wait import wait_for
from webhook_receiver import escalation, scheduler
from webhook_receiver.app import close_app, create_app, state
from webhook_receiver.auth import hash_password

pytestmark = [pytest.mark.browser, pytest.mark.integration]

CHROMIUM = os.environ.get("OPSSTACK_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("OPSSTACK_CHROMEDRIVER", "/usr/bin/chromedriver")
JSON_AUTH = {**T.auth(), "Content-Type": "application/json"}


@pytest.fixture
def browser():
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.skip("chromium / chromedriver not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-dev-shm-usage", "--window-size=1280,900"):
        opts.add_argument(a)
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    drv.implicitly_wait(5)
    yield drv
    drv.quit()


@pytest.fixture
def receiver(pg_db, tmp_path):
    data = {"database": {"url": pg_db}, "receiver": {"token": T.TOKEN, "console": {"users": [
        {"name": "alice", "password_hash": hash_password("s3cret-pass"), "display_name": "Alice"}]}}}
    rcv = T.ReceiverProcess(data, tmp_path / "rcv").start()
    yield rcv
    rcv.stop()


# the receiver fixtures come before `browser` in each test's arguments: pytest tears down in
# reverse order, so Chromium quits (closing its keep-alive connections) before the receiver
# stops; the other way round, gunicorn's graceful stop waits its 5 s keepalive on them.
def test_login_see_ticket_acknowledge_stops_escalation(receiver, browser, pg_db):
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    for svc in ("user-app", "gate-management"):  # two Alertmanager groups: two incidents
        body = T.payload([T.alert(service=svc)], group_key='{}:{alertname="ServiceDown",service="%s"}' % svc)
        r = requests.post(receiver.url + "/webhook/alertmanager", data=json.dumps(body), headers=JSON_AUTH, timeout=5)
        assert r.status_code == 200

    def both_open():  # queued processing: the tickets appear right after
        got = {t["service"]: t["id"] for t in requests.get(receiver.url + "/api/v1/tickets", headers=T.auth(),
                                                            timeout=5).json()}
        return got if len(got) == 2 else None
    tickets = wait_for(both_open, timeout=60)
    acked, control = tickets["user-app"], tickets["gate-management"]

    browser.get(receiver.url + "/console/")
    assert "/console/login" in browser.current_url
    browser.find_element(By.ID, "username").send_keys("alice")
    browser.find_element(By.ID, "password").send_keys("s3cret-pass")
    browser.find_element(By.ID, "login").click()

    row = browser.find_element(By.ID, f"ticket-{acked}")
    assert "ServiceDown" in row.text and "ops-oncall" in row.text and "L1 ops team" in row.text
    assert row.find_element(By.CLASS_NAME, "next").text.startswith("in ")
    row.find_element(By.LINK_TEXT, f"#{acked}").click()
    WebDriverWait(browser, 15).until(EC.presence_of_element_located((By.ID, "acknowledge")))
    assert browser.find_element(By.ID, "status").text == "open"
    assert browser.find_element(By.ID, "alert-counts").text.startswith("1 alert(s) in this incident: 1 firing")
    browser.find_element(By.ID, "acknowledge").click()
    # the click navigates (POST, redirect): the old page's nodes vanish while the wait looks at them,
    # which Chromium reports as a generic WebDriverException; keep waiting through it
    WebDriverWait(browser, 15, ignored_exceptions=(WebDriverException,)).until(
        EC.text_to_be_present_in_element((By.ID, "status"), "acknowledged"))
    assert browser.find_element(By.ID, "status").text == "acknowledged"
    assert browser.find_element(By.ID, "next-escalation").text.startswith("stopped")
    assert "acknowledged" in browser.find_element(By.ID, "timeline").text

    # the escalation really stopped: run the scheduler far past every deadline
    app = create_app(T.config(pg_db))
    try:
        scheduler.tick(state(app), now=escalation.utcnow() + timedelta(hours=3))
    finally:
        close_app(app)
    a = requests.get(f"{receiver.url}/api/v1/tickets/{acked}", headers=T.auth(), timeout=5).json()
    c = requests.get(f"{receiver.url}/api/v1/tickets/{control}", headers=T.auth(), timeout=5).json()
    assert (a["status"], a["level"], a["acknowledged_by"]) == ("acknowledged", 1, "alice")
    assert not [e for e in a["events"] if e["kind"] == "escalated"]
    assert c["level"] > 1  # the one nobody acknowledged escalated


@pytest.fixture
def private_receiver(pg_db, tmp_path):
    """Anonymous API reads off, inline processing, one console user (bob)."""
    data = {"database": {"url": pg_db}, "receiver": {"token": T.TOKEN, "processing": "inline", "api": {
        "anonymous_read": False}, "console": {"users": [{"name": "bob", "password_hash": hash_password("pw-bob")}]}}}
    with T.ReceiverProcess(data, tmp_path / "rcv") as rcv:
        yield rcv


def test_ticket_page_shows_the_enrichment_graph(private_receiver, browser, pg_db):
    """The graph attachment loads as an image in a real browser session on the real server, with
    anonymous API reads off: the console login is what lets the <img> through."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from webhook_receiver import enrichment
    from webhook_receiver.remediation import store

    rcv = private_receiver
    r = requests.post(rcv.url + "/webhook/alertmanager", data=json.dumps(T.payload([T.alert()])),
                      headers=JSON_AUTH, timeout=5)
    tid = r.json()["opened"][0]
    now = escalation.utcnow()
    series = [{"metric": {"service": "user-app"},
               "values": [[(now - timedelta(minutes=5 - i)).timestamp(), str(i % 2)] for i in range(6)]}]
    png = enrichment.draw_png(series, "ServiceDown", "up", now - timedelta(minutes=2), 640, 240)
    with store.connect(pg_db, autocommit=True) as conn:
        enrichment.save(conn, tid, "graph.png", png, {"expr": "up == 0", "graph_expr": "up"})
        enrichment.save(conn, tid, "logs.txt", b"level=error msg=\"connection refused\"")
    assert requests.get(f"{rcv.url}/api/v1/tickets/{tid}/attachments/graph.png", timeout=5).status_code == 401

    browser.get(f"{rcv.url}/console/tickets/{tid}")
    browser.find_element(By.ID, "username").send_keys("bob")
    browser.find_element(By.ID, "password").send_keys("pw-bob")
    browser.find_element(By.ID, "login").click()
    img = browser.find_element(By.CSS_SELECTOR, "#graph img")
    WebDriverWait(browser, 15).until(lambda d: d.execute_script(
        "return arguments[0].complete && arguments[0].naturalWidth > 0", img))
    assert browser.execute_script("return arguments[0].naturalWidth", img) == 640
    assert 'connection refused' in browser.find_element(By.ID, "logs").text


def test_javascript_runbook_is_no_link_and_the_console_works_under_csp(receiver, browser):
    """The attack of issue 10: a runbook_url (and a generatorURL) of javascript: that resolves the
    critical ticket when a logged-in operator clicks it. It is shown as text, clicking it does
    nothing; the CSP is sent and enforced, and the console still works under it."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    payload = "javascript:document.getElementById('resolve').click()"
    a = T.alert(service="user-app")
    a["annotations"]["runbook_url"] = payload
    a["generatorURL"] = payload
    r = requests.post(receiver.url + "/webhook/alertmanager", data=json.dumps(T.payload([a])), headers=JSON_AUTH,
                      timeout=5)
    assert r.status_code == 200
    deadline = time.monotonic() + 20
    while True:  # queued processing: the ticket appears right after
        found = requests.get(receiver.url + "/api/v1/tickets", headers=T.auth(), timeout=5).json()
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    tid = found[0]["id"]

    r = requests.get(receiver.url + "/console/login", timeout=5)
    csp = r.headers["Content-Security-Policy"]
    assert "script-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert r.headers["X-Frame-Options"] == "DENY" and r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Referrer-Policy"] == "no-referrer"

    browser.get(f"{receiver.url}/console/tickets/{tid}")
    browser.find_element(By.ID, "username").send_keys("alice")
    browser.find_element(By.ID, "password").send_keys("s3cret-pass")
    browser.find_element(By.ID, "login").click()
    WebDriverWait(browser, 15).until(EC.presence_of_element_located((By.ID, "acknowledge")))
    assert browser.find_element(By.ID, "status").text == "open"

    hrefs = browser.execute_script("return Array.from(document.querySelectorAll('[href]'), e => e.href)")
    assert hrefs and not [h for h in hrefs if not h.startswith(("http://", "https://"))], hrefs
    # the page is loaded (the wait above) and runs no script: no implicit wait for an <a> to appear
    browser.implicitly_wait(0)
    try:
        links = {box: browser.find_element(By.ID, box).find_elements(By.TAG_NAME, "a") for box in ("runbook", "source")}
    finally:
        browser.implicitly_wait(5)
    for box in ("runbook", "source"):
        el = browser.find_element(By.ID, box)
        assert links[box] == [] and payload in el.text
        el.find_element(By.TAG_NAME, "span").click()  # the operator clicks the "link"
    assert browser.find_element(By.ID, "status").text == "open"
    assert requests.get(f"{receiver.url}/api/v1/tickets/{tid}", headers=T.auth(), timeout=5).json()["status"] == "open"

    # the policy is enforced: inline script does not run; the console's own stylesheet applies
    ran = browser.execute_script(
        "var s = document.createElement('script'); s.textContent = 'window.__inline_ran = true;';"
        "document.body.appendChild(s); return window.__inline_ran === true;")
    assert ran is False
    assert browser.execute_script(
        "return getComputedStyle(document.querySelector('header')).backgroundColor") == "rgb(29, 35, 41)"

    # and the console works under it: acknowledge
    browser.find_element(By.ID, "acknowledge").click()
    WebDriverWait(browser, 15, ignored_exceptions=(WebDriverException,)).until(
        EC.text_to_be_present_in_element((By.ID, "status"), "acknowledged"))
    t = requests.get(f"{receiver.url}/api/v1/tickets/{tid}", headers=T.auth(), timeout=5).json()
    assert (t["status"], t["acknowledged_by"]) == ("acknowledged", "alice")
