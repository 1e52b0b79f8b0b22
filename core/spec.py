"""The schema language of opsstack.yaml: Field, ListOf, ConfigError, durations, and
``validate(spec, value)``, which turns parsed YAML into converted plain dicts.

The bottom of the config code: ``core.schema`` (the sections) and ``core.config`` (loading,
typed views) both build on it, and it imports nothing of the project.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import yaml

class ConfigError(Exception):
    """A configuration problem; str() is a single line naming the key."""

    def __init__(self, key: str, problem: str, source: str | None = None):
        self.key = key
        self.problem = problem
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key}: {problem}" if key else f"{where}{problem}")


_MISSING = object()

REDACTED = "***"


def redact_url(url: Any) -> Any:
    """A URL with the password of its user part hidden: postgresql://u:***@host/db."""
    if not isinstance(url, str) or "@" not in url:
        return url
    m = re.match(r"^([a-z][a-z0-9+.-]*://)([^/?#@]*)@", url, re.I)
    if not m or ":" not in m.group(2):
        return url
    user = m.group(2).split(":", 1)[0]
    return f"{m.group(1)}{user}:{REDACTED}@{url[m.end():]}"


class ConfigDict(dict):
    """A mapping of the validated config that hides its secrets when printed.

    ``repr()``/``str()`` (and so ``%r``/``%s`` in log lines, f-strings, tracebacks' locals)
    show every key the schema marks ``secret=True`` as ``***`` and the password of every URL
    as ``***``. Indexing returns the real values. Which keys are secret comes from the schema
    (``Field(..., secret=True)``), never from a list of names.
    """

    _secret_keys: frozenset = frozenset()
    _url_keys: frozenset = frozenset()

    def _shown(self) -> dict:
        out = {}
        for k, v in self.items():
            if k in self._secret_keys and v not in (None, "", {}, []):
                out[k] = REDACTED
            elif k in self._url_keys:
                out[k] = redact_url(v)
            else:
                out[k] = v
        return out

    def __repr__(self) -> str:
        return repr(self._shown())

    __str__ = __repr__

    def __reduce_ex__(self, protocol):  # deepcopy/pickle keep the class and its secret keys
        return (_config_dict, (dict(self), self._secret_keys, self._url_keys))

    def __deepcopy__(self, memo):
        out = _config_dict({}, self._secret_keys, self._url_keys)
        memo[id(self)] = out
        for k, v in self.items():
            out[copy.deepcopy(k, memo)] = copy.deepcopy(v, memo)
        return out

    def copy(self):
        return _config_dict(dict(self), self._secret_keys, self._url_keys)


def _config_dict(data: dict, secret_keys, url_keys) -> ConfigDict:
    d = ConfigDict(data)
    d._secret_keys = frozenset(secret_keys)
    d._url_keys = frozenset(url_keys)
    return d


def redacted(value: Any) -> Any:
    """A plain (dict/list) copy of a config value with every secret replaced by ``***``:
    what `opsstack config` prints and what may go to a log."""
    if isinstance(value, ConfigDict):
        return {k: redacted(v) for k, v in value._shown().items()}
    if isinstance(value, dict):
        return {k: redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redacted(v) for v in value]
    return value


def _represent_config_dict(dumper, data):
    return dumper.represent_dict(data)


# the resolved config is written with yaml.safe_dump: a ConfigDict is a mapping there
yaml.SafeDumper.add_representer(ConfigDict, _represent_config_dict)
yaml.Dumper.add_representer(ConfigDict, _represent_config_dict)


@dataclass
class Field:
    """One scalar setting.

    kind: one of str, int, float, bool, duration, port, list, dict, any, url.
    """

    kind: str
    default: Any = _MISSING
    help: str = ""
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    nullable: bool = False
    check: Callable[[Any], str | None] | None = None  # returns a problem or None
    # True: the value is a credential (token, password, hash, key): never logged or shown.
    # Fields of kind "url" always have a password in the URL hidden (user:***@host).
    secret: bool = False

    @property
    def required(self) -> bool:
        return self.default is _MISSING


@dataclass
class ListOf:
    """A list whose items follow a schema mapping (or a Field for scalar items)."""

    item: Any
    default: Any = field(default_factory=list)
    min_items: int = 0
    unique_key: str | None = None
    help: str = ""


