"""docker: restart or replace a container through the Docker Engine API.

Talks HTTP over the daemon's unix socket (default /var/run/docker.sock) or TCP, with the
API version in the path (/v1.43/...), as documented for the Engine API.

Operations (params: container = name or id):
- restart: POST /containers/{id}/restart?t=N
- start / stop: POST /containers/{id}/start | /stop?t=N (304 = already so, fine)
- replace: GET /containers/{id}/json, POST /containers/{id}/rename?name=<old>-replaced-<ts>,
  POST /containers/create?name=<name> from the old Config + HostConfig (+ the network
  endpoint), POST /containers/{id}/stop on the old one, POST /containers/{new}/start,
  DELETE /containers/{old}?force=true. With ``pull: true`` it first pulls the image
  (POST /images/create?fromImage=...&tag=...).
"""
from __future__ import annotations

import http.client
import json
import socket
import time
from urllib.parse import quote, urlencode, urlsplit

from .base import Backend, BackendError, BackendTimeout, Result, path_segment, truncate


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self._path)
        self.sock = s


class DockerClient:
    def __init__(self, url: str, api_version: str, timeout: float):
        self.url = urlsplit(url)
        self.version = api_version.lstrip("v")
        self.timeout = timeout
        if self.url.scheme not in ("unix", "http", "https", "tcp"):
            raise BackendError(f"docker url must be unix://, http:// or https://, got {url!r}")

    def _conn(self) -> http.client.HTTPConnection:
        if self.url.scheme == "unix":
            return _UnixConnection(self.url.path, self.timeout)
        host, port = self.url.hostname, self.url.port
        if self.url.scheme == "https":
            return http.client.HTTPSConnection(host, port or 2376, timeout=self.timeout)
        return http.client.HTTPConnection(host, port or 2375, timeout=self.timeout)

    def call(self, method: str, path: str, query: dict | None = None, body=None) -> tuple[int, object]:
        full = f"/v{self.version}{path}" + (f"?{urlencode(query)}" if query else "")
        headers = {"Host": "docker"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn = self._conn()
        try:
            conn.request(method, full, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except TimeoutError:
            raise BackendTimeout(f"docker {method} {full}: timed out after {self.timeout:g}s") from None
        except (OSError, http.client.HTTPException) as exc:
            raise BackendError(f"docker {method} {full}: {exc}") from None
        finally:
            conn.close()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return resp.status, parsed

    def expect(self, method, path, ok=(200, 201, 204, 304), **kw):
        status, body = self.call(method, path, **kw)
        if status not in ok:
            msg = body.get("message") if isinstance(body, dict) else body
            raise BackendError(f"docker {method} {path} -> {status}: {msg}")
        return status, body


class DockerBackend(Backend):
    name = "docker"

    def describe(self, operation, params):
        return {"backend": "docker", "operation": operation, "container": params["container"],
                "daemon": self.settings.get("url")}

    def run(self, operation, params, timeout):
        c = DockerClient(self.settings["url"], self.settings["api_version"], timeout)
        name = path_segment(params["container"], "container")
        t = int(params.get("stop_timeout", self.settings.get("stop_timeout", 10)))
        if operation == "restart":
            c.expect("POST", f"/containers/{name}/restart", ok=(204,), query={"t": t})
            return self._state(c, name, f"restarted {params['container']}")
        if operation == "start":
            st, _ = c.expect("POST", f"/containers/{name}/start", ok=(204, 304))
            return self._state(c, name, "started" if st == 204 else "already running")
        if operation == "stop":
            st, _ = c.expect("POST", f"/containers/{name}/stop", ok=(204, 304), query={"t": t})
            return Result(True, "stopped" if st == 204 else "already stopped")
        if operation == "replace":
            return self._replace(c, name, params, t)
        raise BackendError(f"docker has no operation {operation!r}")

    def _state(self, c: DockerClient, name: str, what: str) -> Result:
        _, info = c.expect("GET", f"/containers/{name}/json", ok=(200,))
        state = (info or {}).get("State", {})
        running = bool(state.get("Running"))
        return Result(running, f"{what}; running={running} status={state.get('Status')}",
                      {"id": (info or {}).get("Id"), "status": state.get("Status")})

    def _replace(self, c: DockerClient, name: str, params: dict, t: int) -> Result:
        _, old = c.expect("GET", f"/containers/{name}/json", ok=(200,))
        old_id = old["Id"]
        cname = old["Name"].lstrip("/")
        config = dict(old.get("Config") or {})
        image = config.get("Image")
        steps = []
        if params.get("pull") and image:
            repo, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "latest")
            c.expect("POST", "/images/create", ok=(200,), query={"fromImage": repo or image, "tag": tag or "latest"})
            steps.append(f"pulled {image}")
        if config.get("Hostname") and old_id.startswith(config["Hostname"]):
            config.pop("Hostname")
        body = {**config, "HostConfig": old.get("HostConfig") or {}}
        mode = (old.get("HostConfig") or {}).get("NetworkMode")
        nets = (old.get("NetworkSettings") or {}).get("Networks") or {}
        if mode in nets:
            ep = nets[mode] or {}
            body["NetworkingConfig"] = {"EndpointsConfig": {mode: {
                k: ep[k] for k in ("Aliases", "IPAMConfig", "Links") if ep.get(k)}}}
        aside = f"{cname}-replaced-{int(time.time())}"
        c.expect("POST", f"/containers/{old_id}/rename", ok=(204,), query={"name": aside})
        steps.append(f"renamed old {old_id[:12]} to {aside}")
        try:
            _, created = c.expect("POST", "/containers/create", ok=(201,), query={"name": cname}, body=body)
        except BackendError:
            c.call("POST", f"/containers/{old_id}/rename", query={"name": cname})
            raise
        new_id = created["Id"]
        steps.append(f"created {new_id[:12]}")
        c.expect("POST", f"/containers/{old_id}/stop", ok=(204, 304), query={"t": t})
        steps.append("stopped old")
        c.expect("POST", f"/containers/{new_id}/start", ok=(204, 304))
        steps.append("started new")
        c.expect("DELETE", f"/containers/{old_id}", ok=(204, 404), query={"force": "true"})
        steps.append("removed old")
        res = self._state(c, quote(cname, safe=""), "; ".join(steps))
        res.detail.update({"old_id": old_id, "new_id": new_id})
        res.output = truncate(res.output)
        return res
