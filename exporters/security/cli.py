"""`opsstack security ...`: the security exporter's tools.

    opsstack security verify-restore [--stanza S]...   restore the newest pgBackRest backup of
        each stanza (exporters.security.backup.verify.stanzas, else backup.stanzas) into a scratch
        folder, start it, query it, record the result where the exporter reads it; exit 1 when
        one failed
    opsstack security nginx-log-format                  print the nginx log_format the access
        log parser's json format reads (for the nginx config)
    opsstack security fail2ban-filter                   print a fail2ban filter over that format
        (401/403 answers per client address)
"""
from __future__ import annotations

import json
import sys
from dataclasses import asdict

from core.config import view
from exporters.security.access import FAIL2BAN_FILTER, NGINX_LOG_FORMAT
from exporters.security.collector import result_file
from exporters.security.restore import verify_restore, write_result


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="action")
    v = sub.add_parser("verify-restore", help="restore the newest backup into a scratch folder, start it, query it")
    v.add_argument("--stanza", action="append", help="stanza to verify (repeatable; default: the configured ones)")
    v.add_argument("--json", action="store_true", help="print the results as JSON")
    sub.add_parser("nginx-log-format", help="print the nginx log_format of the json access log format")
    sub.add_parser("fail2ban-filter", help="print a fail2ban filter (401/403 per address) over that format")


def run(args, cfg) -> int:
    if args.action == "nginx-log-format":
        print(NGINX_LOG_FORMAT)
        return 0
    if args.action == "fail2ban-filter":
        print(FAIL2BAN_FILTER, end="")
        return 0
    sec, stack = view(cfg, "exporters.security"), view(cfg, "stack")
    b = sec.backup
    stanzas = list(args.stanza or b.verify.stanzas or b.stanzas)
    if not stanzas:
        print("opsstack security verify-restore: no stanza: pass --stanza or set "
              "exporters.security.backup.verify.stanzas", file=sys.stderr)
        return 2
    out, status = result_file(sec, stack), 0
    results = []
    for stanza in stanzas:
        res = verify_restore(stanza, pgbackrest=b.pgbackrest, config=b.config, work_dir=b.verify.work_dir,
                             target=b.verify.target, query=b.verify.query, timeout=b.verify.timeout)
        write_result(out, res)
        results.append(res)
        if not res.success:
            status = 1
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
    else:
        for r in results:
            print(f"{r.stanza}: {'ok' if r.success else 'FAILED'} in {r.duration_seconds:.1f}s "
                  f"(restore {r.restore_seconds:.1f}s, start {r.startup_seconds:.1f}s, query {r.query_seconds:.3f}s)"
                  f" backup {r.backup_label or '-'}" + (f": {r.error}" if r.error else ""))
        print(f"results: {out}")
    return status
