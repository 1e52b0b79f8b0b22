"""Typed config views (core.config.view) and checks that live in the schema."""
import dataclasses

import pytest

from core.config import ConfigError, load_data, view


def test_view_has_typed_attributes_and_tuples():
    cfg = load_data({"exporters": {"app": {"latency_buckets": [0.1, 0.5, 1], "probe_timeout": "2s"}}})
    app = view(cfg, "exporters.app")
    assert type(app).__name__ == "ExportersApp"
    assert app.probe_timeout == 2.0 and app.latency_buckets == (0.1, 0.5, 1) and app.max_concurrency == 1024
    assert dataclasses.is_dataclass(app)


def test_view_is_frozen_all_the_way_down():
    cfg = load_data({"platform": {"services": [{"name": "a", "endpoints": {"seoul": "http://127.0.0.1:1"}}]}})
    p = view(cfg, "platform")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.regions = ()
    assert isinstance(p.services, tuple) and isinstance(p.regions, tuple)
    svc = p.services[0]
    assert svc.name == "a" and svc.endpoints["seoul"] == "http://127.0.0.1:1"
    with pytest.raises(dataclasses.FrozenInstanceError):
        svc.name = "b"
    with pytest.raises(TypeError):
        svc.endpoints["tokyo"] = "http://x"  # a read-only mapping
    cfg["platform"]["services"][0]["name"] = "changed"  # the view is a copy, not a window
    assert svc.name == "a"


def test_nested_sections_and_list_items_are_views():
    cfg = load_data({"forecast": {"targets": [{"name": "t", "query": "up", "thresholds": [1]}]}})
    f = view(cfg, "forecast")
    assert type(f.prophet).__name__ == "ForecastProphet" and f.prophet.window == cfg["forecast"]["prophet"]["window"]
    assert f.targets[0].name == "t" and f.targets[0].query == "up"
    db = view(cfg, "exporters.db")
    assert isinstance(db.targets, tuple) and db.advisor.enabled == cfg["exporters"]["db"]["advisor"]["enabled"]


def test_secrets_are_kept_but_redacted_in_repr():
    cfg = load_data({"receiver": {"token": "s3cret-token-value"},
                     "database": {"url": "postgresql://u:hunter2@127.0.0.1/db"}})
    r = view(cfg, "receiver")
    assert r.token == "s3cret-token-value"
    assert "s3cret-token-value" not in repr(r) and "***" in repr(r) and "s3cret" not in str(r)
    d = view(cfg, "database")
    assert d.url == "postgresql://u:hunter2@127.0.0.1/db" and "hunter2" not in repr(d)


def test_keyword_keys_and_unknown_sections():
    a = view(load_data({}), "alerts")
    nested = [getattr(a, f.name) for f in dataclasses.fields(a) if dataclasses.is_dataclass(getattr(a, f.name))]
    assert any(hasattr(n, "for_") for n in nested)  # `for:` (a keyword) is the attribute for_
    with pytest.raises(KeyError):
        view(load_data({}), "no_such.section")
    with pytest.raises(KeyError):
        view(load_data({}), "stack.host")  # a setting, not a section


def test_demo_ports_are_checked_in_the_schema():
    base = {"platform": {"regions": ["seoul"], "services": [{"name": "a"}]}, "demo": {"home_region": "seoul"}}
    ok = load_data({**base, "demo": {"home_region": "seoul", "ports": {"a": {"admin": 9000, "seoul": 9001}}}})
    assert ok["demo"]["ports"]["a"]["seoul"] == 9001
    for ports, key in (({"b": {"admin": 1}}, "demo.ports.b"), ({"a": {"mars": 1}}, "demo.ports.a.mars"),
                       ({"a": {"admin": 70000}}, "demo.ports.a.admin"), ({"a": [1]}, "demo.ports.a")):
        with pytest.raises(ConfigError) as e:
            load_data({**base, "demo": {"home_region": "seoul", "ports": ports}})
        assert e.value.key == key


def test_run_dir_of_a_whole_config_or_of_the_stack_view(tmp_path):
    from core.config import run_dir

    cfg = load_data({"stack": {"run_dir": str(tmp_path / "run")}})
    assert run_dir(cfg) == run_dir(view(cfg, "stack")) == (tmp_path / "run").resolve()


def test_replace_overrides_a_view_and_keeps_it_typed_and_redacted():
    adv = view(load_data({}), "exporters.db").advisor
    over = dataclasses.replace(adv, min_cost_drop=0.2, statements=5)  # what `db advise --statements` does
    assert (over.min_cost_drop, over.statements, over.interval) == (0.2, 5, adv.interval)
    assert adv.min_cost_drop == 0.5 and type(over) is type(adv)
    with pytest.raises(dataclasses.FrozenInstanceError):
        over.statements = 6
    d = dataclasses.replace(view(load_data({}), "database"), url="postgresql://u:hunter2@h/db")
    assert "hunter2" not in repr(d)
