"""http and command backends for real; docker and kubernetes against local servers that check
requests against the documented Docker Engine API and Kubernetes API shapes (routes of the one
fake HTTP server, tests/support/fakehttp.py)."""
from __future__ import annotations

import os
import sys
from datetime import datetime

import pytest

from core.config import load_data
from tests.support.fakehttp import FakeHTTP
from webhook_receiver.remediation.backends import BackendError, BackendTimeout, make

pytestmark = pytest.mark.integration


# ---------------------------------------------------------------- http backend (a real server)
def test_http_backend_calls_each_admin_hook():
    def route(req):
        return 200, {"healthy": req.json["healthy"]}

    with FakeHTTP({"/admin/route": route}) as a, FakeHTTP({"/admin/route": route}) as b:
        cfg = load_data({"remediation": {"backends": {"http": {"headers": {"X-Token": "abc"}}}}})
        be = make("http", cfg)
        params = {"url": [a.url, b.url], "path": "/admin/route", "json": {"healthy": ["tokyo"]}}
        assert be.describe("request", params)["url"] == [a.url + "/admin/route", b.url + "/admin/route"]
        res = be.run("request", params, timeout=5)
        assert res.ok and res.detail == {"status": [200, 200]}
        seen = [(r.method, r.path, r.json, r.headers.get("X-Token")) for r in a.requests + b.requests]
        assert seen == [("POST", "/admin/route", {"healthy": ["tokyo"]}, "abc")] * 2
        bad = be.run("request", {"url": a.url + "/nope"}, timeout=5)
        assert not bad.ok and "-> 404" in bad.output
        assert be.run("request", {"url": a.url + "/nope", "expect": [404]}, timeout=5).ok


def test_http_backend_timeout_and_refused():
    with FakeHTTP({"*": (200, {})}) as slow:
        slow.hang(timeout=5)  # released when the server stops
        be = make("http", load_data({}))
        with pytest.raises(BackendTimeout):
            be.run("request", {"url": slow.url + "/x"}, timeout=0.3)
    from core.procs import free_port

    with pytest.raises(BackendError, match="ConnectionError"):
        make("http", load_data({})).run("request", {"url": f"http://127.0.0.1:{free_port()}/x"}, timeout=2)


