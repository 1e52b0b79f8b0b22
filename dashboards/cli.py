"""`opsstack dashboards generate|check`."""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

from dashboards.registry import DASHBOARDS
from core.config import defaults

JSON_DIR = Path(__file__).resolve().parent / "json"


def render(cfg: dict) -> dict[Path, str]:
    """{path under dashboards/json: JSON text} for every dashboard."""
    out = {}
    for name, folder in DASHBOARDS.items():
        mod = importlib.import_module(f"dashboards.{name}")
        model = mod.build(cfg)
        out[Path(folder.lower()) / f"{model['uid']}.json"] = json.dumps(model, indent=2, sort_keys=True) + "\n"
    return out


def add_arguments(p):
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("generate", help="write dashboards/json/ from the code")
    sub.add_parser("check", help="fail when dashboards/json/ differs from the code")


def run(args, cfg) -> int:
    rendered = render(defaults())
    if args.action == "generate":
        for rel, text in rendered.items():
            p = JSON_DIR / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
            print(p)
        return 0
    stale = [str(rel) for rel, text in rendered.items()
             if not (JSON_DIR / rel).exists() or (JSON_DIR / rel).read_text() != text]
    extra = [str(p.relative_to(JSON_DIR)) for p in JSON_DIR.rglob("*.json")
             if p.relative_to(JSON_DIR) not in rendered]
    if stale or extra:
        print(f"dashboards out of date (run `opsstack dashboards generate`): {', '.join(stale + extra)}", file=sys.stderr)
        return 1
    print("dashboards are up to date")
    return 0
