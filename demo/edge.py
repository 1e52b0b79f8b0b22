"""The demo's edge: the real traffic path in front of the demo services (docs/demo.md "Edge").

    client -> nginx (ModSecurity v3 + OWASP CRS, blocking; one listener per service x region,
              TLS with the demo's own CA for demo.edge.tls_regions; JSON access log, JSON audit log)
           -> varnishd (one, routes by Host to the service's region port; per-class TTLs, xkey tags)
           -> the demo service (which uses the stack's own redis-server as a shared cache)
    fail2ban watches nginx's access log (jail opsstack-auth, 401/403 per address, dummy action);
    the fake Cloudflare (demo/cloudflare.py) serves the CDN analytics of the seed's profile.

Everything lives in <run_dir>/edge/<part>; ports are free loopback ports chosen by `opsstack up`
(``allocate``, remembered in ports.json like the others) and written to demo.edge.ports of the
resolved config. ``render`` writes the files, ``launcher_programs`` says what supervisor runs
(raw argv), ``wire`` points exporters.cdn / exporters.security at these parts. The edge faults
(waf-attack, cert-expiry) and the cache invalidation a cache-miss-storm fix calls
(``purge_tags``) are here too; origin-overload and cache-miss-storm act in the services.
"""
from __future__ import annotations

import datetime as dt
import http.client
import os
import shutil
import signal
import ssl
import sys
import time
from pathlib import Path

from core.procs import port_open, unix_socket_path
from core.resp import RedisConn, RedisError
from demo.rcache import KEY_PREFIX, tag_set
from demo.varnish_conf import render_routed_vcl, varnishd_argv

ZONE_ID = "0b5d3e6a1c2f4a7b8c9d0e1f2a3b4c5d"  # the fake Cloudflare's zone (plan pro)
DOMAIN = "opsstack.test"
JAIL = "opsstack-auth"
GOOD_CERT_DAYS = 365
FAULT_CERT_DAYS = 3  # cert-expiry: under the 7 d critical threshold
ORIGIN_FIRST_BYTE_TIMEOUT = 6  # seconds; over the largest latency-spike (demo.faults.max_latency 5s)
MODSEC_MODULE = Path("/usr/lib/nginx/modules/ngx_http_modsecurity_module.so")
CRS_RULES = Path("/usr/share/modsecurity-crs/rules")
CRS_SETUP = Path("/etc/modsecurity/crs/crs-setup.conf")
PARTS = ("nginx", "varnish", "redis", "fail2ban", "cloudflare")


def _which(name: str) -> str:
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/bin") or name


# ----------------------------------------------------------------------------- layout
def paths(run_dir) -> dict[str, Path]:
    root = Path(run_dir) / "edge"
    n, v, r, f, c, t = (root / p for p in ("nginx", "varnish", "redis", "fail2ban", "cloudflare", "tls"))
    return {"root": root, "nginx": n, "varnish": v, "redis": r, "fail2ban": f, "cloudflare": c, "tls": t,
            "nginx_conf": n / "nginx.conf", "modsec_conf": n / "modsec.conf", "nginx_pid": n / "nginx.pid",
            "access_log": n / "access.json", "audit_log": n / "modsec_audit.json", "error_log": n / "error.log",
            "vcl": v / "opsstack.vcl", "varnish_work": v / "work", "redis_conf": r / "redis.conf",
            "f2b_conf": f / "conf", "f2b_socket": unix_socket_path(f / "fail2ban.sock"), "f2b_pid": f / "fail2ban.pid",
            "f2b_db": f / "fail2ban.sqlite3", "f2b_log": f / "fail2ban.log", "cf_token": c / "token",
            "ca_cert": t / "ca.crt", "ca_key": t / "ca.key"}


def vhost(service: str, region: str) -> str:
    return f"{service}-{region}.{DOMAIN}"


def enabled(cfg: dict) -> bool:
    return bool(cfg["demo"]["enabled"] and cfg["demo"]["edge"]["enabled"])


