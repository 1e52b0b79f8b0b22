"""The one fake HTTP server of the tests (tests/support/fakehttp.py): routes, recording, faults."""
from __future__ import annotations

import http.client
import socket

import pytest
import requests

from tests.support.fakehttp import FakeHTTP

pytestmark = pytest.mark.integration


def test_routes_canned_replies_handlers_and_recording():
    def echo(req):
        return 201, {"method": req.method, "q": req.query, "body": req.json}, {"X-Echo": "1"}

    with FakeHTTP({"GET /ping": (200, "pong"), "POST /items/*": echo, "/raw": b"\x00\x01"}) as srv:
        r = requests.get(srv.url + "/ping", timeout=10)
        assert (r.status_code, r.text, r.headers["Content-Type"]) == (200, "pong", "text/plain; charset=utf-8")
        r = requests.post(srv.url + "/items/7?a=1&a=2", json={"x": 1}, headers={"X-Key": "k"}, timeout=10)
        assert r.status_code == 201 and r.headers["X-Echo"] == "1"
        assert r.json() == {"method": "POST", "q": {"a": "1"}, "body": {"x": 1}}
        assert requests.delete(srv.url + "/raw", timeout=10).content == b"\x00\x01"  # any method
        r = requests.get(srv.url + "/items/7", timeout=10)  # POST-only route: not found
        assert r.status_code == 404 and "no route for GET /items/7" in r.text
        [post] = srv.find("POST", "/items/*")
        assert post.query_all == {"a": ["1", "2"]} and post.headers.get("x-key") == "k" and post.json == {"x": 1}
        assert [r.method for r in srv.requests] == ["GET", "POST", "DELETE", "GET"]
        assert srv.wait_for(4, timeout=1) and srv.errors == []
        srv.clear()
        assert srv.requests == []


def test_guard_answers_before_routes_and_faults():
    def guard(req):
        return None if req.headers.get("Authorization") == "Bearer t" else (401, {"error": "auth"})

    with FakeHTTP({"*": 200}, guard=guard) as srv:
        srv.fail(status=503)
        assert requests.get(srv.url + "/x", timeout=10).status_code == 401  # the fault is not used up
        assert requests.get(srv.url + "/x", headers={"Authorization": "Bearer t"}, timeout=10).status_code == 503
        assert requests.get(srv.url + "/x", headers={"Authorization": "Bearer t"}, timeout=10).status_code == 200


def test_fail_apply_runs_the_route_and_loses_the_answer():
    made = []

    def create(req):
        made.append(req.json)
        return 201, {"id": len(made)}

    with FakeHTTP({"POST /things": create}) as srv:
        srv.fail("POST", "/things", 500, {"error": "lost"}, apply=True)
        srv.fail("POST", "/things", 502, times=2)
        r = requests.post(srv.url + "/things", json={"n": 1}, timeout=10)
        assert r.status_code == 500 and r.json() == {"error": "lost"} and made == [{"n": 1}]
        assert [requests.post(srv.url + "/things", json={"n": 2}, timeout=10).status_code for _ in range(3)] == \
            [502, 502, 201]
        assert made == [{"n": 1}, {"n": 2}]


def test_drop_closes_without_an_answer():
    with FakeHTTP({"*": 200}) as srv:
        srv.drop(path="/gone")
        with pytest.raises(requests.ConnectionError):
            requests.get(srv.url + "/gone", timeout=10)
        assert requests.get(srv.url + "/gone", timeout=10).status_code == 200


def test_delay_hang_and_release():
    with FakeHTTP({"*": 200}) as srv:
        srv.delay(30, path="/slow", times=1)
        with pytest.raises(requests.Timeout):
            requests.get(srv.url + "/slow", timeout=0.3)
        srv.hang("GET", "/held")
        with pytest.raises(requests.Timeout):
            requests.get(srv.url + "/held", timeout=0.3)
        conn = http.client.HTTPConnection(srv.host, srv.port, timeout=30)
        conn.request("GET", "/held")
        srv.wait_for(2, "GET", "/held")
        srv.release()  # the held request goes on; no more hanging
        assert conn.getresponse().status == 200
        conn.close()
        assert requests.get(srv.url + "/held", timeout=10).status_code == 200


def test_a_handler_that_raises_answers_500_and_is_recorded():
    with FakeHTTP({"*": lambda req: 1 / 0}) as srv:
        r = requests.get(srv.url + "/x", timeout=10)
        assert r.status_code == 500 and len(srv.errors) == 1 and "ZeroDivisionError" in srv.errors[0]


def test_unix_socket_and_stop_frees_the_port(tmp_path):
    path = tmp_path / "api.sock"
    with FakeHTTP({"GET /v1/ping": {"ok": True}}, unix_path=path) as srv:
        assert srv.url == f"unix://{path}"
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(path))
        s.sendall(b"GET /v1/ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        s.close()
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b'{"ok": true}')
    srv = FakeHTTP().start()
    port = srv.port
    srv.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/", timeout=5)
