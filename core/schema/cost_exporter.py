"""The `exporters.cost` config section (registered as the "cost" key in core/schema/exporters.py):
the cost exporter's inventory and prices (config, then AWS, then OpenCost), bandwidth prices,
budgets, and the advice of `opsstack cost report` (docs/cost.md, docs/metrics.md "Cost").

The defaults are the demo platform's inventory: every demo service has a group of instances in
each region (4 services x 3 regions = 12 groups), about 65% of the spend on demand, and its
usage read from the demo's own series, which stand for a platform ``demo_load_scale`` times
as busy as the 3 requests/s a demo service serves (docs/cost.md, "The demo inventory").
"""
from __future__ import annotations

import re

from core.spec import ConfigError, Field, ListOf

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_CURRENCY = re.compile(r"^[a-z]{3}$")
_REGION = re.compile(r"^[a-z][a-z0-9_-]*$")
PURCHASE = ("on_demand", "reserved", "savings_plan", "spot")
HOURS_PER_MONTH = 730.0  # AWS' own convention (8760 / 12)
GIB = 1024 ** 3


def _name(v):
    return None if _NAME.match(v) else f"must be lowercase letters, digits, '.', '-' or '_', got {v!r}"


def _currency(v):
    return None if _CURRENCY.match(v) else f"must be a lowercase ISO 4217 code like usd, got {v!r}"


def _region(v):
    return None if _REGION.match(v) else f"must be a lowercase region name, got {v!r}"


def _t(name, vcpu, mem_gib, price, reserved):
    return {"name": name, "vcpu": vcpu, "memory_bytes": int(mem_gib * GIB), "hourly_price": price,
            "reserved_hourly_price": reserved}


# list prices (USD/hour, Linux, ap-northeast-2) and the 1-year no-upfront reserved rate; the AWS
# source overrides them per region when enabled
DEFAULT_TYPES = [
    _t("t3.medium", 2, 4, 0.052, 0.033),
    _t("t3.large", 2, 8, 0.104, 0.066),
    _t("c6i.large", 2, 4, 0.096, 0.061),
    _t("c6i.xlarge", 4, 8, 0.192, 0.121),
    _t("c6i.2xlarge", 8, 16, 0.384, 0.242),
    _t("c6i.4xlarge", 16, 32, 0.768, 0.484),
    _t("m6i.large", 2, 8, 0.118, 0.074),
    _t("m6i.xlarge", 4, 16, 0.236, 0.149),
    _t("m6i.2xlarge", 8, 32, 0.472, 0.297),
    _t("m6i.4xlarge", 16, 64, 0.944, 0.595),
]


def _i(service, region, type_, count, purchase):
    return {"name": f"{service}-{region}", "service": service, "region": region, "type": type_,
            "count": count, "purchase": purchase, "hourly_price": None}


# the demo inventory: Seoul serves 90% of the users (6 instances per service), Singapore and Tokyo
# 5% each (1 instance); three groups were bought larger than their load needs
DEFAULT_INSTANCES = [
    _i("gate-management", "seoul", "c6i.4xlarge", 8, "on_demand"),
    _i("gate-management", "singapore", "c6i.xlarge", 1, "on_demand"),
    _i("gate-management", "tokyo", "c6i.xlarge", 1, "on_demand"),
    _i("user-app", "seoul", "c6i.2xlarge", 6, "reserved"),
    _i("user-app", "singapore", "c6i.xlarge", 1, "on_demand"),
    _i("user-app", "tokyo", "m6i.2xlarge", 1, "on_demand"),
    _i("event-management", "seoul", "c6i.2xlarge", 6, "reserved"),
    _i("event-management", "singapore", "c6i.4xlarge", 1, "on_demand"),
    _i("event-management", "tokyo", "c6i.xlarge", 1, "on_demand"),
    _i("integrated-platform", "seoul", "c6i.2xlarge", 6, "reserved"),
    _i("integrated-platform", "singapore", "c6i.xlarge", 1, "on_demand"),
    _i("integrated-platform", "tokyo", "c6i.xlarge", 1, "on_demand"),
]

# the demo's usage of one instance group: the service's CPU (memory) times the region's share of
# its requests; {service} and {region} are replaced by the group's (escaped) labels
DEMO_SHARE = ('(sum(rate(opsstack_http_requests_total{service="{service}",region="{region}"}[5m]))'
              ' / sum(rate(opsstack_http_requests_total{service="{service}"}[5m])))')