def allocate(cfg: dict, pick) -> dict:
    """The edge's ports: ``pick(key, "auto")`` is the runtime's port picker (remembered ports)."""
    out: dict = {"nginx": {}}
    for s in cfg["platform"]["services"]:
        for r in cfg["platform"]["regions"]:
            out["nginx"].setdefault(s["name"], {})[r] = pick(f"edge/nginx/{s['name']}/{r}", "auto")
    for k in ("varnish", "varnish_admin", "redis", "cloudflare"):
        out[k] = pick(f"edge/{k}", "auto")
    return out


def flat_ports(ports: dict) -> dict[str, int]:
    flat = {f"edge/{k}": v for k, v in ports.items() if k != "nginx"}
    flat.update({f"edge/nginx/{s}/{r}": p for s, d in (ports.get("nginx") or {}).items() for r, p in d.items()})
    return flat


def tls_regions(cfg: dict) -> list[str]:
    """demo.edge.tls_regions, or (null) every region but the home region."""
    e = cfg["demo"]["edge"]
    if e["tls_regions"] is not None:
        return list(e["tls_regions"])
    return [r for r in cfg["platform"]["regions"] if r != cfg["demo"]["home_region"]]


def listeners(cfg: dict) -> list[dict]:
    """Every nginx listener: service, region, port, vhost, tls, endpoint name."""
    e = cfg["demo"]["edge"]
    tls = set(tls_regions(cfg))
    out = []
    for s in cfg["platform"]["services"]:
        for r in cfg["platform"]["regions"]:
            port = ((e.get("ports") or {}).get("nginx") or {}).get(s["name"], {}).get(r)
            if port:
                out.append({"service": s["name"], "region": r, "port": int(port), "vhost": vhost(s["name"], r),
                            "tls": r in tls, "name": f"{s['name']}-{r}"})
    return out


def expiring_endpoint(cfg: dict) -> str | None:
    """The one TLS endpoint whose certificate is 'close to expiry' (demo.edge.expiring_cert_days)."""
    tls = [x for x in listeners(cfg) if x["tls"]]
    return tls[-1]["name"] if tls else None


def _under_scrape(resolved: dict, section: dict, key: str) -> None:
    """A timeout of a source read at scrape time, made shorter than stack.scrape_timeout (the
    schema's rule) when it is not: the demo's sources are wired in, whatever the intervals."""
    limit = resolved["stack"]["scrape_timeout"]
    if section[key] >= limit:
        section[key] = round(limit * 0.8, 3)


def wire(resolved: dict) -> None:
    """Point exporters.cdn and exporters.security at the edge's parts (what is configured stays).
    The timeouts of what is read at scrape time are kept under stack.scrape_timeout."""
    host = resolved["stack"]["host"]
    ports = resolved["demo"]["edge"]["ports"]
    p = paths(resolved["stack"]["run_dir"])
    cdn = resolved["exporters"]["cdn"]
    if not cdn["varnish"]["instances"]:
        cdn["varnish"]["instances"] = [{"name": "demo", "workdir": str(p["varnish_work"]),
                                        "url": f"http://{host}:{ports['varnish']}"}]
    if not cdn["redis"]["instances"]:
        cdn["redis"]["instances"] = [{"name": "demo", "url": f"redis://{host}:{ports['redis']}/0",
                                      "key_prefixes": [KEY_PREFIX]}]
    cf = cdn["cloudflare"]
    if not cf["enabled"] and not cf["zones"]:
        cf.update(enabled=True, api_url=f"http://{host}:{ports['cloudflare']}/client/v4", token=None,
                  token_file=str(p["cf_token"]), zones=[{"name": "demo", "id": ZONE_ID}])
    sec = resolved["exporters"]["security"]
    lst = listeners(resolved)
    if not sec["tls"]["endpoints"]:
        sec["tls"]["endpoints"] = [{"name": x["name"], "address": f"{host}:{x['port']}", "server_name": x["vhost"],
                                    "ca_file": str(p["ca_cert"])} for x in lst if x["tls"]]
    if not sec["access"]["logs"]:
        sec["access"]["logs"] = [{"name": "edge", "path": str(p["access_log"]), "format": "json", "vhost": None}]
    if not sec["access"]["vhosts"]:
        sec["access"]["vhosts"] = [x["vhost"] for x in lst]
    if not sec["waf"]["logs"]:
        sec["waf"]["logs"] = [{"name": "modsec", "path": str(p["audit_log"])}]
    if not sec["fail2ban"]["db_path"]:
        sec["fail2ban"]["db_path"] = str(p["f2b_db"])
    for section, key in ((cdn["varnish"], "timeout"), (cdn["redis"], "timeout"), (sec["tls"], "probe_timeout")):
        _under_scrape(resolved, section, key)


