"""The AWS source of the cost exporter, through boto3 (SigV4): EC2 DescribeInstances (running
instances, paginated by NextToken), EC2 DescribeReservedInstances (active RIs), Pricing GetProducts
(on-demand prices and the type's vCPUs/memory, paginated), Savings Plans DescribeSavingsPlans.

Endpoints come from the config (the tests point them at tests/support/fakeaws.py). Each read
raises ``AwsError`` with one line (throttling after boto3's retries, auth failure...).
The result is an ``AwsInventory``: groups of running instances per (service tag, type,
lifecycle), priced from GetProducts, with the active RIs applied to matching instances.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from exporters.cost.pricing import Group, InstanceType

log = logging.getLogger("opsstack.exporter.cost.aws")

# Pricing API location names are not region codes in older price lists; regionCode is a filter
# field of the current ones (the one we use)
_OS_FILTERS = [
    {"Type": "TERM_MATCH", "Field": "operatingSystem", "Value": "Linux"},
    {"Type": "TERM_MATCH", "Field": "tenancy", "Value": "Shared"},
    {"Type": "TERM_MATCH", "Field": "preInstalledSw", "Value": "NA"},
    {"Type": "TERM_MATCH", "Field": "capacitystatus", "Value": "Used"},
]


class AwsError(RuntimeError):
    pass


@dataclass
class AwsInventory:
    groups: list[Group] = field(default_factory=list)
    types: dict[str, InstanceType] = field(default_factory=dict)
    reserved_count: int = 0                 # active RIs (instances)
    reserved_used: int = 0                  # of them, matched by a running instance
    savings_plan_commitment: float | None = None  # $/hour committed by active Savings Plans
    unpriced: list[str] = field(default_factory=list)  # types GetProducts did not price


def _client(service: str, region: str, endpoint: str | None, s) -> object:
    kw = {"region_name": region, "endpoint_url": endpoint,
          "config": Config(retries={"max_attempts": s.max_attempts, "mode": "standard"},
                           connect_timeout=s.timeout, read_timeout=s.timeout)}
    if s.access_key_id:
        kw.update(aws_access_key_id=s.access_key_id, aws_secret_access_key=s.secret_access_key)
    return boto3.client(service, **kw)


def _call(what: str, fn, *a, **kw):
    try:
        return fn(*a, **kw)
    except ClientError as exc:
        err = exc.response.get("Error", {})
        raise AwsError(f"{what}: {err.get('Code', 'error')}: {str(err.get('Message', ''))[:200]}") from None
    except BotoCoreError as exc:
        raise AwsError(f"{what}: {type(exc).__name__}: {str(exc)[:200]}") from None


def parse_memory(text: str) -> int | None:
    """'8 GiB' -> bytes (the Pricing API's memory attribute)."""
    try:
        num, unit = text.replace(",", "").split()
        mult = {"GiB": 1024 ** 3, "MiB": 1024 ** 2, "TiB": 1024 ** 4}[unit]
        return int(float(num) * mult)
    except (ValueError, KeyError, AttributeError):
        return None


def parse_price_item(item: str) -> tuple[str, float, float, int] | None:
    """One PriceList entry (a JSON string) -> (instance type, USD/hour on demand, vCPUs, memory
    bytes), None when it has no hourly on-demand price."""
    doc = json.loads(item)
    attrs = doc.get("product", {}).get("attributes", {})
    itype = attrs.get("instanceType")
    for term in (doc.get("terms", {}).get("OnDemand") or {}).values():
        for dim in (term.get("priceDimensions") or {}).values():
            if dim.get("unit") in ("Hrs", "Hours"):
                usd = dim.get("pricePerUnit", {}).get("USD")
                mem = parse_memory(attrs.get("memory", ""))
                if itype and usd is not None and mem:
                    return itype, float(usd), float(attrs.get("vcpu", "0") or 0), mem
    return None


def ri_hourly(ri: dict) -> float:
    """The effective hourly rate of one reserved instance: upfront spread over its term, plus
    the usage price, plus hourly recurring charges."""
    hours = max(1.0, float(ri.get("Duration", 31536000)) / 3600.0)
    rate = float(ri.get("FixedPrice", 0.0)) / hours + float(ri.get("UsagePrice", 0.0))
    for rc in ri.get("RecurringCharges") or []:
        if rc.get("Frequency") == "Hourly":
            rate += float(rc.get("Amount", 0.0))
    return rate


class AwsSource:
    def __init__(self, settings):
        """``settings``: the view of exporters.cost.aws."""
        self.s = settings

    def _ec2(self):
        return _client("ec2", self.s.region, self.s.ec2_endpoint_url, self.s)

    def running_instances(self) -> list[dict]:
        ec2 = self._ec2()
        out, token = [], None
        while True:
            kw = {"Filters": [{"Name": "instance-state-name", "Values": ["running"]}], "MaxResults": 100}
            if token:
                kw["NextToken"] = token
            page = _call("ec2 DescribeInstances", ec2.describe_instances, **kw)
            for res in page.get("Reservations", []):
                out.extend(res.get("Instances", []))
            token = page.get("NextToken")
            if not token:
                return out

    def reserved_instances(self) -> list[dict]:
        page = _call("ec2 DescribeReservedInstances", self._ec2().describe_reserved_instances,
                     Filters=[{"Name": "state", "Values": ["active"]}])
        return page.get("ReservedInstances", [])

    def prices(self, instance_types: list[str]) -> dict[str, tuple[float, float, int]]:
        """type -> (USD/hour on demand, vCPUs, memory bytes) from GetProducts in our region."""
        pricing = _client("pricing", self.s.pricing_region, self.s.pricing_endpoint_url, self.s)
        out = {}
        for itype in instance_types:
            token = None
            while True:
                kw = {"ServiceCode": "AmazonEC2", "FormatVersion": "aws_v1", "MaxResults": 100,
                      "Filters": [{"Type": "TERM_MATCH", "Field": "instanceType", "Value": itype},
                                  {"Type": "TERM_MATCH", "Field": "regionCode", "Value": self.s.region}]
                      + _OS_FILTERS}
                if token:
                    kw["NextToken"] = token
                page = _call("pricing GetProducts", pricing.get_products, **kw)
                for item in page.get("PriceList", []):
                    p = parse_price_item(item)
                    if p and p[0] == itype and itype not in out:
                        out[itype] = p[1:]
                token = page.get("NextToken")
                if not token:
                    break
        return out

    def savings_plans_commitment(self) -> float:
        # a global API, signed for us-east-1
        sp = _client("savingsplans", "us-east-1", self.s.savingsplans_endpoint_url, self.s)
        total, token = 0.0, None
        while True:
            kw = {"states": ["active"], "maxResults": 100}
            if token:
                kw["nextToken"] = token
            page = _call("savingsplans DescribeSavingsPlans", sp.describe_savings_plans, **kw)
            for plan in page.get("savingsPlans", []):
                total += float(plan.get("commitment", 0.0))
            token = page.get("nextToken")
            if not token:
                return total

    def read(self, known_types: dict[str, InstanceType]) -> AwsInventory:
        instances = self.running_instances()
        ris = self.reserved_instances()
        wanted = sorted({i["InstanceType"] for i in instances} | {r["InstanceType"] for r in ris})
        prices = self.prices(wanted)
        inv = AwsInventory()
        ri_rate: dict[str, list[float]] = {}
        ri_left: dict[str, int] = {}
        for r in ris:
            n = int(r.get("InstanceCount", 1))
            ri_left[r["InstanceType"]] = ri_left.get(r["InstanceType"], 0) + n
            ri_rate.setdefault(r["InstanceType"], []).extend([ri_hourly(r)] * n)
            inv.reserved_count += n
        for itype in wanted:
            base = known_types.get(itype)
            if itype in prices:
                od, vcpu, mem = prices[itype]
                reserved = sum(ri_rate[itype]) / len(ri_rate[itype]) if ri_rate.get(itype) else \
                    (base.reserved_hourly_price if base else None)
                inv.types[itype] = InstanceType(itype, vcpu or (base.vcpu if base else 1.0), mem, od, reserved)
            elif base is not None:
                inv.types[itype] = base
            else:
                inv.unpriced.append(itype)
        groups: dict[tuple[str, str, str], int] = {}
        for i in instances:
            tags = {t.get("Key"): t.get("Value") for t in i.get("Tags") or []}
            service = str(tags.get(self.s.service_tag) or "untagged")[:64]
            itype = i["InstanceType"]
            if i.get("InstanceLifecycle") == "spot":
                purchase = "spot"
            elif ri_left.get(itype, 0) > 0:
                ri_left[itype] -= 1
                inv.reserved_used += 1
                purchase = "reserved"
            else:
                purchase = "on_demand"
            key = (service, itype, purchase)
            groups[key] = groups.get(key, 0) + 1
        for (service, itype, purchase), n in sorted(groups.items()):
            t = inv.types.get(itype)
            if t is None:
                continue
            rate = t.reserved_hourly_price if purchase == "reserved" and t.reserved_hourly_price is not None \
                else t.hourly_price
            inv.groups.append(Group(f"{service}-{itype}-{purchase}", service, self.s.region, itype, n, purchase,
                                    rate, t.hourly_price, "aws"))
        if self.s.savings_plans:
            inv.savings_plan_commitment = self.savings_plans_commitment()
        return inv