_DURATION_RE = re.compile(r"^(?:(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def parse_duration(value: Any) -> float:
    """'90s', '5m', '1h30m', '2d' or a number of seconds -> float seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30s, 5m or 2h")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if not isinstance(value, str) or not _DURATION_RE.match(value.strip()):
        raise ValueError(f"expected a duration like 30s, 5m or 2h, got {value!r}")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(value.strip()))


def format_duration(seconds: float) -> str:
    """Float seconds -> the shortest Prometheus duration string ('5m', '90s', '1h30m')."""
    if seconds < 1 and seconds > 0:
        return f"{int(round(seconds * 1000))}ms"
    total = int(round(seconds))
    if total == 0:
        return "0s"
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if total >= size:
            n, total = divmod(total, size)
            out.append(f"{n}{unit}")
    return "".join(out)


def _type_name(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "true/false",
            int: "a number", float: "a number", type(None): "nothing (null)"}.get(type(value), type(value).__name__)


def _hide(f: Field, value: Any, problem: str) -> str:
    """A problem text that does not repeat a secret value (or the password of a URL)."""
    if isinstance(value, str) and value:
        if f.secret:
            return problem.replace(repr(value), "'***'").replace(value, "***")
        if f.kind == "url":
            shown = redact_url(value)
            if shown == value and "@" in value:  # not a parseable URL: hide all before the host
                shown = "***@" + value.rsplit("@", 1)[1]
            return problem.replace(value, shown)
    return problem


def _convert(f: Field, value: Any, key: str) -> Any:
    try:
        return _convert_raw(f, value, key)
    except ConfigError as exc:
        hidden = _hide(f, value, exc.problem)
        if hidden == exc.problem:
            raise
        raise ConfigError(exc.key, hidden, exc.source) from None


def _convert_raw(f: Field, value: Any, key: str) -> Any:
    if value is None:
        if f.nullable:
            return None
        raise ConfigError(key, "must be set (got null)")
    k = f.kind
    try:
        if k == "str":
            if not isinstance(value, str):
                raise ValueError(f"expected a string, got {_type_name(value)}")
            if not value.strip():
                raise ValueError("must not be empty")
        elif k == "url":
            if not isinstance(value, str) or not re.match(r"^[a-z][a-z0-9+.-]*://", value):
                raise ValueError(f"expected a URL like http://host:port/path, got {value!r}")
        elif k == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"expected a whole number, got {value!r}")
        elif k == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"expected a number, got {value!r}")
            value = float(value)
        elif k == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"expected true or false, got {value!r}")
        elif k == "duration":
            value = parse_duration(value)
        elif k == "port":
            if value == "auto":
                return "auto"
            if isinstance(value, bool) or not isinstance(value, int) or not (0 < value < 65536):
                raise ValueError(f"expected a TCP port 1-65535 or 'auto', got {value!r}")
        elif k == "list":
            if not isinstance(value, list):
                raise ValueError(f"expected a list, got {_type_name(value)}")
        elif k == "dict":
            if not isinstance(value, dict):
                raise ValueError(f"expected a mapping, got {_type_name(value)}")
        elif k == "any":
            pass
        else:  # pragma: no cover - schema bug
            raise AssertionError(f"unknown field kind {k}")
    except ValueError as exc:
        raise ConfigError(key, str(exc)) from None
    if f.choices is not None and value not in f.choices:
        raise ConfigError(key, f"must be one of {', '.join(map(str, f.choices))}, got {value!r}")
    if f.minimum is not None and isinstance(value, (int, float)) and value < f.minimum:
        raise ConfigError(key, f"must be >= {f.minimum:g}, got {value!r}")
    if f.maximum is not None and isinstance(value, (int, float)) and value > f.maximum:
        raise ConfigError(key, f"must be <= {f.maximum:g}, got {value!r}")
    if f.check is not None:
        problem = f.check(value)
        if problem:
            raise ConfigError(key, problem)
    return value


def _default_of(spec: Any, key: str) -> Any:
    if isinstance(spec, Field):
        if spec.required:
            raise ConfigError(key, "is required")
        if spec.default is None:
            return None
        return _convert(spec, copy.deepcopy(spec.default), key)
    if isinstance(spec, ListOf):
        return validate(spec, copy.deepcopy(spec.default), key)
    if isinstance(spec, dict):
        return validate(spec, {}, key)
    raise AssertionError(spec)


def validate(spec: Any, value: Any, key: str = "") -> Any:
    """Validate ``value`` against ``spec`` and return it converted with defaults filled."""
    if isinstance(spec, Field):
        return _convert(spec, value, key)
    if isinstance(spec, ListOf):
        if value is None:
            value = []
        if not isinstance(value, list):
            raise ConfigError(key, f"expected a list, got {_type_name(value)}")
        if len(value) < spec.min_items:
            raise ConfigError(key, f"needs at least {spec.min_items} item(s)")
        out = [validate(spec.item, item, f"{key}[{i}]") for i, item in enumerate(value)]
        if spec.unique_key:
            seen: set = set()
            for i, item in enumerate(out):
                v = item.get(spec.unique_key)
                if v in seen:
                    raise ConfigError(f"{key}[{i}].{spec.unique_key}", f"duplicate value {v!r}")
                seen.add(v)
        return out
    if isinstance(spec, dict):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a mapping, got {_type_name(value)}")
        unknown = sorted(set(map(str, value)) - set(spec))
        if unknown:
            k = f"{key}.{unknown[0]}" if key else unknown[0]
            near = ", ".join(sorted(spec))
            raise ConfigError(k, f"unknown key (known here: {near})")
        secret_keys = {n for n, sub in spec.items() if isinstance(sub, Field) and sub.secret}
        url_keys = {n for n, sub in spec.items() if isinstance(sub, Field) and sub.kind == "url"}
        out = _config_dict({}, secret_keys, url_keys)
        for name, sub in spec.items():
            k = f"{key}.{name}" if key else name
            out[name] = validate(sub, value[name], k) if name in value else _default_of(sub, k)
        return out
    raise AssertionError(f"bad schema at {key}: {spec!r}")