# ----------------------------------------------------------------------------- certificates
def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _key():
    from cryptography.hazmat.primitives.asymmetric import ec  # heavy: only when certificates are made

    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def ensure_ca(p: dict) -> None:
    """The demo's own CA (10 years), made once per run folder."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    if p["ca_cert"].exists() and p["ca_key"].exists():
        return
    key = _key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "opsstack demo CA")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    _write_private(p["ca_key"], _pem_key(key))
    p["ca_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def make_leaf(p: dict, host_name: str, days: float) -> tuple[bytes, bytes]:
    """(cert PEM, key PEM) of a leaf for ``host_name`` (and 127.0.0.1) signed by the demo CA,
    valid for ``days`` from now."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_key = serialization.load_pem_private_key(p["ca_key"].read_bytes(), None)
    ca = x509.load_pem_x509_certificate(p["ca_cert"].read_bytes())
    key = _key()
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host_name)]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host_name),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def cert_days_left(path: Path) -> float | None:
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None
    return (cert.not_valid_after_utc - dt.datetime.now(dt.timezone.utc)).total_seconds() / 86400


def cert_paths(p: dict, name: str) -> tuple[Path, Path]:
    return p["tls"] / f"{name}.crt", p["tls"] / f"{name}.key"


def ensure_certs(cfg: dict, p: dict) -> None:
    """A leaf per TLS listener; one of them (``expiring_endpoint``) valid expiring_cert_days only.
    Made again when missing or when it has drifted too close to its end (a leaf left by a
    cert-expiry fault is replaced on the next `up` too)."""
    ensure_ca(p)
    expiring = expiring_endpoint(cfg)
    short = cfg["demo"]["edge"]["expiring_cert_days"]
    for x in listeners(cfg):
        if not x["tls"]:
            continue
        crt, key = cert_paths(p, x["name"])
        days = short if x["name"] == expiring else GOOD_CERT_DAYS
        left = cert_days_left(crt) if key.exists() else None
        # renew when under (days - 10), or when longer than wanted (the setting was lowered)
        if left is None or left < min(days - 10, 31 + 5) or left > days + 1:
            c, k = make_leaf(p, x["vhost"], days)
            _write_private(key, k)
            crt.write_bytes(c)


# ----------------------------------------------------------------------------- config files
def nginx_conf(cfg: dict, p: dict, log_format: str) -> str:
    host = cfg["stack"]["host"]
    ports = cfg["demo"]["edge"]["ports"]
    n = p["nginx"]
    user = "user root root;\n" if os.geteuid() == 0 else ""  # as root, workers would be nobody
    servers = []
    for x in listeners(cfg):
        tls = ""
        if x["tls"]:
            crt, key = cert_paths(p, x["name"])
            tls = (f"    ssl_certificate {crt};\n    ssl_certificate_key {key};\n"
                   "    ssl_protocols TLSv1.2 TLSv1.3;\n")
        servers.append(
            f"  server {{\n    listen {host}:{x['port']}{' ssl' if x['tls'] else ''};\n"
            f"    server_name {x['vhost']};\n{tls}"
            f"    location / {{\n      proxy_pass http://varnish;\n      proxy_set_header Host {x['vhost']};\n"
            f"      proxy_set_header X-Forwarded-For $remote_addr;\n    }}\n  }}\n")
    return (f"# generated by `opsstack up` (demo/edge.py)\nload_module {MODSEC_MODULE};\n{user}"
            f"daemon off;\nmaster_process on;\nworker_processes 1;\npid {p['nginx_pid']};\n"
            f"error_log {p['error_log']} warn;\nevents {{ worker_connections 1024; }}\nhttp {{\n"
            f"  {log_format}\n"
            f"  client_body_temp_path {n}/tmp/body; proxy_temp_path {n}/tmp/proxy;\n"
            f"  fastcgi_temp_path {n}/tmp/fcgi; uwsgi_temp_path {n}/tmp/uwsgi; scgi_temp_path {n}/tmp/scgi;\n"
            f"  access_log {p['access_log']} opsstack_json;\n  server_tokens off;\n"
            f"  modsecurity on;\n  modsecurity_rules_file {p['modsec_conf']};\n"
            f"  upstream varnish {{ server {host}:{ports['varnish']}; keepalive 16; }}\n"
            "  proxy_http_version 1.1;\n  proxy_set_header Connection \"\";\n"
            "  proxy_connect_timeout 2s;\n  proxy_read_timeout 30s;\n"
            + "".join(servers) + "}\n")


