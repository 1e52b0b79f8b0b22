"""`opsstack cdn report`: the cache policy per content class, with what to change.

Fetches each configured Cloudflare zone's current window once (one GraphQL request per zone)
and prints, per class, its cached share against its target and the recommendation when it
misses it (exporters/cdn/policy.py); `--json` prints the same as JSON. Exit 0 when every judged
class meets its target, 1 when one misses it, 2 when no zone could be read.
"""
from __future__ import annotations

import json
import sys

from core.config import view
from exporters.cdn.collector import CdnCollector


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="action")
    r = sub.add_parser("report", help="hit ratio per content class against its target, and recommendations")
    r.add_argument("--json", action="store_true", help="print JSON")


def report(collector: CdnCollector) -> tuple[list[dict], int]:
    """(one entry per zone, exit code)."""
    out, code, read = [], 0, 0
    for z in collector.zones:
        st = z.current()
        if st.error is not None or st.window is None:
            out.append({"zone": z.name, "error": f"{st.error.reason}: {st.error}" if st.error else "no data"})
            continue
        read += 1
        verdicts, total = collector.verdicts(st.window.traffic)
        entry = {"zone": z.name, "window": [st.window.start, st.window.end],
                 "classes": [{"class": v.cls, "requests": v.requests, "hit_ratio": v.hit_ratio, "target": v.target,
                              "judged": v.judged, "below": v.below, "reason": v.reason, "text": v.text}
                             for v in verdicts + [total]]}
        if any(v.below for v in verdicts + [total]):
            code = 1
        out.append(entry)
    if collector.zones and not read:
        code = 2
    return out, code


def run(args, cfg) -> int:
    collector = CdnCollector(view(cfg, "exporters.cdn"))
    if not collector.zones:
        print("opsstack cdn report: no Cloudflare zone configured (exporters.cdn.cloudflare)", file=sys.stderr)
        return 2
    entries, code = report(collector)
    if args.json:
        print(json.dumps(entries, indent=2))
        return code
    for e in entries:
        if "error" in e:
            print(f"zone {e['zone']}: cannot read Cloudflare analytics: {e['error']}")
            continue
        print(f"zone {e['zone']}:")
        for c in e["classes"]:
            print(f"  {'!!' if c['below'] else 'ok' if c['judged'] else '--'} {c['text']}")
    return code
