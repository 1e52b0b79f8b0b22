"""The exporters.cdn section: defaults, cross-key checks, secrets, the remediation actions that
name the cache backends (core/schema/cdn_exporter.py, core/schema/remediation.py)."""
from __future__ import annotations

import pytest

from core.config import ConfigError, defaults, load_data, view


def test_defaults():
    c = view(defaults(), "exporters.cdn")
    assert not c.cloudflare.enabled and c.cloudflare.window == 300 and c.cloudflare.offset == 180
    assert c.cloudflare.min_interval == 60 and c.hit_target == 0.9 and c.default_class == "dynamic"
    assert [k.name for k in c.classes] == ["static", "api", "dynamic"]
    assert defaults()["stack"]["ports"]["exporter_cdn"] == "auto"


@pytest.mark.parametrize("cdn,key", [
    ({"default_class": "nope"}, "exporters.cdn.default_class"),
    ({"classes": [{"name": "a", "ttl": "1m", "content_types": ["json"]},
                  {"name": "b", "ttl": "1m", "content_types": ["JSON"]}], "default_class": "a"},
     "exporters.cdn.classes[1].content_types"),
    ({"cloudflare": {"enabled": True, "token": "t"}}, "exporters.cdn.cloudflare.zones"),
    ({"cloudflare": {"enabled": True, "zones": [{"name": "main", "id": "abc"}]}}, "exporters.cdn.cloudflare.token"),
    ({"cloudflare": {"zones": [{"name": "main", "id": "abc/../x"}]}}, "exporters.cdn.cloudflare.zones[0].id"),
    ({"redis": {"instances": [{"name": "r", "url": "http://x"}]}}, "exporters.cdn.redis.instances[0].url"),
    ({"redis": {"instances": [{"name": "r", "key_prefixes": ["cache:*"]}]}},
     "exporters.cdn.redis.instances[0].key_prefixes"),
    ({"redis": {"instances": [{"name": "r", "key_prefixes": []}]}}, "exporters.cdn.redis.instances[0].key_prefixes"),
    ({"hit_target": 1.5}, "exporters.cdn.hit_target"),
    ({"cloudflare": {"min_interval": "0s"}}, "exporters.cdn.cloudflare.min_interval"),
    ({"varnish": {"timeout": "10s", "instances": [{"name": "edge"}]}}, "exporters.cdn.varnish.timeout"),
])
def test_bad_values_name_their_key(cdn, key):
    with pytest.raises(ConfigError) as e:
        load_data({"exporters": {"cdn": cdn}})
    assert e.value.key == key, e.value


def test_the_token_is_a_secret():
    cfg = load_data({"exporters": {"cdn": {"cloudflare": {"enabled": True, "token": "tok-SECRET-1",
                                                          "zones": [{"name": "main", "id": "abc"}]}}}})
    assert "tok-SECRET-1" not in repr(view(cfg, "exporters.cdn")) and "tok-SECRET-1" not in repr(cfg)
    assert view(cfg, "exporters.cdn").cloudflare.token == "tok-SECRET-1"


def test_playbooks_can_name_the_cache_backends():
    cfg = load_data({"remediation": {"playbooks": [{"name": "miss-storm", "match": {"alertname": "CdnCacheHitRatioLow"},
                                                    "actions": [
        {"name": "cf", "backend": "cloudflare", "params": {"zone": "main", "tags": ["event-{event}"]}},
        {"name": "varnish", "backend": "varnish", "operation": "purge_tag", "params": {"tag": "event-{event}"}},
        {"name": "redis", "backend": "redis", "params": {"pattern": "cache:event:{event}:*"}}]}]}})
    ops = [(a["backend"], a["operation"]) for a in cfg["remediation"]["playbooks"][0]["actions"]]
    assert ops == [("cloudflare", "purge"), ("varnish", "purge_tag"), ("redis", "delete_pattern")]
    with pytest.raises(ConfigError, match="tag"):
        load_data({"remediation": {"playbooks": [{"name": "x", "match": {"a": "b"}, "actions": [
            {"name": "v", "backend": "varnish", "operation": "purge_tag", "params": {}}]}]}})


def test_a_short_scrape_timeout_is_fine_without_instances():
    cfg = load_data({"stack": {"scrape_interval": "1s", "scrape_timeout": "900ms"},
                     "exporters": {"app": {"probe_timeout": "500ms"}}})
    assert cfg["exporters"]["cdn"]["varnish"]["timeout"] == 5.0