def modsec_conf(p: dict) -> str:
    n = p["nginx"]
    return ("# generated by `opsstack up`: ModSecurity v3 + OWASP CRS, blocking (anomaly scoring)\n"
            "SecRuleEngine On\nSecRequestBodyAccess On\nSecRequestBodyLimit 1048576\n"
            "SecRequestBodyNoFilesLimit 131072\nSecResponseBodyAccess Off\n"
            'SecRule REQUEST_HEADERS:Content-Type "^application/json" '
            '"id:200001,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON"\n'
            "SecAuditEngine RelevantOnly\n"
            'SecAuditLogRelevantStatus "^(?:5|4(?!04))"\nSecAuditLogParts ABIJDEFHZ\nSecAuditLogType Serial\n'
            f"SecAuditLogFormat JSON\nSecAuditLog {p['audit_log']}\nSecTmpDir {n}/tmp\nSecDataDir {n}/tmp\n"
            f"Include {CRS_SETUP}\nInclude {CRS_RULES}/*.conf\n")


def redis_conf(cfg: dict, p: dict) -> str:
    return (f"# generated by `opsstack up`: the demo services' cache; no persistence\n"
            f"bind {cfg['stack']['host']}\nport {cfg['demo']['edge']['ports']['redis']}\nprotected-mode yes\n"
            f"daemonize no\ndir {p['redis']}\nsave \"\"\nappendonly no\nlogfile \"\"\n"
            "maxmemory 64mb\nmaxmemory-policy allkeys-lru\n")


def fail2ban_files(p: dict, log_filter: str) -> dict[Path, str]:
    c = p["f2b_conf"]
    return {
        c / "fail2ban.local": (f"[Definition]\nloglevel = INFO\nlogtarget = {p['f2b_log']}\nsocket = {p['f2b_socket']}\n"
                               f"pidfile = {p['f2b_pid']}\ndbfile = {p['f2b_db']}\ndbpurgeage = 1d\nallowipv6 = auto\n"),
        c / "filter.d" / f"{JAIL}.conf": log_filter,
        # every request of the demo comes from a loopback address: none is ignored; the dummy
        # action records the ban in fail2ban's database and its own file, never a firewall
        c / "jail.local": (f"[DEFAULT]\nbackend = polling\nignoreself = false\nignoreip =\n\n[{JAIL}]\n"
                           f"enabled = true\nfilter = {JAIL}\nlogpath = {p['access_log']}\nmaxretry = 5\n"
                           f"findtime = 600\nbantime = 600\naction = dummy[target={p['fail2ban']}/banned]\n"),
    }