# ---------------------------------------------------------------- command backend (for real)
def test_command_backend_runs_without_a_shell(tmp_path):
    be = make("command", load_data({}))
    f = tmp_path / "fill-00001.bin"
    f.write_bytes(b"x" * 100)
    res = be.run("run", {"argv": ["find", str(tmp_path), "-name", "fill-*.bin", "-delete"]}, timeout=10)
    assert res.ok and not f.exists() and res.detail == {"exit_code": 0}
    res = be.run("run", {"argv": [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"]}, timeout=10)
    assert not res.ok and "exit 3" in res.output and "boom" in res.output
    res = be.run("run", {"argv": ["echo", "$HOME;", "rm", "-rf"]}, timeout=10)
    assert "$HOME; rm -rf" in res.output  # no shell: nothing expanded, nothing chained


def test_command_backend_timeout_kills_the_process_group(tmp_path):
    be = make("command", load_data({}))
    marker = tmp_path / "child.pid"
    code = (f"import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
            f"open({str(marker)!r}, 'w').write(str(p.pid)); time.sleep(60)")
    with pytest.raises(BackendTimeout, match="timed out"):
        be.run("run", {"argv": [sys.executable, "-c", code]}, timeout=1.5)
    child = int(marker.read_text())
    for _ in range(50):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        import time
        time.sleep(0.05)
    else:
        pytest.fail("the child survived the timeout")


def test_command_backend_can_be_disabled():
    be = make("command", load_data({"remediation": {"backends": {"command": {"enabled": False}}}}))
    with pytest.raises(BackendError, match="disabled"):
        be.run("run", {"argv": ["true"]}, timeout=5)


# ---------------------------------------------------------------- docker (Engine API shapes)
class FakeDocker:
    """Docker Engine API v1.43: containers restart/start/stop/json/rename/create/delete."""

    def __init__(self):
        self.containers = {"a" * 64: {"name": "web", "running": True}}
        self.problems: list[str] = []

    def find(self, ref):
        for cid, c in self.containers.items():
            if ref in (cid, cid[:12], c["name"]):
                return cid, c
        return None, None

    def __call__(self, req):
        m, path, q, h, body = req.method, req.path, req.query, req.headers, req.json
        if not path.startswith("/v1.43/"):
            self.problems.append(f"unversioned path {path}")
            return 400, {"message": "bad version"}
        parts = path[len("/v1.43"):].strip("/").split("/")
        if parts[0] != "containers":
            return 404, {"message": "page not found"}
        if parts[1:] == ["create"] and m == "POST":
            if h.get("Content-Type") != "application/json" or not isinstance(body, dict):
                self.problems.append("create without a JSON body")
                return 400, {"message": "Content-Type must be application/json"}
            if "name" not in q or any(c["name"] == q["name"] for c in self.containers.values()):
                return 409, {"message": f"Conflict. The container name \"/{q.get('name')}\" is already in use"}
            if body.get("Image") != "nginx:1.25" or body.get("HostConfig", {}).get("NetworkMode") != "appnet":
                self.problems.append(f"create body lost the old config: {body}")
            if body.get("Hostname") == "a" * 12:
                self.problems.append("the old container's hostname was copied")
            eps = body.get("NetworkingConfig", {}).get("EndpointsConfig", {})
            if eps != {"appnet": {"Aliases": ["web"]}}:
                self.problems.append(f"network endpoint not kept: {eps}")
            new = "b" * 64
            self.containers[new] = {"name": q["name"], "running": False}
            return 201, {"Id": new, "Warnings": []}
        cid, c = self.find(parts[1])
        if c is None:
            return 404, {"message": f"No such container: {parts[1]}"}
        op = parts[2] if len(parts) > 2 else None
        if m == "GET" and op == "json":
            return 200, {"Id": cid, "Name": "/" + c["name"],
                         "State": {"Running": c["running"], "Status": "running" if c["running"] else "exited"},
                         "Config": {"Hostname": cid[:12], "Image": "nginx:1.25", "Env": ["A=1"],
                                    "Labels": {"app": "web"}},
                         "HostConfig": {"NetworkMode": "appnet", "RestartPolicy": {"Name": "always"}},
                         "NetworkSettings": {"Networks": {"appnet": {"Aliases": ["web"], "IPAMConfig": None,
                                                                     "IPAddress": "172.18.0.2"}}}}
        if m == "POST" and op == "restart":
            if q.get("t") != "10":
                self.problems.append(f"restart without t: {q}")
            c["running"] = True
            return 204, None
        if m == "POST" and op == "start":
            if c["running"]:
                return 304, None
            c["running"] = True
            return 204, None
        if m == "POST" and op == "stop":
            if not c["running"]:
                return 304, None
            c["running"] = False
            return 204, None
        if m == "POST" and op == "rename":
            c["name"] = q["name"]
            return 204, None
        if m == "DELETE" and op is None:
            if c["running"] and q.get("force") != "true":
                return 409, {"message": "cannot remove a running container"}
            del self.containers[cid]
            return 204, None
        return 404, {"message": "page not found"}


@pytest.mark.parametrize("over_unix", [True, False])
def test_docker_restart_and_replace(tmp_path, over_unix):
    api = FakeDocker()
    with FakeHTTP({"*": api}, unix_path=str(tmp_path / "docker.sock") if over_unix else None) as srv:
        be = make("docker", load_data({"remediation": {"backends": {"docker": {"url": srv.url}}}}))
        res = be.run("restart", {"container": "web"}, timeout=5)
        assert res.ok and "running=True" in res.output
        assert [(r.method, r.path) for r in srv.requests] == [("POST", "/v1.43/containers/web/restart"),
                                                              ("GET", "/v1.43/containers/web/json")]
        srv.clear()
        res = be.run("replace", {"container": "web"}, timeout=5)
        assert res.ok, res.output
        assert api.problems == []
        assert [(r.method, r.path.split("/")[-1]) for r in srv.requests] == [
            ("GET", "json"), ("POST", "rename"), ("POST", "create"), ("POST", "stop"), ("POST", "start"),
            ("DELETE", "a" * 64), ("GET", "json")]
        assert list(api.containers) == ["b" * 64] and api.containers["b" * 64] == {"name": "web", "running": True}
        with pytest.raises(BackendError, match="404: No such container: nope"):
            be.run("restart", {"container": "nope"}, timeout=5)


# ---------------------------------------------------------------- kubernetes (API shapes)
class FakeKube:
    def __init__(self):
        self.problems: list[str] = []
        self.pods = ["web-7d9c-abcde", "web-7d9c-fghij"]
        self.replicas = 2
        self.annotations: dict = {}

    def __call__(self, req):
        m, path, q, h, body = req.method, req.path, req.query, req.headers, req.json
        if h.get("Authorization") != "Bearer kube-token":
            return 401, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "Unauthorized",
                         "code": 401}
        if path == "/apis/apps/v1/namespaces/shop/deployments/web" and m == "PATCH":
            if h.get("Content-Type") != "application/strategic-merge-patch+json":
                self.problems.append(f"restart patch type {h.get('Content-Type')}")
            ann = body["spec"]["template"]["metadata"]["annotations"]
            datetime.fromisoformat(ann["kubectl.kubernetes.io/restartedAt"])  # RFC 3339
            if set(body) != {"spec"}:
                self.problems.append(f"restart patch touches more than the template: {body}")
            self.annotations.update(ann)
            return 200, {"kind": "Deployment", "apiVersion": "apps/v1",
                         "metadata": {"name": "web", "namespace": "shop", "generation": 8},
                         "spec": {"template": {"metadata": {"annotations": self.annotations}}}}
        if path == "/apis/apps/v1/namespaces/shop/deployments/web/scale" and m == "PATCH":
            if h.get("Content-Type") != "application/merge-patch+json" or body != {"spec": {"replicas": 3}}:
                self.problems.append(f"scale patch {h.get('Content-Type')} {body}")
            self.replicas = body["spec"]["replicas"]
            return 200, {"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": {"name": "web"},
                         "spec": {"replicas": self.replicas}, "status": {"replicas": 2}}
        if path == "/api/v1/namespaces/shop/pods" and m == "GET":
            if q.get("labelSelector") != "app=web":
                self.problems.append(f"pod list selector {q}")
            return 200, {"kind": "PodList", "apiVersion": "v1",
                         "items": [{"metadata": {"name": p, "namespace": "shop"}} for p in self.pods]}
        if path.startswith("/api/v1/namespaces/shop/pods/") and m == "DELETE":
            name = path.rsplit("/", 1)[-1]
            if name not in self.pods:
                return 404, {"kind": "Status", "status": "Failure", "message": f'pods "{name}" not found',
                             "code": 404}
            self.pods.remove(name)
            return 200, {"kind": "Pod", "apiVersion": "v1", "metadata": {"name": name}}
        return 404, {"kind": "Status", "status": "Failure", "message": "the server could not find the requested "
                     "resource", "code": 404}


def test_kubernetes_rollout_restart_scale_delete_pod():
    api = FakeKube()
    with FakeHTTP({"*": api}) as srv:
        be = make("kubernetes", load_data({"remediation": {"backends": {"kubernetes": {
            "url": srv.url, "token": "kube-token", "namespace": "shop"}}}}))
        res = be.run("rollout_restart", {"name": "web"}, timeout=5)
        assert res.ok and "generation 8" in res.output and "kubectl.kubernetes.io/restartedAt" in api.annotations
        assert be.run("scale", {"name": "web", "replicas": "3"}, timeout=5).ok and api.replicas == 3
        res = be.run("delete_pod", {"selector": "app=web", "limit": 1}, timeout=5)
        assert res.ok and res.detail == {"pods": ["web-7d9c-abcde"]} and api.pods == ["web-7d9c-fghij"]
        assert be.run("delete_pod", {"pod": "web-7d9c-fghij"}, timeout=5).ok and api.pods == []
        assert not be.run("delete_pod", {"selector": "app=web"}, timeout=5).ok  # nothing left to delete
        with pytest.raises(BackendError, match='404: pods "gone" not found'):
            be.run("delete_pod", {"pod": "gone"}, timeout=5)
        with pytest.raises(BackendError, match="kind must be one of"):
            be.run("rollout_restart", {"name": "web", "kind": "cronjobs"}, timeout=5)
        assert api.problems == []
        other_ns = make("kubernetes", load_data({"remediation": {"backends": {"kubernetes": {
            "url": srv.url, "token": "wrong"}}}}))
        with pytest.raises(BackendError, match="401: Unauthorized"):
            other_ns.run("rollout_restart", {"name": "web"}, timeout=5)
