"""The loaded config never shows a secret when printed (repr, str, %r, f-strings, `opsstack config`),
and which keys are secret comes from the schema (Field(..., secret=True)), not from a name list."""
from __future__ import annotations

import copy
import logging
import pickle

import yaml

from core.config import ConfigDict, Field, ListOf, load_data, redact_url, redacted
from core.schema import SCHEMA

SECRETS = {
    "receiver-token": "rcv-TOKEN-5f1e2d",
    "api-token": "api-TOKEN-77aa01",
    "hash": "scrypt:32768:8:1$SALTsalt$HASHhash0123",
    "session": "session-SECRET-9c8b7a",
    "db-pw": "dbPASSw0rd-3e4f",
    "jira": "jira-API-TOKEN-abc",
    "jira-bearer": "jira-BEARER-def",
    "snow": "snow-PASSWORD-ghi",
    "sup": "supervisor-PW-jkl",
    "k8s": "k8s-TOKEN-mno",
    "hook": "T000/B000/slackWEBHOOKsecret",
    "hdr": "Bearer header-SECRET-pqr",
    "amhdr": "Bearer remed-HEADER-stu",
}


def full_config() -> dict:
    return load_data({
        "database": {"url": f"postgresql://ops:{SECRETS['db-pw']}@db.example:5432/opsstack"},
        "receiver": {
            "token": SECRETS["receiver-token"],
            "api": {"tokens": [{"name": "ci", "token": SECRETS["api-token"]}]},
            "console": {"users": [{"name": "alice", "password_hash": SECRETS["hash"]}],
                        "session_secret": SECRETS["session"]},
        },
        "itsm": {"jira": {"enabled": True, "url": "https://jira.example", "email": "ops@example.com",
                          "api_token": SECRETS["jira"], "bearer_token": SECRETS["jira-bearer"]},
                 "servicenow": {"enabled": True, "url": "https://sn.example", "username": "svc",
                                "password": SECRETS["snow"]}},
        "notifications": {"channels": [
            {"name": "slack", "type": "slack", "url": f"https://hooks.slack.example/services/{SECRETS['hook']}",
             "headers": {"Authorization": SECRETS["hdr"]}}]},
        "remediation": {"backends": {
            "supervisor": {"url": "http://127.0.0.1:9001/RPC2", "username": "sup", "password": SECRETS["sup"]},
            "kubernetes": {"token": SECRETS["k8s"]},
            "http": {"headers": {"Authorization": SECRETS["amhdr"]}}}},
    })


def leaks(text: str) -> list[str]:
    return [name for name, s in SECRETS.items() if s in text]


def test_repr_str_and_format_of_the_config_show_no_secret():
    cfg = full_config()
    for text in (repr(cfg), str(cfg), f"{cfg}", "%r" % (cfg,), "%s" % (cfg,), repr((cfg, 42)),
                 repr(cfg["receiver"]), repr(cfg["receiver"]["console"]["users"]), repr(cfg["itsm"]),
                 repr(cfg["database"]), repr(cfg["remediation"]["backends"])):
        assert leaks(text) == [], text
    assert "'token': '***'" in repr(cfg["receiver"])
    assert "postgresql://ops:***@db.example:5432/opsstack" in repr(cfg["database"])
    # the values themselves are intact: only printing hides them
    assert cfg["receiver"]["token"] == SECRETS["receiver-token"]
    assert cfg["receiver"]["console"]["users"][0]["password_hash"] == SECRETS["hash"]
    assert SECRETS["db-pw"] in cfg["database"]["url"]


def test_copies_pickles_and_log_lines_stay_redacted(caplog):
    cfg = full_config()
    for c in (copy.deepcopy(cfg), pickle.loads(pickle.dumps(cfg)), cfg["receiver"].copy()):
        assert leaks(repr(c)) == []
        assert isinstance(c, ConfigDict)
    assert copy.deepcopy(cfg) == cfg
    log = logging.getLogger("test.redaction")
    with caplog.at_level(logging.INFO):
        log.info("event=x args=%r cfg=%s", (cfg, cfg["database"]["url"] and cfg["database"]), cfg)
    assert leaks(caplog.text) == [], caplog.text


def test_the_resolved_yaml_keeps_the_real_values_and_opsstack_config_prints_none():
    cfg = full_config()
    dumped = yaml.safe_dump(cfg, sort_keys=False)  # what runtime.write_resolved writes (a 0600 file)
    assert yaml.safe_load(dumped)["receiver"]["token"] == SECRETS["receiver-token"]
    shown = yaml.safe_dump(redacted(cfg), sort_keys=False)  # what `opsstack config` prints
    assert leaks(shown) == [], shown


def test_opsstack_config_command_prints_no_secret(capsys):
    from argparse import Namespace

    from stack.commands import config as cmd

    assert cmd.run(Namespace(resolved=False), full_config()) == 0
    out = capsys.readouterr().out
    assert leaks(out) == [], out
    assert "***" in out


def test_every_secret_looking_key_of_the_schema_is_marked_secret():
    """A new credential key in core/schema/*.py must carry secret=True (kind url hides its password)."""
    words = ("token", "password", "secret", "credential", "api_key", "apikey", "private_key")
    unmarked = []

    def walk(spec, key):
        if isinstance(spec, Field):
            leaf = key.rsplit(".", 1)[-1]
            if any(w in leaf for w in words) and spec.kind == "str" and not leaf.endswith("_file") \
                    and not spec.secret:
                unmarked.append(key)
        elif isinstance(spec, ListOf):
            walk(spec.item, key + "[]")
        elif isinstance(spec, dict):
            for k, v in spec.items():
                walk(v, f"{key}.{k}" if key else k)
    walk(SCHEMA, "")
    assert unmarked == []


def test_redact_url():
    assert redact_url("postgresql://u:pw@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"
    assert redact_url("http://h/x?a=b@c") == "http://h/x?a=b@c"
    assert redact_url(None) is None


def test_a_config_error_does_not_repeat_a_secret():
    import pytest

    from core.config import ConfigError

    with pytest.raises(ConfigError) as e:
        load_data({"database": {"url": "postgres:ops:PW-in-error-1@db/x"}})
    assert "PW-in-error-1" not in str(e.value) and "database.url" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_data({"remediation": {"backends": {"docker": {"url": "not a url ops:PW-in-error-2@h"}}}})
    assert "PW-in-error-2" not in str(e.value)
