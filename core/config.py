"""Load and validate opsstack.yaml.

The schema is declarative: each section lives in ``core/schema/<section>.py`` as a
``SECTION`` mapping of key -> Field (or nested mapping, or ListOf). ``load()`` returns
plain nested dicts with every default filled in and every value converted (durations
become float seconds). Any problem raises ConfigError whose ``str()`` is one line naming
the key and the problem; the CLI prints it and exits with status 2.
"""
from __future__ import annotations

import keyword
import os
import re
from collections.abc import Mapping
from dataclasses import field as dc_field
from dataclasses import fields, make_dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from core.schema import SCHEMA, cross_checks
from core.spec import (REDACTED, ConfigDict, ConfigError, Field, ListOf, format_duration,  # noqa: F401 - re-exported
                       _type_name, parse_duration, redact_url, redacted, validate)

ENV_CONFIG = "OPSSTACK_CONFIG"
DEFAULT_FILE = "opsstack.yaml"


def schema() -> dict:
    return SCHEMA


def find_config_file(explicit: str | None = None) -> Path | None:
    """--config, then $OPSSTACK_CONFIG, then ./opsstack.yaml; None means built-in defaults."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(ENV_CONFIG)
    if env:
        return Path(env)
    p = Path(DEFAULT_FILE)
    return p if p.exists() else None


def load_data(data: Any, source: str | None = None) -> dict:
    """Validate already-parsed YAML data (a mapping or None) and run cross-section checks."""
    try:
        cfg = validate(schema(), data if data is not None else {}, "")
        cross_checks(cfg)
    except ConfigError as exc:
        if source and not exc.source:
            raise ConfigError(exc.key, exc.problem, source) from None
        raise
    return cfg


def load(path: str | os.PathLike | None = None) -> dict:
    """Load the config file (see find_config_file) and return the validated config."""
    p = find_config_file(str(path) if path else None)
    if p is None:
        return load_data({}, None)
    source = str(p)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("", "file not found", source) from None
    except OSError as exc:
        raise ConfigError("", f"cannot read: {exc.strerror}", source) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError("", f"not valid YAML: {where}{problem}", source) from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError("", f"the top level must be a mapping, got {_type_name(data)}", source)
    return load_data(data, source)


def defaults() -> dict:
    return load_data({}, None)


RESOLVED_NAME = "opsstack.resolved.yaml"  # the config `opsstack up` resolved, in the run folder


def run_dir(cfg) -> Path:
    """The folder of a running stack's state (stack.run_dir), absolute: of a whole config (a
    dict) or of the view of its stack section (``run_dir(view(cfg, "stack"))``)."""
    return Path(cfg["stack"]["run_dir"] if isinstance(cfg, Mapping) else cfg.run_dir).resolve()


# ---- typed views -------------------------------------------------------------------------
# A view is a frozen dataclass generated from a section's schema: attribute access, tuples
# for lists, nested views for mappings and list items, read-only mappings for free-form
# `dict` fields. Secret fields keep their value but show as *** in repr (URLs hide their
# password). Components receive the view of their section instead of the whole plain dict.

_KIND_TYPES = {"str": str, "url": str, "int": int, "float": float, "bool": bool, "duration": float,
               "port": int | str, "list": tuple, "dict": Mapping, "any": Any}
_view_classes: dict[str, type] = {}


def _class_name(path: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in re.split(r"[._\-\[\]]+", path) if p)


def attr_name(key: str) -> str:
    """The attribute of a view for config key ``key``: a Python keyword gets a trailing _
    (``for`` -> ``for_``), any other character not allowed in a name becomes _."""
    name = re.sub(r"\W", "_", key)
    if not name.isidentifier():
        name = "_" + name
    return name + "_" if keyword.iskeyword(name) else name


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _view_repr(self) -> str:
    shown = []
    for f in fields(self):
        v = getattr(self, f.name)
        sub = f.metadata.get("field")
        if sub is not None and sub.secret and v not in (None, ""):
            v = REDACTED
        elif sub is not None and sub.kind == "url":
            v = redact_url(v)
        shown.append(f"{f.name}={v!r}")
    return f"{type(self).__name__}({', '.join(shown)})"


def _view_class(spec: dict, path: str) -> type:
    cls = _view_classes.get(path)
    if cls is None:
        specs = []
        for name, sub in spec.items():
            if isinstance(sub, Field):
                typ = _KIND_TYPES[sub.kind] | None if sub.nullable else _KIND_TYPES[sub.kind]
            else:
                typ = tuple if isinstance(sub, ListOf) else _view_class(sub, f"{path}.{name}")
            specs.append((attr_name(name), typ, dc_field(metadata={"field": sub if isinstance(sub, Field) else None})))
        cls = make_dataclass(_class_name(path), specs, frozen=True, repr=False,
                             namespace={"__repr__": _view_repr, "__str__": _view_repr})
        cls.__module__ = __name__
        _view_classes[path] = cls
    return cls


def _build_view(spec: Any, value: Any, path: str) -> Any:
    if isinstance(spec, dict):
        cls = _view_class(spec, path)
        return cls(**{attr_name(name): _build_view(sub, value[name], f"{path}.{name}") for name, sub in spec.items()})
    if isinstance(spec, ListOf):
        return tuple(_build_view(spec.item, item, f"{path}.item") for item in value)
    return _freeze(value)


def view(cfg: dict, path: str) -> Any:
    """The frozen typed view of section ``path`` ("exporters.app", "forecast") of a validated
    config: ``view(cfg, "exporters.app").probe_timeout``. Built from the schema, so every key
    of the section is an attribute; lists are tuples, mappings nested views."""
    spec: Any = SCHEMA
    value: Any = cfg
    for part in path.split("."):
        if not isinstance(spec, dict) or part not in spec:
            raise KeyError(f"no config section {path!r}")
        spec, value = spec[part], value[part]
    if not isinstance(spec, dict):
        raise KeyError(f"{path!r} is a setting, not a section")
    return _build_view(spec, value, path)