DEFAULT_CPU_QUERY = 'sum(rate(opsstack_service_cpu_seconds_total{service="{service}"}[5m])) * ' + DEMO_SHARE
DEFAULT_MEMORY_QUERY = 'sum(process_resident_memory_bytes{service="{service}"}) * ' + DEMO_SHARE
DEFAULT_REQUESTS_QUERY = 'sum(rate(opsstack_http_requests_total{service="{service}",region="{region}"}[5m]))'

SECTION = {
    "enabled": Field("bool", True),
    "currency": Field("str", "usd", check=_currency, help="the `currency` label of every opsstack_cost_* series"),
    "hours_per_month": Field("float", HOURS_PER_MONTH, minimum=1, help="hours of a month (AWS: 730)"),
    "types": ListOf({
        "name": Field("str", check=_name),
        "vcpu": Field("float", minimum=0.01),
        "memory_bytes": Field("int", minimum=1),
        "hourly_price": Field("float", minimum=0, help="on-demand price per hour of one instance"),
        "reserved_hourly_price": Field("float", None, nullable=True, minimum=0,
                                       help="effective hourly rate when reserved (null: no reservation offered)"),
    }, default=DEFAULT_TYPES, unique_key="name"),
    "instances": ListOf({
        "name": Field("str", check=_name),
        "service": Field("str", check=_name),
        "region": Field("str", check=_region),
        "type": Field("str", check=_name),
        "count": Field("int", 1, minimum=1, help="identical instances in this group"),
        "purchase": Field("str", "on_demand", choices=PURCHASE),
        "hourly_price": Field("float", None, nullable=True, minimum=0,
                              help="price per hour of one instance (null: from the type, or AWS)"),
    }, default=DEFAULT_INSTANCES, unique_key="name"),
    "usage": {
        # PromQL of one group's usage, {service}/{region} replaced; results x demo_load_scale / count
        "cpu_cores_query": Field("str", DEFAULT_CPU_QUERY, help="CPU cores the group uses"),
        "memory_bytes_query": Field("str", DEFAULT_MEMORY_QUERY, help="resident memory of the group"),
        "requests_query": Field("str", DEFAULT_REQUESTS_QUERY, help="requests/s the group serves"),
        "demo_load_scale": Field("float", 1000.0, minimum=0.000001,
                                 help="the usage series stand for a platform this many times as busy "
                                      "(the demo: 3 req/s stand for 3,000); 1 for real instances"),
    },
    "aws": {
        "enabled": Field("bool", False),
        "region": Field("str", "ap-northeast-2", check=_region, help="the EC2 region to describe"),
        "pricing_region": Field("str", "us-east-1", check=_region, help="where the Pricing API answers"),
        # null = AWS itself; the tests point these at local fakes
        "ec2_endpoint_url": Field("url", None, nullable=True),
        "pricing_endpoint_url": Field("url", None, nullable=True),
        "savingsplans_endpoint_url": Field("url", None, nullable=True),
        "access_key_id": Field("str", None, nullable=True, secret=True,
                               help="null: boto3's own chain (environment, profile, instance role)"),
        "secret_access_key": Field("str", None, nullable=True, secret=True),
        "service_tag": Field("str", "service", help="the EC2 tag naming an instance's service"),
        "savings_plans": Field("bool", True, help="also read DescribeSavingsPlans"),
        "refresh_interval": Field("duration", "1h", minimum=60, help="read the AWS APIs at most this often"),
        "timeout": Field("duration", "10s", minimum=0.1),
        "max_attempts": Field("int", 3, minimum=1, maximum=10, help="boto3 retries (throttling)"),
    },
    "opencost": {
        "enabled": Field("bool", False),
        "url": Field("url", "http://127.0.0.1:9003", help="OpenCost's API (GET /allocation)"),
        "window": Field("duration", "1d", minimum=60, help="the /allocation window"),
        "aggregate": Field("str", "namespace", choices=("namespace", "deployment", "service", "label:app")),
        "prometheus_nodes": Field("bool", True,
                                  help="also read node_total_hourly_cost from Prometheus (OpenCost's metrics)"),
        "timeout": Field("duration", "10s", minimum=0.1),
    },
    "bandwidth": {
        # per region: price of one GB (10^9 bytes) served; the CDN exporter's bytes when Prometheus
        # has them, else the demo's own responses
        # (the demo's regions, and the CDN exporter's: asia, europe, north_america, other)
        "price_per_gb": Field("dict", {"seoul": 0.126, "singapore": 0.12, "tokyo": 0.114, "asia": 0.12,
                                       "europe": 0.085, "north_america": 0.085, "other": 0.12}),
        "cdn_bytes_query": Field("str", 'sum by (region) (avg_over_time(opsstack_cdn_response_bytes_per_second[1d]))',
                                 help="bytes/s served per region by the CDN (the CDN exporter), a daily mean"),
        "cdn_saved_bytes_query": Field("str",
                                       'sum by (region) (avg_over_time(opsstack_cdn_saved_bytes_per_second[1d]))',
                                       help="bytes/s the CDN cache kept off the origin, per region"),
        "demo_requests_query": Field("str", 'sum by (service, region) (rate(opsstack_http_requests_total[1d]))',
                                     help="requests/s per service and region of the demo, a daily mean"),
        "demo_bytes_per_request": Field("int", 1024, minimum=0,
                                        help="bytes of one demo response (when no CDN series exists)"),
    },
    "budgets": Field("dict", {"gate-management": 10000.0, "user-app": 6000.0, "event-management": 6000.0,
                              "integrated-platform": 6000.0},
                     help="service -> monthly budget in `currency`"),
    "budget_burn_ratio": Field("float", 1.0, minimum=0.01,
                               help="alert when the projected month exceeds this share of the budget"),
    "prometheus_url": Field("url", None, nullable=True,
                            help="Prometheus the exporter and report read (null: the stack's own)"),
    "report": {
        "window": Field("duration", "14d", minimum=3600),
        "step": Field("duration", "5m", minimum=15, help="resolution of the percentiles"),
        "idle_max_cpu": Field("float", 0.01, minimum=0, maximum=1, help="idle: max CPU at or below this"),
        "underused_p95_cpu": Field("float", 0.30, minimum=0, maximum=1, help="under-used: P95 CPU below this"),
        "headroom": Field("float", 0.20, minimum=0, maximum=5, help="over-provisioned: P99.5 x (1 + headroom) "
                                                                   "fits a smaller type"),
        "band_low": Field("float", 0.70, minimum=0, maximum=1),
        "band_high": Field("float", 0.80, minimum=0, maximum=1),
        "refresh_interval": Field("duration", "15m", minimum=60,
                                  help="the exporter recomputes the advice gauges this often"),
    },
}


