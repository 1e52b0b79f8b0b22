"""The cost exporter's collector (docs/metrics.md, "Cost"; docs/cost.md).

Spend from the inventory: the config's groups (at scrape time), AWS' running instances and
reservations (exporters/cost/aws.py, at most every aws.refresh_interval) and OpenCost's
allocations (exporters/cost/opencost.py). The advice (exporters/cost/advice.py: rightsizing,
reserved capacity, utilisation band, cost per 1,000 requests, bandwidth) is recomputed from
Prometheus at most every report.refresh_interval. In the served exporter a background thread does
both (``start()``); scrapes serve what it kept and never wait for AWS or Prometheus. Without
``start()`` (tests) a scrape refreshes what is due itself.

Sources (``opsstack_exporter_up{exporter="cost",source}``): config, aws, opencost, prometheus.
Money is in the configured currency (label ``currency``); what a source could not give is absent.
"""
from __future__ import annotations

import logging
import threading
import time

from prometheus_client.core import GaugeMetricFamily

from core.config import view
from core.exporter import ExporterCollector, Scrape
from core.prom import Prometheus, PrometheusError, base_url
from exporters.cost import pricing
from exporters.cost.advice import Advice, advise, bandwidth, config_groups, saved_bandwidth, types_of
from exporters.cost.aws import AwsError, AwsInventory, AwsSource
from exporters.cost.opencost import OpenCostError, OpenCostSource, node_groups

log = logging.getLogger("opsstack.exporter.cost")


def _g(name, doc, labels):
    return GaugeMetricFamily(name, doc, labels=labels)