def render(cfg: dict, log_format: str, log_filter: str) -> dict:
    """Write every file the edge's programs read (certificates, nginx, ModSecurity, VCL, Redis,
    fail2ban, the fake Cloudflare's token). ``log_format``/``log_filter``: the nginx log_format
    and fail2ban filter of the security exporter's access log parser. Returns paths()."""
    p = paths(cfg["stack"]["run_dir"])
    for part in (*PARTS, "tls"):
        p[part].mkdir(parents=True, exist_ok=True)
    (p["nginx"] / "tmp").mkdir(exist_ok=True)
    p["varnish_work"].mkdir(exist_ok=True)
    for f in (p["access_log"], p["audit_log"]):
        f.touch(exist_ok=True)
    ensure_certs(cfg, p)
    p["nginx_conf"].write_text(nginx_conf(cfg, p, log_format))
    p["modsec_conf"].write_text(modsec_conf(p))
    host = cfg["stack"]["host"]
    origins = {x["vhost"]: (host, int(cfg["demo"]["ports"][x["service"]][x["region"]])) for x in listeners(cfg)}
    p["vcl"].write_text(render_routed_vcl(origins, first_byte_timeout=ORIGIN_FIRST_BYTE_TIMEOUT))
    p["redis_conf"].write_text(redis_conf(cfg, p))
    if not (p["f2b_conf"] / "jail.conf").exists():
        shutil.copytree("/etc/fail2ban", p["f2b_conf"], dirs_exist_ok=True)
        for old in (p["f2b_conf"] / "jail.d").glob("*"):
            old.unlink()
    for f, text in fail2ban_files(p, log_filter).items():
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    if not p["cf_token"].exists():
        _write_private(p["cf_token"], os.urandom(24).hex().encode())
    return p


def launcher_programs(cfg: dict) -> list[dict]:
    """What supervisor runs for the edge (raw argv; ready when the port answers or the socket exists).
    Redis, Varnish and the fake Cloudflare start in stage 1 (with the database): the services
    find their cache, and nginx (stage 2, with the services) its Varnish, from their first request."""
    if not enabled(cfg) or not cfg["demo"]["edge"].get("ports"):
        return []
    p = paths(cfg["stack"]["run_dir"])
    host = cfg["stack"]["host"]
    ports = cfg["demo"]["edge"]["ports"]
    first = listeners(cfg)[0]
    return [
        {"name": "edge-redis", "argv": [_which("redis-server"), str(p["redis_conf"])],
         "ready_tcp": ports["redis"], "reads": [], "stage": 1,
         "url": f"redis://{host}:{ports['redis']}/0"},
        {"name": "edge-varnish", "argv": varnishd_argv(_which("varnishd"), str(p["varnish_work"]),
                                                      f"{host}:{ports['varnish']}", f"{host}:{ports['varnish_admin']}",
                                                      str(p["vcl"])),
         "ready_tcp": ports["varnish"], "reads": [], "stage": 1,
         "url": f"http://{host}:{ports['varnish']}"},
        {"name": "edge-cloudflare", "argv": [sys.executable, "-m", "demo.cloudflare", "--host", host,
                                             "--port", str(ports["cloudflare"]), "--token-file", str(p["cf_token"]),
                                             "--zone", f"{ZONE_ID}:pro", "--seed", str(cfg["demo"]["seed"])],
         "ready_tcp": ports["cloudflare"], "reads": [], "stage": 1,
         "url": f"http://{host}:{ports['cloudflare']}/client/v4"},
        {"name": "edge-nginx", "argv": [_which("nginx"), "-p", str(p["nginx"]), "-c", str(p["nginx_conf"]),
                                        "-e", str(p["error_log"])],
         "ready_tcp": first["port"], "reads": [],
         "url": f"{'https' if first['tls'] else 'http'}://{host}:{first['port']}/ ({first['vhost']})"},
        {"name": "edge-fail2ban", "argv": [_which("fail2ban-server"), "-f", "-x", "-c", str(p["f2b_conf"])],
         "ready_path": str(p["f2b_socket"]), "reads": []},
    ]


def tcp_ready(host: str, port: int) -> bool:
    return port_open(host, int(port))


# ----------------------------------------------------------------------------- clients of the edge
def client_context(p: dict) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(p["ca_cert"]))
    return ctx


