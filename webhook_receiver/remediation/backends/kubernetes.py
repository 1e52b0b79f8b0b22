"""kubernetes: rollout restart, scale, delete pod through the Kubernetes API.

- rollout_restart (params: name, kind deployments|statefulsets|daemonsets, namespace):
  PATCH /apis/apps/v1/namespaces/{ns}/{kind}/{name} with
  Content-Type application/strategic-merge-patch+json and
  {"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt": <RFC 3339>}}}}}
  (what `kubectl rollout restart` sends).
- scale (params: name, replicas, kind, min, max): PATCH .../{kind}/{name}/scale with
  Content-Type application/merge-patch+json and {"spec":{"replicas": N}}; replicas "+K"/"-K"
  first GETs the scale subresource and changes its spec.replicas by K, within min..max (a change
  that the bounds cancel sends no PATCH).
- delete_pod (params: pod, or selector = a label selector): DELETE /api/v1/namespaces/{ns}/pods/{pod};
  with a selector: GET /api/v1/namespaces/{ns}/pods?labelSelector=... and delete each
  (or only the first `limit`).

Auth: a bearer token (settings.token, else settings.token_file as in-cluster) and the
cluster CA (settings.ca_file) for TLS.
"""
from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import requests

from .base import Backend, BackendError, BackendTimeout, Result, path_segment, truncate

KINDS = ("deployments", "statefulsets", "daemonsets")


class KubernetesBackend(Backend):
    name = "kubernetes"

    def _base(self) -> str:
        url = self.settings.get("url")
        if url:
            return url.rstrip("/")
        host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise BackendError("kubernetes url not set and not running in a cluster")
        return f"https://{host}:{port}"

    def _session(self) -> requests.Session:
        s = requests.Session()
        tok = self.settings.get("token")
        if not tok and self.settings.get("token_file") and Path(self.settings["token_file"]).exists():
            tok = Path(self.settings["token_file"]).read_text().strip()
        if tok:
            s.headers["Authorization"] = f"Bearer {tok}"
        s.headers["Accept"] = "application/json"
        if self.settings.get("ca_file"):
            s.verify = self.settings["ca_file"]
        elif not self.settings.get("verify_tls", True):
            s.verify = False
        return s

    def describe(self, operation, params):
        return {"backend": "kubernetes", "operation": operation,
                "namespace": params.get("namespace", self.settings.get("namespace", "default")),
                **{k: params[k] for k in ("name", "kind", "replicas", "pod", "selector") if k in params}}

    def _call(self, s, method, url, timeout, **kw):
        try:
            r = s.request(method, url, timeout=timeout, **kw)
        except requests.Timeout:
            raise BackendTimeout(f"kubernetes {method} {url}: timed out after {timeout:g}s") from None
        except requests.RequestException as exc:
            raise BackendError(f"kubernetes {method} {url}: {exc}") from None
        if r.status_code >= 300:
            try:
                msg = r.json().get("message", r.text)
            except ValueError:
                msg = r.text
            raise BackendError(f"kubernetes {method} {url} -> {r.status_code}: {truncate(msg, 500)}")
        return r.json() if r.content else {}

    def run(self, operation, params, timeout):
        ns = path_segment(params.get("namespace", self.settings.get("namespace", "default")), "namespace")
        kind = str(params.get("kind", "deployments"))
        if kind not in KINDS:
            raise BackendError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        base = self._base()
        s = self._session()
        if operation == "rollout_restart":
            name = path_segment(params["name"], "name")
            now = datetime.now(timezone.utc).isoformat(timespec="seconds")
            body = {"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": now}}}}}
            obj = self._call(s, "PATCH", f"{base}/apis/apps/v1/namespaces/{ns}/{kind}/{name}", timeout, json=body,
                             headers={"Content-Type": "application/strategic-merge-patch+json"})
            gen = (obj.get("metadata") or {}).get("generation")
            return Result(True, f"rollout restart of {kind}/{params['name']} at {now} (generation {gen})",
                          {"restartedAt": now})
        if operation == "scale":
            name = path_segment(params["name"], "name")
            url = f"{base}/apis/apps/v1/namespaces/{ns}/{kind}/{name}/scale"
            replicas, step = _replicas(params["replicas"])
            before = None
            if step is not None:  # relative ("+1", "-1"): read the scale subresource first
                cur = self._call(s, "GET", url, timeout)
                try:
                    before = int((cur.get("spec") or {}).get("replicas", 0))
                except (TypeError, ValueError):
                    raise BackendError(f"kubernetes {kind}/{params['name']}: no spec.replicas in its scale") from None
                replicas = before + step
            lo = _bound(params.get("min"), "min")
            hi = _bound(params.get("max"), "max")
            replicas = max(replicas, lo if lo is not None else 0)
            if hi is not None:
                replicas = min(replicas, hi)
            if before is not None and replicas == before:
                return Result(True, f"{kind}/{params['name']} stays at {before} (bounds {lo}..{hi})",
                              {"replicas": before, "before": before})
            obj = self._call(s, "PATCH", url, timeout, json={"spec": {"replicas": replicas}},
                             headers={"Content-Type": "application/merge-patch+json"})
            return Result(True, f"scaled {kind}/{params['name']} to {replicas}"
                          f"{'' if before is None else f' from {before}'} "
                          f"(spec {obj.get('spec', {}).get('replicas')})", {"replicas": replicas, "before": before})
        if operation == "delete_pod":
            if "pod" in params:
                pods = [str(params["pod"])]
                path_segment(pods[0], "pod")
            else:
                lst = self._call(s, "GET", f"{base}/api/v1/namespaces/{ns}/pods", timeout,
                                 params={"labelSelector": str(params["selector"])})
                pods = [i["metadata"]["name"] for i in lst.get("items", [])]
                if "limit" in params:
                    pods = pods[: int(params["limit"])]
                if not pods:
                    return Result(False, f"no pod matches {params['selector']!r}")
            for p in pods:
                self._call(s, "DELETE", f"{base}/api/v1/namespaces/{ns}/pods/{path_segment(p, 'pod')}", timeout)
            return Result(True, f"deleted pod(s) {', '.join(pods)}", {"pods": pods})
        raise BackendError(f"kubernetes has no operation {operation!r}")


def _replicas(value) -> tuple[int, int | None]:
    """(count, None) for an absolute count; (0, step) for a relative "+K" / "-K"."""
    if isinstance(value, bool):
        raise BackendError(f"replicas must be a whole number or +K/-K, got {value!r}")
    if isinstance(value, str) and value.strip()[:1] in ("+", "-") and value.strip()[1:].isdigit():
        return 0, int(value.strip())
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise BackendError(f"replicas must be a whole number or +K/-K, got {value!r}") from None
    if n < 0:
        raise BackendError(f"replicas must be >= 0, got {n}")
    return n, None


def _bound(value, what: str) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise BackendError(f"{what} must be a whole number, got {value!r}") from None
