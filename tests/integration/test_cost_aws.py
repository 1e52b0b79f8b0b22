"""The cost exporter against fake AWS and OpenCost servers that check SigV4 and request shapes,
through real boto3 (tests/support/fakeaws.py)."""
from __future__ import annotations

import dataclasses

import pytest
from prometheus_client import generate_latest

from core.config import load_data, view
from core.exporter import registry_for
from exporters.cost.advice import types_of
from exporters.cost.aws import AwsError, AwsSource
from exporters.cost.collector import CostCollector
from exporters.cost.opencost import OpenCostError, OpenCostSource
from tests.support.fakeaws import FakeAWS, FakeOpenCost

KEY, SECRET = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"


def _aws_fake(**kw):
    return FakeAWS(KEY, SECRET, instances=[
        {"id": "i-1", "type": "c6i.large", "service": "api"},
        {"id": "i-2", "type": "c6i.large", "service": "api"},
        {"id": "i-3", "type": "c6i.large", "service": "api"},
        {"id": "i-4", "type": "m6i.xlarge", "service": "db"},
        {"id": "i-5", "type": "c6i.large", "service": "api", "lifecycle": "spot"},
    ], reserved=[{"id": "ri-1", "type": "c6i.large", "count": 2, "hourly": 0.05},
                 {"id": "ri-2", "type": "m6i.xlarge", "count": 2, "fixed": 876.0, "usage": 0.01}],
        prices={"c6i.large": (0.1, 2, "4 GiB"), "m6i.xlarge": (0.25, 4, "16 GiB")},
        plans=[{"id": "sp-1", "commitment": 1.5}, {"id": "sp-2", "commitment": 0.25},
               {"id": "sp-3", "commitment": 0.25}], **kw)


def _settings(fake, secret=SECRET, **aws):
    cfg = load_data({"exporters": {"cost": {
        "instances": [], "budgets": {"api": 100.0},
        "aws": {"enabled": True, "ec2_endpoint_url": fake.url, "pricing_endpoint_url": fake.url,
                "savingsplans_endpoint_url": fake.url, "access_key_id": KEY, "secret_access_key": secret,
                "max_attempts": 2, **aws}}}})
    return view(cfg, "exporters.cost")


def test_inventory_through_boto3_paginates_and_prices_from_the_pricing_api():
    with _aws_fake() as fake:
        s = _settings(fake)
        inv = AwsSource(s.aws).read(types_of(s))
        assert not fake.rejected and not fake.errors
        # 5 instances on pages of 2: three DescribeInstances calls, the tokens passed back
        di = [p for a, p in fake.seen if a == "DescribeInstances"]
        assert [p.get("NextToken") for p in di] == [None, "page-2", "page-4"]
        gp = [p for a, p in fake.seen if a == "GetProducts"]
        # two entries without a price, then the price on page 2: NextToken followed per type
        assert [(p["Filters"][0]["Value"], p.get("NextToken")) for p in gp] == \
            [("c6i.large", None), ("c6i.large", "page-2"), ("m6i.xlarge", None), ("m6i.xlarge", "page-2")]
        by = {(g.service, g.type, g.purchase): g for g in inv.groups}
        assert by[("api", "c6i.large", "reserved")].count == 2
        assert by[("api", "c6i.large", "on_demand")].count == 1
        assert by[("api", "c6i.large", "spot")].count == 1
        assert by[("api", "c6i.large", "on_demand")].hourly_price == pytest.approx(0.1)
        assert by[("api", "c6i.large", "reserved")].hourly_price == pytest.approx(0.05)
        # ri-2: 876 upfront over 8760 h + 0.01 usage
        assert by[("db", "m6i.xlarge", "reserved")].hourly_price == pytest.approx(0.11)
        assert inv.types["m6i.xlarge"].memory_bytes == 16 * 1024 ** 3
        assert (inv.reserved_count, inv.reserved_used) == (4, 3)
        assert inv.savings_plan_commitment == pytest.approx(2.0)  # two pages of plans


def test_a_wrong_secret_is_rejected_by_the_signature_check():
    with _aws_fake() as fake:
        s = _settings(fake, secret="not-the-secret")
        with pytest.raises(AwsError, match="AuthFailure"):
            AwsSource(s.aws).read(types_of(s))
        assert fake.rejected == ["signature mismatch"]


def test_a_wrong_region_scope_is_rejected():
    with _aws_fake(region="eu-west-1") as fake:
        s = _settings(fake)
        with pytest.raises(AwsError, match="AuthFailure"):
            AwsSource(s.aws).running_instances()
        assert "credential scope ap-northeast-2/ec2, expected eu-west-1/ec2" in fake.rejected