def request(cfg: dict, x: dict, method: str, path: str, headers: dict | None = None, body: bytes | None = None,
            source: str | None = None, timeout: float = 15, ctx: ssl.SSLContext | None = None) -> int:
    """One request through nginx listener ``x`` (listeners()); the status, or 0 on a transport error."""
    host = cfg["stack"]["host"]
    src = (source, 0) if source else None
    h = {"Host": x["vhost"], "Accept": "application/json", "User-Agent": BROWSER}
    h.update(headers or {})
    try:
        if x["tls"]:
            conn = http.client.HTTPSConnection(host, x["port"], timeout=timeout, source_address=src,
                                               context=ctx or client_context(paths(cfg["stack"]["run_dir"])))
        else:
            conn = http.client.HTTPConnection(host, x["port"], timeout=timeout, source_address=src)
        try:
            conn.request(method, path, body=body, headers=h)
            resp = conn.getresponse()
            resp.read()
            return resp.status
        finally:
            conn.close()
    except (OSError, http.client.HTTPException):
        return 0


BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
# the waf-attack mix: (what, method, path, extra headers, body); every one is blocked by CRS at PL1
ATTACKS = [
    ("sqli", "GET", "/api/events?id=1%27%20OR%20%271%27=%271", {}, None),
    ("sqli", "GET", "/api/events/1?q=1%20UNION%20SELECT%20password%20FROM%20users--", {}, None),
    ("xss", "GET", "/api/events?q=%3Cscript%3Ealert(document.cookie)%3C/script%3E", {}, None),
    ("xss", "GET", "/api/me?next=javascript:alert(1)%3Cimg%20src=x%20onerror=alert(1)%3E", {}, None),
    ("scanner", "GET", "/api/events", {"User-Agent": "sqlmap/1.7.2#stable (https://sqlmap.org)"}, None),
    ("scanner", "GET", "/admin/", {"User-Agent": "Nikto/2.5.0"}, None),
    ("protocol", "GET", "/api/events", {"Content-Type": "application/x-www-form-urlencoded"}, b"a=b"),
]
ATTACKERS = ("127.77.0.10", "127.77.0.11", "127.77.0.12")


WAF_ATTACK_REQUESTS = 1600  # ~460 per class but protocol on one vhost: over 1 blocked/s for 5 min


WAF_ATTACK_SECONDS = 30.0  # spread over a few scrapes: the blocked counters grow while they are read


def waf_attack(cfg: dict, count: int = WAF_ATTACK_REQUESTS, service: str | None = None,
               region: str | None = None, seconds: float = WAF_ATTACK_SECONDS) -> dict:
    """A burst of ``count`` real SQLi/XSS/scanner/protocol requests through one nginx listener
    (``service``/``region``; default the first service's home-region listener) from a few
    loopback attacker addresses (fail2ban bans them), paced over ``seconds`` at most (as fast as
    nginx answers when that is slower). {status: n} of the answers."""
    lst = listeners(cfg)
    if not lst:
        raise ValueError("the demo edge is not running (no demo.edge.ports; start it with `make up`)")
    service = service or lst[0]["service"]
    region = region or cfg["demo"]["home_region"]
    x = next((x for x in lst if x["service"] == service and x["region"] == region), None)
    if x is None:
        raise ValueError(f"no edge listener for service {service!r} region {region!r}")
    ctx = client_context(paths(cfg["stack"]["run_dir"]))
    out: dict[int, int] = {}
    n = max(1, int(count))
    t0 = time.monotonic()
    for i in range(n):
        ahead = t0 + seconds * i / n - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
        _, method, path, hdr, body = ATTACKS[i % len(ATTACKS)]
        code = request(cfg, x, method, path, hdr, body, source=ATTACKERS[i % len(ATTACKERS)], ctx=ctx)
        out[code] = out.get(code, 0) + 1
    return out


def reload_nginx(cfg: dict) -> None:
    """SIGHUP the running nginx master (it re-reads its config and certificates)."""
    pidf = paths(cfg["stack"]["run_dir"])["nginx_pid"]
    try:
        pid = int(pidf.read_text().strip())
    except (OSError, ValueError):
        raise ValueError(f"nginx of the demo edge is not running (no pid in {pidf})") from None
    os.kill(pid, signal.SIGHUP)


