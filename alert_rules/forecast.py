"""Predictive alerts on the forecaster's current-time gauges (forecasters/service.py).

Thresholds come from `forecast.alerts`, how far ahead each alert looks from
`forecast.kind_horizons` (the same horizon the targets of that kind are forecast to); the forecaster publishes
`threshold` and `horizon` labels with the same formatting (forecasters.targets.threshold_label,
core.config.format_duration), so a target must list the alert's threshold among its
`thresholds` (the default targets do). Every gauge carries target/kind/service/team labels,
so each alert routes to the team of the service it is about.
"""
from __future__ import annotations

from alert_rules.common import runbook_url
from core.config import format_duration


def _thr(v: float) -> str:
    return f"{float(v):g}"


def _alert(cfg, name, expr, for_, severity, tier, summary, description, service="{{ $labels.service }}",
           team="{{ $labels.team }}") -> dict:
    return {
        "alert": name,
        "expr": expr,
        "for": for_,
        "labels": {"severity": severity, "tier": str(tier), "service": service, "team": team},
        "annotations": {
            "summary": summary,
            "description": description,
            "runbook_url": runbook_url(cfg, name),
        },
    }


def groups(cfg: dict) -> list[dict]:
    a = cfg["forecast"]["alerts"]
    kh = cfg["forecast"]["kind_horizons"]   # how far each kind is forecast = how far its alert looks
    sec = lambda d: f"{int(round(d))}"  # noqa: E731
    stt = "opsstack_forecast_seconds_to_threshold"
    predictive = [
        _alert(cfg, "DiskWillFillSoon",
               f'{stt}{{kind="disk",threshold="{_thr(a["disk_threshold"])}"}} < {sec(kh["disk"])}',
               "30m", "warning", 2,
               f"A disk is forecast to pass {a['disk_threshold'] * 100:g}% used within {format_duration(kh['disk'])}.",
               "{{ $labels.target }} on {{ $labels.service }} is forecast to reach "
               f"{a['disk_threshold'] * 100:g}% used in {{{{ $value | humanizeDuration }}}}."),
        _alert(cfg, "MemoryLeakOomPredicted",
               f'{stt}{{kind="memory",threshold="{_thr(a["memory_threshold"])}"}} < {sec(kh["memory"])}',
               "15m", "warning", 1,
               f"A service is forecast to run out of memory within {format_duration(kh['memory'])}.",
               "{{ $labels.service }} ({{ $labels.target }}) is forecast to reach its memory limit in "
               "{{ $value | humanizeDuration }}: a leak. The scheduled-restart playbook restarts it in the next low-traffic window before then."),
        _alert(cfg, "CpuLimitLikely",
               f'opsstack_forecast_exceedance_probability{{kind="cpu",threshold="{_thr(a["cpu_threshold"])}",'
               f'horizon="{format_duration(kh["cpu"])}"}} >= {a["cpu_probability"]:g}',
               "30m", "warning", 2,
               f"A service is likely to hit its CPU limit within {format_duration(kh['cpu'])}.",
               "{{ $labels.service }} ({{ $labels.target }}) hits its CPU limit within "
               f"{format_duration(kh['cpu'])} with probability {{{{ $value | humanizePercentage }}}}."),
        _alert(cfg, "DbStorageCapacity",
               f'{stt}{{kind="db_storage",threshold="{_thr(a["db_storage_threshold"])}"}} < '
               f'{sec(kh["db_storage"])}',
               "1h", "warning", 2,
               f"Database storage is forecast to pass {a['db_storage_threshold'] * 100:g}% within "
               f"{format_duration(kh['db_storage'])}.",
               "{{ $labels.target }} ({{ $labels.service }}) is forecast to reach "
               f"{a['db_storage_threshold'] * 100:g}% of its capacity in {{{{ $value | humanizeDuration }}}}."),
        _alert(cfg, "BandwidthCapacity",
               f'{stt}{{kind="bandwidth",threshold="{_thr(a["bandwidth_threshold"])}"}} < '
               f'{sec(kh["bandwidth"])}',
               "1h", "warning", 3,
               f"Network bandwidth is forecast to pass {a['bandwidth_threshold'] * 100:g}% of capacity within "
               f"{format_duration(kh['bandwidth'])}.",
               "{{ $labels.target }} ({{ $labels.service }}) is forecast to use "
               f"{a['bandwidth_threshold'] * 100:g}% of the link in {{{{ $value | humanizeDuration }}}}."),
        _alert(cfg, "LatencyTrendRising",
               f'opsstack_forecast_value{{kind="latency",horizon="{format_duration(kh["latency"])}",'
               f'stat="lower"}} > ignoring(horizon, stat) ({a["latency_rise"]:g} * '
               'opsstack_forecast_value{kind="latency",horizon="now",stat="upper"})',
               "1h", "warning", 3,
               f"Latency is forecast to rise markedly within {format_duration(kh['latency'])}.",
               "{{ $labels.target }} ({{ $labels.service }}): even the low edge of the forecast for "
               f"{format_duration(kh['latency'])} ahead, {{{{ $value | humanizeDuration }}}}, is over "
               f"{a['latency_rise']:g}x today's upper band."),
    ]
    stale = int(round(a["stale_after"]))
    meta = [
        _alert(cfg, "ForecasterStale",
               # a target waiting for history (fresh stack) is neither stale nor failing: only one
               # that succeeded and then stopped, or whose last pass failed, fires
               f"(time() - opsstack_forecast_last_success_timestamp_seconds > {stale})"
               ' or (opsstack_forecast_target_state{state="error"} == 1 unless on(target)'
               " opsstack_forecast_last_success_timestamp_seconds)"
               ' or (up{job="opsstack_forecaster"} == 0)',
               "10m", "warning", 2,
               "Forecasts are stale: predictive alerts cannot fire.",
               "No successful forecast for {{ $labels.target }}{{ $labels.instance }} for over "
               f"{format_duration(a['stale_after'])} (value {{{{ $value | humanize }}}}): the forecaster is down "
               "or its range queries fail.",
               service="forecaster", team="ops"),
    ]
    return [
        {"name": "forecast-predictive", "rules": predictive},
        {"name": "forecast-meta", "rules": meta},
    ]
