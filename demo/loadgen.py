"""The built-in load generator of a demo service: real HTTP requests to its own regions.

Arrivals are a Poisson process whose rate follows the diurnal curve of the simulated
local time (demo.requests_per_second x traffic_weight x diurnal_factor). Each request
comes from a simulated user: origin region by the geography mix (capital + provinces ->
home region, overseas -> the other regions), client type by the client mix; the traffic
router decides which region's listener it is sent to. Deterministic sequence for a seed.

With the edge running (demo/edge.py), a second stream of the same requests (demo.edge.requests_share
per direct request, drawn from its own random sequence) goes through the service's nginx
listener of that region (TLS where the region serves TLS): nginx + ModSecurity, Varnish, then the
service. It carries a browser's headers and none of the simulated-user headers, so the
service's per-user series count the direct stream only.
"""
from __future__ import annotations

import http.client
import logging
import random
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor

from prometheus_client import Counter

from demo import model

log = logging.getLogger("opsstack.demo.load")

ROUTE_MIX = {
    ("GET", "/api/events"): 0.20,
    ("GET", "/api/events/{id}"): 0.40,
    ("GET", "/api/gates/{id}/status"): 0.15,
    ("POST", "/api/sessions"): 0.10,
    ("GET", "/api/me"): 0.15,
}
EVENT_IDS = 40  # the events on sale now; ids drawn with a skew so a warm cache mostly hits
MAX_IN_FLIGHT = 64
EDGE_UA = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Mobile Safari/537.36"
WORKERS = 16


class LoadGenerator:
    def __init__(self, svc):
        self.svc = svc
        d = svc.demo  # the view of the demo section
        self.rng = random.Random(f"{d.seed}:{svc.name}:load")
        self.weight = svc.svc.traffic_weight
        self.users = model.UserSampler(svc.regions, svc.home, d.geo_mix, d.client_mix)
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="load")
        self._inflight = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="loadgen", daemon=True)
        self.m_out = Counter("opsstack_demo_loadgen_requests", "Requests the built-in load generator sent, "
                             "by outcome (2xx|4xx|5xx|error|dropped).", ["outcome"], registry=svc.registry)
        for o in ("2xx", "4xx", "5xx", "error", "dropped"):
            self.m_out.labels(o)
        self._edge_setup()

    def _edge_setup(self) -> None:
        e = self.svc.demo.edge
        nginx = ((e.ports or {}).get("nginx") or {}).get(self.svc.name) if e.enabled else None
        self.edge_ports = {r: int(p) for r, p in (nginx or {}).items()}
        self.edge_share = e.requests_share if self.edge_ports else 0.0
        self.edge_tls = set(e.tls_regions if e.tls_regions is not None
                            else [r for r in self.svc.regions if r != self.svc.home])  # as demo/edge.py
        self.edge_rng = random.Random(f"{self.svc.demo.seed}:{self.svc.name}:edge")
        self._edge_ctx: ssl.SSLContext | None = None
        self.m_edge = Counter("opsstack_demo_loadgen_edge_requests", "Requests the load generator sent through "
                              "the edge (nginx), by outcome (2xx|4xx|5xx|error|dropped).", ["outcome"],
                              registry=self.svc.registry)
        for o in ("2xx", "4xx", "5xx", "error", "dropped"):
            self.m_edge.labels(o)

    def edge_context(self) -> ssl.SSLContext:
        if self._edge_ctx is None:
            self._edge_ctx = ssl.create_default_context(
                cafile=str(self.svc.run_dir / "edge" / "tls" / "ca.crt"))  # demo/edge.py paths()["ca_cert"]
        return self._edge_ctx

    def rate(self, epoch: float) -> float:
        """Requests per real second at simulated time ``epoch``."""
        d = self.svc.demo
        hour = model.local_hour(epoch, d.timezone)
        return d.requests_per_second * self.weight * model.diurnal_factor(hour, d.peak_factor)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            lam = self.rate(self.svc.clock.now())
            if lam <= 0:
                self._stop.wait(1.0)
                continue
            gap = self.rng.expovariate(lam)
            if gap > 1.0:  # memoryless: wait a second and draw again with the new rate
                self._stop.wait(1.0)
                continue
            if self._stop.wait(gap):
                break
            self._fire()

    def next_request(self) -> tuple[str, str, dict, str]:
        """(method, path, headers, origin region) of the next simulated user request."""
        rng = self.rng
        origin, geo, client = self.users.draw(rng)
        method, path = model.pick(rng, ROUTE_MIX)  # type: ignore[arg-type,misc]
        ident = int(EVENT_IDS * rng.random() ** 3)  # skewed popularity
        path = path.format(id=ident)
        return method, path, {"X-Opsstack-Client": client, "X-Opsstack-Geo": geo}, origin

    def _fire(self) -> None:
        with self._lock:
            if self._inflight >= MAX_IN_FLIGHT:
                self.m_out.labels("dropped").inc()
                return
            self._inflight += 1
        method, path, headers, origin = self.next_request()
        region = self.svc.serving_region(origin)
        try:
            self._pool.submit(self._send, method, path, headers, self.svc.ports[region])
        except RuntimeError:  # pool shut down
            with self._lock:
                self._inflight -= 1
        if self.edge_share > 0:
            n = int(self.edge_share) + (1 if self.edge_rng.random() < self.edge_share % 1 else 0)
            for _ in range(n):
                self._fire_edge(method, path, region)

    def _fire_edge(self, method: str, path: str, region: str) -> None:
        port = self.edge_ports.get(region)
        if port is None:
            return
        with self._lock:
            if self._inflight >= MAX_IN_FLIGHT:
                self.m_edge.labels("dropped").inc()
                return
            self._inflight += 1
        try:
            self._pool.submit(self._send_edge, method, path, region, port)
        except RuntimeError:
            with self._lock:
                self._inflight -= 1

    def _send_edge(self, method: str, path: str, region: str, port: int) -> None:
        headers = {"Host": f"{self.svc.name}-{region}.opsstack.test",  # demo/edge.py vhost()
                   "User-Agent": EDGE_UA, "Accept": "application/json"}
        if method == "POST":
            headers["Content-Type"] = "application/json"
        self._exchange(self.m_edge, method, path, headers, port, self.edge_context if region in self.edge_tls else None)

    def _send(self, method: str, path: str, headers: dict, port: int) -> None:
        self._exchange(self.m_out, method, path, headers, port, None)

    def _exchange(self, counter, method: str, path: str, headers: dict, port: int, tls) -> None:
        """One request (HTTPS with the context ``tls()`` makes, else plain HTTP), counted by
        status class on ``counter``; it frees its in-flight slot whatever happens."""
        try:
            if tls is not None:
                conn = http.client.HTTPSConnection(self.svc.host, port, timeout=15, context=tls())
            else:
                conn = http.client.HTTPConnection(self.svc.host, port, timeout=15)
            try:
                conn.request(method, path, body=b"{}" if method == "POST" else None, headers=headers)
                resp = conn.getresponse()
                resp.read()
                status = resp.status
            finally:
                conn.close()
            counter.labels(f"{status // 100}xx" if status // 100 in (2, 4, 5) else "error").inc()
        except (OSError, http.client.HTTPException, ssl.SSLError):
            counter.labels("error").inc()
        finally:
            with self._lock:
                self._inflight -= 1