def _endpoint(cfg: dict, service: str | None, region: str | None) -> dict:
    tls = [x for x in listeners(cfg) if x["tls"]]
    if not tls:
        raise ValueError("no TLS listener in the demo edge (demo.edge.tls_regions)")
    pick = [x for x in tls if (service is None or x["service"] == service) and (region is None or x["region"] == region)]
    if not pick:
        raise ValueError(f"no TLS listener for service {service or 'any'} region {region or 'any'} "
                         f"(TLS regions: {', '.join(tls_regions(cfg))})")
    return pick[0]


def cert_expiry(cfg: dict, service: str | None = None, region: str | None = None,
                days: float = FAULT_CERT_DAYS) -> dict:
    """Swap one endpoint's certificate for one expiring in ``days`` (the good one kept aside), reload nginx."""
    p = paths(cfg["stack"]["run_dir"])
    x = _endpoint(cfg, service, region)
    crt, key = cert_paths(p, x["name"])
    good_crt, good_key = crt.with_suffix(".good.crt"), key.with_suffix(".good.key")
    if not good_crt.exists():
        shutil.copy2(crt, good_crt)
        shutil.copy2(key, good_key)
    c, k = make_leaf(p, x["vhost"], days)
    _write_private(key, k)
    crt.write_bytes(c)
    reload_nginx(cfg)
    return {"endpoint": x["name"], "days": days}


def heal_cert_expiry(cfg: dict) -> list[str]:
    """Put every swapped certificate back and reload nginx; the endpoints healed."""
    p = paths(cfg["stack"]["run_dir"])
    healed = []
    for x in listeners(cfg):
        crt, key = cert_paths(p, x["name"])
        good_crt, good_key = crt.with_suffix(".good.crt"), key.with_suffix(".good.key")
        if good_crt.exists() and good_key.exists():
            os.replace(good_key, key)
            os.replace(good_crt, crt)
            healed.append(x["name"])
    if healed:
        reload_nginx(cfg)
    return healed


def cert_faults(cfg: dict) -> list[str]:
    p = paths(cfg["stack"]["run_dir"])
    return [x["name"] for x in listeners(cfg) if cert_paths(p, x["name"])[0].with_suffix(".good.crt").exists()]


def purge_tags(cfg: dict, tags: list[str]) -> dict:
    """Invalidate ``tags`` in every cache layer of the edge: Varnish (xkey purge, one PURGE per
    tag) and Redis (the keys recorded under each tag's set). The cache-miss-storm fix calls it
    after the origin's TTLs are restored. {"varnish": objects purged, "redis": keys deleted}."""
    host = cfg["stack"]["host"]
    ports = cfg["demo"]["edge"]["ports"]
    out = {"varnish": 0, "redis": 0}
    for tag in tags:
        conn = http.client.HTTPConnection(host, ports["varnish"], timeout=10)
        try:
            conn.request("PURGE", "/", headers={"xkey-purge": tag})
            resp = conn.getresponse()
            text = resp.read().decode("utf-8", "replace")
            if resp.status != 200:
                raise ValueError(f"varnish refused the purge of {tag!r}: HTTP {resp.status}")
            reason = resp.reason or text
            digits = "".join(ch for ch in reason.split("Purged", 1)[-1] if ch.isdigit())
            out["varnish"] += int(digits or 0)
        finally:
            conn.close()
    with RedisConn(f"redis://{host}:{ports['redis']}/0", timeout=5) as r:
        for tag in tags:
            tag_key = tag_set(tag)
            keys = r.command("SMEMBERS", tag_key) or []
            if keys:
                out["redis"] += int(r.command("UNLINK", *keys) or 0)
            r.command("UNLINK", tag_key)
    return out


def fail2ban_banned(cfg: dict) -> dict:
    """{jail: [addresses]} read back from the running fail2ban (fail2ban-client status)."""
    import subprocess

    p = paths(cfg["stack"]["run_dir"])
    res = subprocess.run([_which("fail2ban-client"), "-c", str(p["f2b_conf"]), "status", JAIL],
                         capture_output=True, text=True, timeout=30)
    for line in res.stdout.splitlines():
        if "Banned IP list:" in line:
            return {JAIL: line.split(":", 1)[1].split()}
    return {JAIL: []}

