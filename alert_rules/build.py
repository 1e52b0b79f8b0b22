"""Render the Prometheus rule files from code + config.

Each domain module in this package defines ``groups(cfg) -> list[dict]`` (Prometheus rule
groups). Thresholds and `for:` durations come from the config (`alerts:` and the domain's
own section), so they live in one place. ``render(defaults())`` is what is committed as
``alert_rules/<domain>.yml`` (and mounted by docker-compose); `opsstack up` renders the
user's config into <run_dir>/rules/. A test fails when the committed files differ.
"""
from __future__ import annotations

import importlib
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent

# domain module -> rendered file name (alert_rules/<domain>.yml)
DOMAINS = [
    "meta",
    "platform",
    "forecast",
    "slo",
    "db",
    "kpi",
    "cdn",
    "security",
    "scaling",
    "cost",
    "automation",
]


class _Dumper(yaml.SafeDumper):
    pass


def _str_presenter(dumper, data):
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_presenter)


def dump(doc: dict) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=110, allow_unicode=True)


def render(cfg: dict) -> dict[str, str]:
    """{file name: YAML text} for every domain."""
    out = {}
    for name in DOMAINS:
        mod = importlib.import_module(f"alert_rules.{name}")
        groups = mod.groups(cfg)
        header = f"# Generated from alert_rules/{name}.py by `opsstack rules render`; do not edit.\n"
        out[f"{name}.yml"] = header + dump({"groups": groups})
    return out


def write(cfg: dict, out_dir: str | Path) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for fname, text in render(cfg).items():
        p = out_dir / fname
        p.write_text(text)
        written.append(p)
    return written


def committed_files() -> list[Path]:
    return [HERE / f"{name}.yml" for name in DOMAINS]


def all_rules(cfg: dict):
    """Yield (domain, group, rule) for every rule."""
    for name in DOMAINS:
        mod = importlib.import_module(f"alert_rules.{name}")
        for g in mod.groups(cfg):
            for r in g["rules"]:
                yield name, g, r