def test_throttling_is_retried_then_reported():
    with _aws_fake() as fake:
        s = _settings(fake)
        fake.throttle["DescribeInstances"] = 1  # one throttle: boto3's retry gets through
        assert len(AwsSource(s.aws).running_instances()) == 5
        fake.throttle["GetProducts"] = 5  # more than max_attempts: the error surfaces
        with pytest.raises(AwsError, match="ThrottlingException"):
            AwsSource(s.aws).prices(["c6i.large"])


def test_exporter_serves_aws_spend_coverage_and_ri_utilisation():
    with _aws_fake() as fake:
        s = _settings(fake)
        c = CostCollector(s, None)
        text = generate_latest(registry_for(c)).decode()
        assert 'opsstack_exporter_up{exporter="cost",source="aws"} 1.0' in text
        assert 'opsstack_cost_reserved_utilisation_ratio 0.75' in text
        assert 'opsstack_cost_savings_plan_commitment_hourly{currency="usd"} 2.0' in text
        # coverage: 3 reserved of 4 non-spot instances
        assert 'opsstack_cost_reserved_coverage_ratio 0.75' in text
        # api: 2 x 0.05 + 1 x 0.1 + spot (on-demand price) 0.1
        assert 'opsstack_cost_service_hourly{currency="usd",service="api"} 0.3' in text
        fake.throttle["DescribeInstances"] = 10
        c.refresh(force=True)
        text = generate_latest(registry_for(c)).decode()
        assert 'opsstack_exporter_up{exporter="cost",source="aws"} 0.0' in text
        # the last good inventory is kept
        assert 'opsstack_cost_service_hourly{currency="usd",service="api"} 0.3' in text


def test_opencost_allocations_per_hour_and_errors():
    alloc = {"checkout": {"totalCost": 48.0, "cpuCost": 24.0, "ramCost": 12.0},
             "__idle__": {"totalCost": 99.0}}
    with FakeOpenCost(alloc) as oc:
        cfg = load_data({"exporters": {"cost": {"opencost": {"enabled": True, "url": oc.url}}}})
        s = view(cfg, "exporters.cost")
        got = OpenCostSource(s.opencost).allocations()
        assert [(a.name, a.hourly, a.cpu_hourly) for a in got] == [("checkout", 2.0, 1.0)]
        req = oc.requests[-1]
        assert req.query == {"window": "1d", "aggregate": "namespace", "accumulate": "true"}
        oc.fail_next = 1
        with pytest.raises(OpenCostError, match="500"):
            OpenCostSource(s.opencost).allocations()
        c = CostCollector(dataclasses.replace(s, instances=()), None)
        oc.fail_next = 1
        text = generate_latest(registry_for(c)).decode()
        assert 'opsstack_exporter_up{exporter="cost",source="opencost"} 0.0' in text
        text = generate_latest(registry_for(c)).decode()  # not due again yet: still the failure
        assert 'opsstack_exporter_up{exporter="cost",source="opencost"} 0.0' in text
        c.refresh(force=True)
        text = generate_latest(registry_for(c)).decode()
        assert 'opsstack_cost_allocation_hourly{allocation="checkout",currency="usd"} 2.0' in text


def test_unsigned_and_tampered_requests_are_rejected():
    """The fake's SigV4 check is real: a request boto3 signed and then changed, or never signed,
    is refused with EC2's AuthFailure."""
    import requests
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    with _aws_fake() as fake:
        body = "Action=DescribeInstances&Version=2016-11-15&Filter.1.Name=instance-state-name&Filter.1.Value.1=running"
        r = requests.post(fake.url + "/", data=body,
                          headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=10)
        assert r.status_code == 401 and "<Code>AuthFailure</Code>" in r.text
        req = AWSRequest("POST", fake.url + "/", data=body,
                         headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
        SigV4Auth(Credentials(KEY, SECRET), "ec2", "ap-northeast-2").add_auth(req)
        headers = dict(req.headers.items())
        ok = requests.post(fake.url + "/", data=body, headers=headers, timeout=10)
        assert ok.status_code == 200 and "<reservationSet>" in ok.text
        bad = requests.post(fake.url + "/", data=body.replace("running", "stopped"), headers=headers, timeout=10)
        assert bad.status_code == 401
        signed_for_s3 = AWSRequest("POST", fake.url + "/", data=body,
                                   headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
        SigV4Auth(Credentials(KEY, SECRET), "s3", "ap-northeast-2").add_auth(signed_for_s3)
        wrong = requests.post(fake.url + "/", data=body, headers=dict(signed_for_s3.headers.items()), timeout=10)
        assert wrong.status_code == 401
        assert fake.rejected == ["missing or malformed SigV4 Authorization header", "signature mismatch",
                                 "credential scope ap-northeast-2/s3, expected ap-northeast-2/ec2"]