def check(cfg):
    c = cfg["exporters"]["cost"]
    types = {t["name"] for t in c["types"]}
    for i, inst in enumerate(c["instances"]):
        if inst["type"] not in types and inst["hourly_price"] is None and not c["aws"]["enabled"]:
            raise ConfigError(f"exporters.cost.instances[{i}].type",
                              f"unknown type {inst['type']!r} and no hourly_price (types: exporters.cost.types)")
        if inst["purchase"] == "reserved" and inst["type"] in types:
            t = next(t for t in c["types"] if t["name"] == inst["type"])
            if t["reserved_hourly_price"] is None and inst["hourly_price"] is None:
                raise ConfigError(f"exporters.cost.instances[{i}].purchase",
                                  f"reserved, but type {inst['type']!r} has no reserved_hourly_price")
    for region, price in c["bandwidth"]["price_per_gb"].items():
        if not isinstance(region, str) or not _REGION.match(region) or isinstance(price, bool) \
                or not isinstance(price, (int, float)) or price < 0:
            raise ConfigError(f"exporters.cost.bandwidth.price_per_gb.{region}",
                              f"must map a region to a price >= 0, got {price!r}")
    for svc, amount in c["budgets"].items():
        if not isinstance(svc, str) or not _NAME.match(svc) or isinstance(amount, bool) \
                or not isinstance(amount, (int, float)) or amount <= 0:
            raise ConfigError(f"exporters.cost.budgets.{svc}", f"must map a service to an amount > 0, got {amount!r}")
    r = c["report"]
    if r["band_low"] >= r["band_high"]:
        raise ConfigError("exporters.cost.report.band_low", "must be below band_high")
    if r["step"] >= r["window"]:
        raise ConfigError("exporters.cost.report.step", "must be shorter than the window")
    for key in ("cpu_cores_query", "memory_bytes_query", "requests_query"):
        q = c["usage"][key]
        if q.count("(") != q.count(")") or q.count("{") != q.count("}"):
            raise ConfigError(f"exporters.cost.usage.{key}", "unbalanced brackets")
    if c["aws"]["enabled"] and (c["aws"]["access_key_id"] is None) != (c["aws"]["secret_access_key"] is None):
        raise ConfigError("exporters.cost.aws.secret_access_key", "set both access_key_id and secret_access_key, "
                                                                  "or neither (boto3's own chain)")