class CostCollector(ExporterCollector):
    exporter = "cost"

    def __init__(self, settings, prometheus_url: str | None, clock=time.time):
        """``settings``: the view of exporters.cost; ``prometheus_url``: where the advice reads."""
        self.s = settings
        self.clock = clock
        self.types = types_of(settings)
        self.prom = Prometheus(prometheus_url, timeout=60) if prometheus_url else None
        self.aws = AwsSource(settings.aws) if settings.aws.enabled else None
        self.opencost = OpenCostSource(settings.opencost) if settings.opencost.enabled else None
        self.lock = threading.Lock()
        self.aws_inv: AwsInventory | None = None
        self.aws_error: str | None = None
        self.advice: Advice | None = None
        self.advice_error: str | None = None
        self.next_at: dict[str, float] = {}  # source -> when it is read next
        self.saved: dict[str, float] = {}
        self.bandwidth: tuple[dict, str | None] | None = None  # the last bandwidth read (every BANDWIDTH_EVERY)
        self.allocs: list = []
        self.nodes: list[pricing.Group] = []
        self.opencost_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_config(cls, cfg: dict, **kw) -> "CostCollector":
        s = view(cfg, "exporters.cost")
        return cls(s, base_url(cfg, s.prometheus_url), **kw)

    # ------------------------------------------------------------------ refresh
    def groups(self) -> list[pricing.Group]:
        gs = config_groups(self.s, self.all_types())
        if self.aws_inv is not None:
            gs += self.aws_inv.groups
        return gs + list(self.nodes)

    def all_types(self) -> dict:
        t = dict(self.types)
        if self.aws_inv is not None:
            for k, v in self.aws_inv.types.items():
                t.setdefault(k, v)
        return t

    # a failed read is tried again after RETRY (Prometheus may still be starting), not a whole interval later
    RETRY = 15.0
    BANDWIDTH_EVERY = 60.0  # two instant queries: bandwidth follows the CDN exporter's windows closely

    def refresh(self, force: bool = False) -> None:
        """Read what is due: AWS every aws.refresh_interval, OpenCost and the advice every
        report.refresh_interval; a failure is retried after RETRY seconds."""
        now = self.clock()
        if self.aws is not None and (force or now >= self.next_at.get("aws", 0.0)):
            try:
                inv = self.aws.read(self.types)
                with self.lock:
                    self.aws_inv, self.aws_error = inv, None
                self.next_at["aws"] = now + self.s.aws.refresh_interval
            except AwsError as exc:
                with self.lock:
                    self.aws_error = str(exc)[:300]
                log.warning("event=aws_failed error=%r", str(exc)[:300])
                self.next_at["aws"] = now + max(self.RETRY, min(300.0, self.s.aws.refresh_interval))
        if self.opencost is not None and (force or now >= self.next_at.get("opencost", 0.0)):
            try:
                allocs = self.opencost.allocations()
                nodes = node_groups(self.prom, now) if self.prom is not None and self.s.opencost.prometheus_nodes \
                    else []
                with self.lock:
                    self.allocs, self.nodes, self.opencost_error = allocs, nodes, None
                self.next_at["opencost"] = now + self.s.report.refresh_interval
            except (OpenCostError, PrometheusError) as exc:
                with self.lock:
                    self.opencost_error = str(exc)[:300]
                log.warning("event=opencost_failed error=%r", str(exc)[:300])
                self.next_at["opencost"] = now + self.RETRY
        if self.prom is not None and (force or now >= self.next_at.get("advice", 0.0)):
            try:
                adv = advise(self.s, self.prom, self.groups(), self.all_types(), at=now)
                with self.lock:
                    self.advice, self.advice_error = adv, None
                self.next_at["advice"] = now + self.s.report.refresh_interval
            except PrometheusError as exc:
                with self.lock:
                    self.advice_error = str(exc)[:300]
                log.warning("event=advice_failed error=%r", str(exc)[:300])
                self.next_at["advice"] = now + self.RETRY
        if self.prom is not None and (force or now >= self.next_at.get("bandwidth", 0.0)):
            try:
                bw, saved = bandwidth(self.prom, self.s, now), saved_bandwidth(self.prom, self.s, now)
                with self.lock:
                    self.bandwidth, self.saved = bw, saved
            except PrometheusError as exc:
                log.warning("event=bandwidth_failed error=%r", str(exc)[:300])
            self.next_at["bandwidth"] = now + self.BANDWIDTH_EVERY

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="cost-refresh", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception as exc:  # a bug in one pass must not end the refresh thread
                log.error("event=refresh_failed error=%r", f"{type(exc).__name__}: {exc}")
            self._stop.wait(5.0)  # cheap when nothing is due

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)
            self._thread = None

    # ------------------------------------------------------------------ collection
    def collect_sources(self, scrape: Scrape):
        if self._thread is None:
            self.refresh()
        cur, hpm = self.s.currency, self.s.hours_per_month
        with self.lock:
            aws_inv, aws_error, adv, adv_error = self.aws_inv, self.aws_error, self.advice, self.advice_error
            allocs, oc_error, saved = list(self.allocs), self.opencost_error, dict(self.saved)
            bw = self.bandwidth
        groups = self.groups()
        scrape.set_up("config", True)
        if self.aws is not None:
            scrape.set_up("aws", aws_error is None and aws_inv is not None, aws_error)
        if self.opencost is not None:
            scrape.set_up("opencost", oc_error is None, oc_error)
        if self.prom is not None and (adv is not None or adv_error is not None):  # nothing yet: not a failure
            scrape.set_up("prometheus", adv_error is None, adv_error)

        gl = ["group", "service", "region", "type", "purchase", "source", "currency"]
        gh = _g("opsstack_cost_group_hourly", "Cost per hour of an instance group.", gl)
        gm = _g("opsstack_cost_group_monthly", "Cost per month of an instance group (hourly x hours_per_month).", gl)
        gn = _g("opsstack_cost_group_instances", "Instances in a group.", gl[:-1])
        for g in groups:
            lab = [g.name, g.service, g.region, g.type, g.purchase, g.source, cur]
            gh.add_metric(lab, g.hourly)
            gm.add_metric(lab, g.hourly * hpm)
            gn.add_metric(lab[:-1], g.count)
        yield from (gh, gm, gn)
        sh = _g("opsstack_cost_service_hourly", "Instance cost per hour of a service.", ["service", "currency"])
        sm = _g("opsstack_cost_service_monthly", "Instance cost per month of a service.", ["service", "currency"])
        for svc, v in sorted(pricing.totals(groups, lambda g: g.service).items()):
            sh.add_metric([svc, cur], v)
            sm.add_metric([svc, cur], v * hpm)
        rh = _g("opsstack_cost_region_hourly", "Instance cost per hour in a region.", ["region", "currency"])
        for reg, v in sorted(pricing.totals(groups, lambda g: g.region).items()):
            rh.add_metric([reg, cur], v)
        yield from (sh, sm, rh)
        cov, od = pricing.coverage(groups), pricing.on_demand_share(groups)
        if cov is not None:
            yield GaugeMetricFamily("opsstack_cost_reserved_coverage_ratio",
                                    "Share of the instances bought reserved (RI or Savings Plan).", value=cov)
        if od is not None:
            yield GaugeMetricFamily("opsstack_cost_on_demand_share_ratio", "Share of the spend on demand.", value=od)
        if aws_inv is not None:
            ru = pricing.ri_utilisation(aws_inv.reserved_count, aws_inv.reserved_used)
            if ru is not None:
                yield GaugeMetricFamily("opsstack_cost_reserved_utilisation_ratio",
                                        "Share of the active reserved instances a running instance uses.", value=ru)
            if aws_inv.savings_plan_commitment is not None:
                sp = _g("opsstack_cost_savings_plan_commitment_hourly",
                        "Hourly commitment of the active Savings Plans.", ["currency"])
                sp.add_metric([cur], aws_inv.savings_plan_commitment)
                yield sp
        if allocs:
            oc = _g("opsstack_cost_allocation_hourly", "OpenCost allocation cost per hour.", ["allocation", "currency"])
            for a in allocs:
                oc.add_metric([a.name, cur], a.hourly)
            yield oc
        bud = _g("opsstack_cost_budget_monthly", "Monthly budget of a service.", ["service", "currency"])
        for svc, amount in sorted(self.s.budgets.items()):
            bud.add_metric([svc, cur], float(amount))
        yield bud
        if adv is not None:
            yield from self._advice(adv, cur, hpm)
        bw_now = bw or ((adv.bandwidth, adv.bandwidth_source) if adv is not None else None)
        if bw_now is not None:
            yield from self._bandwidth(bw_now, saved, groups, cur, hpm)

    def _bandwidth(self, bw_now: tuple, saved: dict, groups, cur: str, hpm: float):
        bw = _g("opsstack_cost_bandwidth_hourly", "Bandwidth cost per hour (bytes served x price per GB).",
                ["service", "region", "source", "currency"])
        bw_cost, bw_source = bw_now
        for (svc, reg), v in sorted(bw_cost.items()):
            bw.add_metric([svc, reg, bw_source or "", cur], v)
        yield bw
        if saved:
            sv = _g("opsstack_cost_bandwidth_saved_hourly", "Origin bandwidth cost per hour the CDN cache saves.",
                    ["region", "currency"])
            for reg, v in sorted(saved.items()):
                sv.add_metric([reg, cur], v)
            yield sv
        proj = _g("opsstack_cost_service_monthly_projected",
                  "Projected monthly cost of a service: instances plus its bandwidth (daily mean).",
                  ["service", "currency"])
        inst = pricing.totals(groups, lambda g: g.service)
        for svc in sorted(inst):
            b = sum(v for (s, _r), v in bw_cost.items() if s == svc)
            proj.add_metric([svc, cur], (inst[svc] + b) * hpm)
        yield proj

    def _advice(self, adv: Advice, cur: str, hpm: float):
        rs = _g("opsstack_cost_rightsizing_monthly_saving", "Monthly saving of a rightsizing finding.",
                ["group", "service", "region", "kind", "type", "advised_type", "currency"])
        for f in adv.findings:
            rs.add_metric([f.group, f.service, f.region, f.kind, f.current_type, f.advised_type or "none", cur],
                          f.monthly_saving(hpm))
        yield rs
        ry = _g("opsstack_cost_reserved_yearly_saving", "Yearly saving of reserving the steady baseline.",
                ["type", "region", "currency"])
        rc = _g("opsstack_cost_reserved_recommended_instances", "Instances to reserve (baseline not yet reserved).",
                ["type", "region"])
        for r in adv.reservations:
            ry.add_metric([r.type, r.region, cur], r.yearly_saving())
            rc.add_metric([r.type, r.region], r.count)
        yield from (ry, rc)
        ub = _g("opsstack_cost_utilisation_ratio", "CPU used / vCPUs bought of a service, last hour of the advice.",
                ["service"])
        ib = _g("opsstack_cost_utilisation_in_band_ratio", "Share of the window's hours inside the utilisation band.",
                ["service"])
        for svc, b in sorted(adv.band.items()):
            ub.add_metric([svc], b["last"])
            ib.add_metric([svc], b["in_band_share"])
        yield from (ub, ib)
        pk = _g("opsstack_cost_per_1000_requests", "Cost of 1,000 requests (last day of the advice).",
                ["service", "currency"])
        for svc, pts in sorted(adv.per_1000.items()):
            if pts:
                pk.add_metric([svc, cur], pts[-1][1])
        yield pk
        yield GaugeMetricFamily("opsstack_cost_advice_age_seconds", "Age of the advice gauges.",
                                value=max(0.0, self.clock() - adv.at))
