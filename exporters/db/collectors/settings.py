"""settings: numeric and boolean pg_settings values, in base units (seconds, bytes); read in the
background every tables_interval, on the connection of pg_stat_statements."""
from __future__ import annotations

from exporters.db import logic, queries
from exporters.db.collectors.base import OWN, Collector, Queries, Scope
from exporters.db.metrics import Families

_METRIC = {"": "opsstack_db_setting", "seconds": "opsstack_db_setting_seconds", "bytes": "opsstack_db_setting_bytes"}


class SettingsCollector(Collector):
    name = "settings"
    scope = OWN  # settings change rarely: read in the background with the tables

    @classmethod
    def interval(cls, dbc) -> float:
        return dbc.tables_interval

    def collect(self, q: Queries, scope: Scope) -> Families:
        fams = Families()
        for name, setting, unit, vartype in q.rows("settings", queries.SETTINGS) or []:
            v = logic.setting_value(setting, unit, vartype)
            if v is not None:
                kind, value = v
                fams.add(_METRIC[kind], [scope.server, name], value)
        return fams
