"""core/logship.py: the Loki push handler.

No Grafana Loki binary can be installed on the dev/CI machines (Debian's `loki` package is an
unrelated genetics program; docs/logs.md), so the push API is the fake HTTP server, which checks
the documented request shape: POST /loki/api/v1/push, JSON {"streams": [{"stream": {labels},
"values": [["<unix ns>", "<line>"], ...]}]}, label values strings, timestamps increasing in a stream.
"""
from __future__ import annotations

import logging

import pytest

from core import logship
from core.logship import LokiHandler, LogShipCollector, parse_labels, safe_line
from tests.support.fakehttp import FakeHTTP
from tests.support.lokipush import REFUSED, lines_of, push
from tests.support.wait import wait_for


@pytest.fixture
def loki():
    REFUSED.clear()
    with FakeHTTP({"POST /loki/api/v1/push": push}) as srv:
        yield srv
    assert not REFUSED, REFUSED


def make_logger(handler, name):
    lg = logging.getLogger(f"test.logship.{name}")
    lg.propagate = False
    lg.handlers = [handler]
    lg.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("level=%(levelname)s logger=%(name)s %(message)s"))
    return lg


def test_lines_reach_push_api_with_bounded_labels_only(loki):
    h = LokiHandler(loki.url, {"component": "demo", "service": "user-app"}, flush_interval=0.1)
    lg = make_logger(h, "labels")
    lg.error("upstream failed request_id=abc123 user=42 status=500", extra={"region": "eu"})
    lg.info("started port=1234")
    lg.warning("odd region", extra={"region": "not a label value!"})
    assert h.flush(30)
    got = wait_for(lambda: len(lines_of(loki)) >= 3 and lines_of(loki), timeout=30, what="3 lines pushed")
    assert not loki.errors and not REFUSED
    by_line = {line.split(" ", 2)[-1]: labels for labels, line in got}
    assert by_line["upstream failed request_id=abc123 user=42 status=500"] == {
        "component": "demo", "service": "user-app", "level": "error", "region": "eu"}
    assert by_line["started port=1234"] == {"component": "demo", "service": "user-app", "level": "info"}
    assert by_line["odd region"] == {"component": "demo", "service": "user-app", "level": "warning"}
    assert h.counts["shipped"] == 3 and h.counts["push_errors"] == 0
    h.close()


def test_huge_and_invalid_utf8_lines_are_cut_and_escaped_not_dropped(loki):
    h = LokiHandler(loki.url, {"component": "demo"}, flush_interval=0.1, max_line_bytes=4096)
    lg = make_logger(h, "huge")
    lg.error("big " + "x" * 1_000_000)
    lg.error("raw " + b"caf\xe9 \xff\xfe ok".decode("utf-8", "surrogateescape"))
    lg.error("after")
    assert h.flush(30)
    got = [line for _, line in wait_for(lambda: len(lines_of(loki)) >= 3 and lines_of(loki), timeout=30,
                                        what="3 lines")]
    big = next(line for line in got if " big " in line)
    assert len(big.encode()) <= 4096 and big.endswith("B") and "truncated_from=" in big
    raw = next(line for line in got if " raw " in line)
    assert "\\udce9" in raw and "\\udcff" in raw and raw.endswith(" ok")
    assert any(line.endswith("after") for line in got)
    assert h.counts["truncated"] == 1 and h.counts["shipped"] == 3
    h.close()


def test_loki_down_never_blocks_and_drops_are_counted(capfd):
    with FakeHTTP({}) as gone:
        url = gone.url
    # nothing listens on url any more; a tiny queue fills at once
    h = LokiHandler(url, {"component": "x"}, queue_size=5, flush_interval=0.05, retries=0, timeout=1,
                    stats_interval=0.2)
    lg = make_logger(h, "down")
    for i in range(200):
        lg.error("line %d", i)   # must return at once, never raise
    wait_for(lambda: h.counts["dropped_queue_full"] > 0 and h.counts["dropped_push_failed"] > 0,
             timeout=30, what="both kinds of drop counted")
    wait_for(lambda: "dropped_since_last=" in capfd.readouterr().err, timeout=30, what="drops reported on stderr")
    metrics = {m.name: m for m in LogShipCollector(h).collect()}
    samples = {s.labels.get("result"): s.value for s in metrics["opsstack_logship_lines"].samples}
    assert samples["dropped_queue_full"] > 0 and samples["dropped_push_failed"] > 0
    assert h.counts["shipped"] == 0
    h.close()


def test_refused_batch_is_dropped_counted_and_shipping_goes_on(loki):
    loki.fail("POST", "/loki/api/v1/push", 400, times=1)
    h = LokiHandler(loki.url, {"component": "x"}, flush_interval=0.05)
    lg = make_logger(h, "refused")
    lg.error("first")
    wait_for(lambda: h.counts["dropped_push_failed"] == 1, timeout=30, what="refused batch dropped")
    lg.error("second")
    wait_for(lambda: any(line.endswith("second") for _, line in lines_of(loki)), timeout=30, what="next one")
    h.close()


def test_stats_line_is_shipped_as_heartbeat(loki):
    h = LokiHandler(loki.url, {"component": "exporter-app"}, flush_interval=0.05, stats_interval=0.1)
    make_logger(h, "stats").info("hello")
    line = wait_for(lambda: next((ln for _, ln in lines_of(loki) if "logship stats" in ln), None), timeout=30,
                    what="stats line")
    assert "shipped=" in line and "dropped_queue_full=0" in line
    h.close()


def test_parse_labels_keeps_only_known_short_labels():
    assert parse_labels("component=demo, service=user-app,level=error,user=42,region=eu west") == {
        "component": "demo", "service": "user-app"}
    assert parse_labels(None) == {}


def test_safe_line_bounds():
    assert safe_line("abc", 10) == ("abc", False)
    out, cut = safe_line("é" * 100, 50)
    assert cut and len(out.encode()) <= 50 and "truncated_from=200B" in out


def test_install_from_env_only_when_asked(monkeypatch, loki):
    monkeypatch.setattr(logship, "_ACTIVE", None)
    monkeypatch.delenv(logship.ENV_URL, raising=False)
    assert logship.install_from_env() is None
    monkeypatch.setenv(logship.ENV_URL, loki.url)
    monkeypatch.setenv(logship.ENV_LABELS, "component=receiver")
    h = logship.install_from_env()
    try:
        assert h is not None and h.labels == {"component": "receiver"} and h in logging.getLogger().handlers
    finally:
        logging.getLogger().removeHandler(h)
        h.close()


def test_setup_logging_env_name_is_logships():
    import inspect

    from core import logs

    assert f'"{logship.ENV_URL}"' in inspect.getsource(logs.setup_logging)
