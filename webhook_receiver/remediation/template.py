"""Placeholders in playbook strings: ``{name}``, ``{name|default}``; ``{{``/``}}`` are braces.

A string that is exactly one placeholder takes the value as it is (so ``"{healthy_regions}"``
becomes a list in a JSON body); otherwise values are joined in as text.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

_PH = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_.]*)(?:\|([^{}]*))?\}")


class TemplateError(ValueError):
    pass


def _lookup(ctx: Mapping[str, Any], name: str, default: str | None) -> Any:
    if name in ctx and ctx[name] is not None and ctx[name] != "":
        return ctx[name]
    if default is not None:
        return default
    raise TemplateError(f"placeholder {{{name}}} has no value (known: {', '.join(sorted(ctx))})")


def render_str(s: str, ctx: Mapping[str, Any]) -> Any:
    m = _PH.fullmatch(s)
    if m and m.group(1):
        return _lookup(ctx, m.group(1), m.group(2))

    def sub(m: re.Match) -> str:
        tok = m.group(0)
        if tok == "{{":
            return "{"
        if tok == "}}":
            return "}"
        v = _lookup(ctx, m.group(1), m.group(2))
        return ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)

    return _PH.sub(sub, s)


def render(value: Any, ctx: Mapping[str, Any]) -> Any:
    """Render every string inside value (dicts and lists walked; keys left alone)."""
    if isinstance(value, str):
        return render_str(value, ctx)
    if isinstance(value, list):
        return [render(v, ctx) for v in value]
    if isinstance(value, dict):
        return {k: render(v, ctx) for k, v in value.items()}
    return value
