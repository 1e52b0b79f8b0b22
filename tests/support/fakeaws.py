"""Fake AWS (EC2, Pricing, Savings Plans) and OpenCost servers that CHECK request shapes.

``FakeAWS(access_key, secret, instances=[...], reserved=[...], prices={...}, plans=[...])`` is one
FakeHTTP answering the three APIs at its root, told apart the way AWS does: EC2's query protocol
(POST / form body, Action=..., Version=2016-11-15), Pricing's JSON 1.1 (POST /, X-Amz-Target
AWSPriceListService.GetProducts) and Savings Plans' REST-JSON (POST /DescribeSavingsPlans).
Every request must carry a valid SigV4 ``Authorization`` header: the fake recomputes the
signature from the canonical request with the secret it knows, and checks the credential scope
(date/region/service/aws4_request), SignedHeaders (host and x-amz-date at least) and
X-Amz-Date; a bad one answers AWS' own auth error (EC2 AuthFailure 401, JSON
UnrecognizedClientException / InvalidSignatureException 403). Pagination: ``page_size`` items per
page with NextToken/nextToken. Faults: ``throttle[api] = n`` answers the next n calls of that API
with its throttling error (EC2 RequestLimitExceeded 503, Pricing ThrottlingException 400).
``seen`` records (api, params) of every accepted call.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import re
from urllib.parse import parse_qsl, quote, urlsplit
from xml.sax.saxutils import escape

from tests.support.fakehttp import FakeHTTP, Request

EC2_VERSION = "2016-11-15"
_AUTH = re.compile(r"^AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
                   r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})$")


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def _q(s: str) -> str:
    return quote(s, safe="-_.~")


def canonical_request(req: Request, signed: list[str]) -> str:
    parts = urlsplit(req.target)
    path = parts.path or "/"
    query = "&".join(f"{_q(k)}={_q(v)}" for k, v in sorted(parse_qsl(parts.query, keep_blank_values=True)))
    headers = "".join(f"{h}:{' '.join((req.headers.get(h) or '').split())}\n" for h in signed)
    return "\n".join([req.method, path, query, headers, ";".join(signed), hashlib.sha256(req.body).hexdigest()])


def verify_sigv4(req: Request, access_key: str, secret: str, region: str, service: str) -> str | None:
    """None when the request is signed right for (region, service), else what is wrong."""
    auth = req.headers.get("Authorization") or ""
    m = _AUTH.match(auth)
    if not m:
        return "missing or malformed SigV4 Authorization header"
    key, date, reg, svc, signed, sig = m.groups()
    amz_date = req.headers.get("X-Amz-Date") or ""
    if not re.fullmatch(r"\d{8}T\d{6}Z", amz_date) or amz_date[:8] != date:
        return f"X-Amz-Date {amz_date!r} does not match the credential date {date}"
    if key != access_key:
        return "unknown access key"
    if (reg, svc) != (region, service):
        return f"credential scope {reg}/{svc}, expected {region}/{service}"
    names = signed.split(";")
    if "host" not in names or "x-amz-date" not in names or names != sorted(names):
        return f"SignedHeaders {signed!r} must be sorted and hold host and x-amz-date"
    scope = f"{date}/{reg}/{svc}/aws4_request"
    sts = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                     hashlib.sha256(canonical_request(req, names).encode()).hexdigest()])
    k = _hmac(_hmac(_hmac(_hmac(("AWS4" + secret).encode(), date), reg), svc), "aws4_request")
    want = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want, sig):
        return "signature mismatch"
    return None


def price_item(itype: str, region: str, usd: float, vcpu: int, memory: str) -> str:
    """One PriceList entry as GetProducts returns it (a JSON document in a string)."""
    sku = hashlib.sha1(f"{itype}{region}".encode()).hexdigest()[:16].upper()
    return json.dumps({
        "product": {"productFamily": "Compute Instance", "sku": sku,
                    "attributes": {"instanceType": itype, "regionCode": region, "vcpu": str(vcpu), "memory": memory,
                                   "operatingSystem": "Linux", "tenancy": "Shared", "preInstalledSw": "NA",
                                   "capacitystatus": "Used"}},
        "serviceCode": "AmazonEC2",
        "terms": {"OnDemand": {f"{sku}.JRTCKXETXF": {
            "offerTermCode": "JRTCKXETXF", "sku": sku,
            "priceDimensions": {f"{sku}.JRTCKXETXF.6YS6EN2CT7": {
                "unit": "Hrs", "pricePerUnit": {"USD": f"{usd:.10f}"},
                "description": f"${usd} per On Demand Linux {itype} Instance Hour"}}}}},
        "version": "20251101000000", "publicationDate": "2025-11-01T00:00:00Z"})


class FakeAWS(FakeHTTP):
    def __init__(self, access_key: str, secret: str, *, region: str = "ap-northeast-2",
                 pricing_region: str = "us-east-1", instances: list[dict] | None = None,
                 reserved: list[dict] | None = None, prices: dict[str, tuple] | None = None,
                 plans: list[dict] | None = None, page_size: int = 2):
        super().__init__({"POST /": self._root, "POST /DescribeSavingsPlans": self._plans})
        self.access_key, self.secret = access_key, secret
        self.region, self.pricing_region = region, pricing_region
        self.instances = instances or []     # {id, type, service, lifecycle?}
        self.reserved = reserved or []       # {id, type, count, fixed, usage, hourly, duration}
        self.prices = prices or {}           # type -> (usd, vcpu, memory text)
        self.plans = plans or []             # {id, commitment}
        self.page_size = page_size
        self.throttle: dict[str, int] = {}
        self.seen: list[tuple[str, dict]] = []
        self.rejected: list[str] = []

    # ------------------------------------------------------------------ helpers
    def _throttled(self, api: str) -> bool:
        n = self.throttle.get(api, 0)
        if n > 0:
            self.throttle[api] = n - 1
            return True
        return False

    def _page(self, items: list, token: str | None) -> tuple[list, str | None]:
        start = int(token.split("-")[1]) if token else 0
        end = start + self.page_size
        return items[start:end], (f"page-{end}" if end < len(items) else None)

    @staticmethod
    def _ec2_error(status: int, code: str, msg: str):
        return (status, f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{code}</Code>'
                        f"<Message>{escape(msg)}</Message></Error></Errors><RequestID>fake</RequestID></Response>",
                {"Content-Type": "text/xml;charset=UTF-8"})

    @staticmethod
    def _json_error(status: int, code: str, msg: str):
        return status, {"__type": code, "message": msg}, {"x-amzn-ErrorType": code}

    # ------------------------------------------------------------------ routes
    def _root(self, req: Request):
        target = req.headers.get("X-Amz-Target")
        if target is not None:
            return self._pricing(req, target)
        if req.content_type != "application/x-www-form-urlencoded":
            return self._ec2_error(400, "InvalidParameterValue", f"unexpected content type {req.content_type}")
        problem = verify_sigv4(req, self.access_key, self.secret, self.region, "ec2")
        if problem:
            self.rejected.append(problem)
            return self._ec2_error(401, "AuthFailure", "AWS was not able to validate the provided access credentials")
        form = dict(parse_qsl(req.text, keep_blank_values=True))
        if form.get("Version") != EC2_VERSION:
            return self._ec2_error(400, "InvalidParameterValue", f"Version {form.get('Version')!r}")
        action = form.get("Action")
        if self._throttled(action or ""):
            return self._ec2_error(503, "RequestLimitExceeded", "Request limit exceeded.")
        self.seen.append((action or "", form))
        if action == "DescribeInstances":
            return self._describe_instances(form)
        if action == "DescribeReservedInstances":
            return self._describe_reserved(form)
        return self._ec2_error(400, "InvalidAction", f"The action {action} is not valid for this web service.")

    def _describe_instances(self, form: dict):
        if form.get("Filter.1.Name") != "instance-state-name" or form.get("Filter.1.Value.1") != "running":
            return self._ec2_error(400, "InvalidParameterValue", "expected the instance-state-name=running filter")
        mr = int(form.get("MaxResults", "1000"))
        if not 5 <= mr <= 1000:
            return self._ec2_error(400, "InvalidParameterValue", "MaxResults must be 5..1000")
        items, nxt = self._page(self.instances, form.get("NextToken"))
        res = []
        for i in items:
            tags = f"<tagSet><item><key>service</key><value>{escape(i['service'])}</value></item></tagSet>" \
                if i.get("service") else ""
            life = f"<instanceLifecycle>{i['lifecycle']}</instanceLifecycle>" if i.get("lifecycle") else ""
            res.append(f"<item><reservationId>r-{i['id']}</reservationId><ownerId>123456789012</ownerId><instancesSet>"
                       f"<item><instanceId>{i['id']}</instanceId><instanceType>{i['type']}</instanceType>"
                       f"<instanceState><code>16</code><name>running</name></instanceState>"
                       f"<placement><availabilityZone>{self.region}a</availabilityZone></placement>{life}{tags}"
                       f"</item></instancesSet></item>")
        token = f"<nextToken>{nxt}</nextToken>" if nxt else ""
        return (200, f'<?xml version="1.0" encoding="UTF-8"?>\n<DescribeInstancesResponse '
                     f'xmlns="http://ec2.amazonaws.com/doc/{EC2_VERSION}/"><requestId>fake</requestId>'
                     f"<reservationSet>{''.join(res)}</reservationSet>{token}</DescribeInstancesResponse>",
                {"Content-Type": "text/xml;charset=UTF-8"})

    def _describe_reserved(self, form: dict):
        if form.get("Filter.1.Name") != "state" or form.get("Filter.1.Value.1") != "active":
            return self._ec2_error(400, "InvalidParameterValue", "expected the state=active filter")
        items = []
        for r in self.reserved:
            rc = (f"<recurringCharges><item><frequency>Hourly</frequency><amount>{r.get('hourly', 0.0)}</amount>"
                  f"</item></recurringCharges>") if r.get("hourly") else ""
            items.append(f"<item><reservedInstancesId>{r['id']}</reservedInstancesId><instanceType>{r['type']}"
                         f"</instanceType><instanceCount>{r['count']}</instanceCount><duration>"
                         f"{r.get('duration', 31536000)}</duration><fixedPrice>{r.get('fixed', 0.0)}</fixedPrice>"
                         f"<usagePrice>{r.get('usage', 0.0)}</usagePrice><state>active</state>"
                         f"<offeringType>No Upfront</offeringType>{rc}</item>")
        return (200, f'<?xml version="1.0" encoding="UTF-8"?>\n<DescribeReservedInstancesResponse '
                     f'xmlns="http://ec2.amazonaws.com/doc/{EC2_VERSION}/"><requestId>fake</requestId>'
                     f"<reservedInstancesSet>{''.join(items)}</reservedInstancesSet>"
                     "</DescribeReservedInstancesResponse>",
                {"Content-Type": "text/xml;charset=UTF-8"})

    def _pricing(self, req: Request, target: str):
        if req.content_type != "application/x-amz-json-1.1":
            return self._json_error(400, "SerializationException", f"content type {req.content_type}")
        problem = verify_sigv4(req, self.access_key, self.secret, self.pricing_region, "pricing")
        if problem:
            self.rejected.append(problem)
            return self._json_error(403, "InvalidSignatureException", problem)
        if target != "AWSPriceListService.GetProducts":
            return self._json_error(400, "UnknownOperationException", target)
        if self._throttled("GetProducts"):
            return self._json_error(400, "ThrottlingException", "Rate exceeded")
        body = req.json or {}
        self.seen.append(("GetProducts", body))
        if body.get("ServiceCode") != "AmazonEC2":
            return self._json_error(400, "InvalidParameterException", "ServiceCode")
        f = {x.get("Field"): x.get("Value") for x in body.get("Filters") or [] if x.get("Type") == "TERM_MATCH"}
        itype, region = f.get("instanceType"), f.get("regionCode")
        items = []
        if itype in self.prices and region == self.region and f.get("operatingSystem") == "Linux":
            usd, vcpu, mem = self.prices[itype]
            items = [price_item(itype, region, usd, vcpu, mem)]
        # two entries without an hourly on-demand price first (as reserved-only SKUs come): with pages
        # of 2 the price is on the second page
        decoy = json.dumps({"product": {"attributes": {"instanceType": itype}}, "terms": {"Reserved": {}}})
        page, nxt = self._page([decoy, decoy] + items, body.get("NextToken"))
        out = {"FormatVersion": "aws_v1", "PriceList": page}
        if nxt:
            out["NextToken"] = nxt
        return 200, out, {"Content-Type": "application/x-amz-json-1.1"}

    def _plans(self, req: Request):
        problem = verify_sigv4(req, self.access_key, self.secret, "us-east-1", "savingsplans")
        if problem:
            self.rejected.append(problem)
            return self._json_error(403, "InvalidSignatureException", problem)
        body = req.json or {}
        self.seen.append(("DescribeSavingsPlans", body))
        if body.get("states") != ["active"]:
            return self._json_error(400, "ValidationException", "states")
        page, nxt = self._page(self.plans, body.get("nextToken"))
        out = {"savingsPlans": [{"savingsPlanId": p["id"], "state": "active", "commitment": str(p["commitment"]),
                                 "savingsPlanType": "Compute", "currency": "USD"} for p in page]}
        if nxt:
            out["nextToken"] = nxt
        return 200, out


class FakeOpenCost(FakeHTTP):
    """GET /allocation with window, aggregate and accumulate checked; answers the documented
    shape ``{"code": 200, "data": [{name: allocation}]}``."""

    def __init__(self, allocations: dict[str, dict]):
        super().__init__({"GET /allocation": self._alloc})
        self.allocations = allocations  # name -> {"totalCost": .., "cpuCost": .., "ramCost": ..} over a day
        self.fail_next = 0

    def _alloc(self, req: Request):
        if self.fail_next > 0:
            self.fail_next -= 1
            return 500, {"code": 500, "message": "error computing allocation"}
        if not req.query.get("window") or req.query.get("aggregate") not in ("namespace", "deployment", "service") \
                or req.query.get("accumulate") != "true":
            return 400, {"code": 400, "message": f"bad parameters {sorted(req.query.items())}"}
        data = {}
        for name, costs in self.allocations.items():
            data[name] = {"name": name, "window": {"start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z"},
                          **costs}
        return 200, {"code": 200, "data": [data]}
