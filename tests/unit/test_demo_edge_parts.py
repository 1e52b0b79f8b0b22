"""The demo edge's pure parts (demo/edge.py): ports, wiring of the exporters, certificates,
the routed VCL, fail2ban's jail, the services' cache headers; no server started."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from core.config import load_data
from core.spec import ConfigError
from demo import edge
from demo.service import DemoService
from demo.varnish_conf import render_routed_vcl
from stack import runtime


def _resolved(tmp_path, **over):
    data = {"stack": {"run_dir": str(tmp_path / "run")}}
    data.update(over)
    return runtime.resolve(load_data(data), persist=False)


def test_ports_listeners_and_wiring(tmp_path):
    r = _resolved(tmp_path)
    lst = edge.listeners(r)
    assert len(lst) == len(r["platform"]["services"]) * len(r["platform"]["regions"])
    assert {x["region"] for x in lst if x["tls"]} == {"singapore", "tokyo"}
    assert edge.expiring_endpoint(r) == "integrated-platform-tokyo"
    p = edge.paths(r["stack"]["run_dir"])
    cdn, sec = r["exporters"]["cdn"], r["exporters"]["security"]
    assert cdn["redis"]["instances"][0]["url"] == f"redis://127.0.0.1:{r['demo']['edge']['ports']['redis']}/0"
    assert cdn["cloudflare"]["api_url"].endswith(f":{r['demo']['edge']['ports']['cloudflare']}/client/v4")
    assert cdn["cloudflare"]["token_file"] == str(p["cf_token"])
    assert len(sec["tls"]["endpoints"]) == 8 and all(e["ca_file"] == str(p["ca_cert"]) for e in sec["tls"]["endpoints"])
    assert sec["access"]["vhosts"] == [x["vhost"] for x in lst]
    # the resolved config is still a valid config (what the programs load)
    load_data({k: v for k, v in r.items() if k != "runtime"})


def test_short_scrape_timeouts_keep_the_resolved_config_valid(tmp_path):
    r = _resolved(tmp_path, stack={"run_dir": str(tmp_path / "run"), "scrape_interval": "1s",
                                   "scrape_timeout": "900ms"}, exporters={"app": {"probe_timeout": "500ms"}})
    assert r["exporters"]["security"]["tls"]["probe_timeout"] < 0.9
    assert r["exporters"]["cdn"]["varnish"]["timeout"] < 0.9 and r["exporters"]["cdn"]["redis"]["timeout"] < 0.9
    load_data({k: v for k, v in r.items() if k != "runtime"})


def test_configured_sources_are_kept_and_a_disabled_edge_has_none(tmp_path):
    mine = [{"name": "prod", "url": "redis://10.0.0.1:6379/0", "key_prefixes": ["page:"]}]
    r = _resolved(tmp_path, exporters={"cdn": {"redis": {"instances": mine}}})
    assert [i["name"] for i in r["exporters"]["cdn"]["redis"]["instances"]] == ["prod"]
    off = _resolved(tmp_path / "off", demo={"edge": {"enabled": False}})
    assert off["runtime"]["ports"]["edge"] == {} and off["exporters"]["cdn"]["redis"]["instances"] == []
    assert edge.launcher_programs(off) == []
    names = [s["name"] for s in edge.launcher_programs(r)]
    assert names == ["edge-redis", "edge-varnish", "edge-cloudflare", "edge-nginx", "edge-fail2ban"]
    assert all(s["argv"] and s["reads"] == [] for s in edge.launcher_programs(r))


def test_tls_regions_must_be_regions():
    with pytest.raises(ConfigError) as e:
        load_data({"demo": {"edge": {"tls_regions": ["mars"]}}})
    assert e.value.key == "demo.edge.tls_regions[0]"


def test_certificates_one_close_to_expiry_and_renewal(tmp_path):
    r = _resolved(tmp_path)
    p = edge.paths(r["stack"]["run_dir"])
    edge.ensure_certs(r, p)
    days = {x["name"]: edge.cert_days_left(edge.cert_paths(p, x["name"])[0]) for x in edge.listeners(r) if x["tls"]}
    short = edge.expiring_endpoint(r)
    assert 44 < days.pop(short) < 45.1
    assert all(364 < d < 365.1 for d in days.values())
    crt = edge.cert_paths(p, short)[0]
    before = crt.read_bytes()
    edge.ensure_certs(r, p)  # a second `up` keeps them
    assert crt.read_bytes() == before
    c, k = edge.make_leaf(p, "x.opsstack.test", 3)  # what cert-expiry leaves behind: made again
    crt.write_bytes(c)
    edge.ensure_certs(r, p)
    assert edge.cert_days_left(crt) > 44
    assert oct(p["ca_key"].stat().st_mode & 0o777) == "0o600"


def test_routed_vcl_compiles(tmp_path):
    vcl = render_routed_vcl({"a-seoul.opsstack.test": ("127.0.0.1", 8001), "a-tokyo.opsstack.test": ("127.0.0.1", 8002)})
    assert 'req.http.host == "a-tokyo.opsstack.test"' in vcl and '.port = "8002"' in vcl
    assert "__ORIGIN" not in vcl
    varnishd = shutil.which("varnishd", path="/usr/sbin:/usr/bin")
    if varnishd is None:
        pytest.skip("varnishd not installed")
    f = tmp_path / "t.vcl"
    f.write_text(vcl)
    res = subprocess.run([varnishd, "-C", "-j", "none", "-f", str(f), "-n", str(tmp_path / "w")], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]


def test_fail2ban_jail_never_touches_a_firewall(tmp_path):
    p = edge.paths(tmp_path)
    files = {f.name: t for f, t in edge.fail2ban_files(p, "[Definition]\n").items()}
    jail = files["jail.local"]
    assert "action = dummy[" in jail and "ignoreself = false" in jail and f"logpath = {p['access_log']}" in jail
    assert f"dbfile = {p['f2b_db']}" in files["fail2ban.local"]


def test_service_cache_headers(tmp_path):
    r = _resolved(tmp_path)
    svc = DemoService.from_config({k: v for k, v in r.items() if k != "runtime"}, "user-app")
    import re

    m = re.match(r"^/api/events/(\d{1,9})$", "/api/events/7")
    h = svc.cache_headers("seoul", "/api/events/:id", 200, m, ("events", "event:{0}"))
    assert h == {"X-Cache-Class": "api", "xkey": "events event:7", "Cache-Tag": "events,event:7"}
    assert svc.cache_headers("seoul", "/api/events/:id", 503, m, ("events",))["X-Cache-Class"] == "none"
    assert "no-store" in svc.cache_headers("seoul", "/api/me", 200, None, None)["Cache-Control"]
    svc.apply_fault("cache-miss-storm", region="seoul")
    assert svc.cache_headers("seoul", "/api/events/:id", 200, m, ("events",))["X-Cache-Class"] == "none"
    assert svc.cache_headers("tokyo", "/api/events/:id", 200, m, ("events", "event:{0}"))["X-Cache-Class"] == "api"
    assert svc.rcache is not None and svc.rcache.key("events", "seoul", "/api/events/7").startswith("cache:events:")
