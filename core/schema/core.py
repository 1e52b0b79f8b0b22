"""`stack:` how the native stack runs: run folder, bind address, ports, intervals."""
from core.spec import ConfigError, Field

PORT_NAMES = ("prometheus", "alertmanager", "node_exporter", "receiver", "supervisor",
              "exporter_app", "exporter_db", "exporter_cdn", "exporter_security", "forecaster", "postgres",
              "exporter_cost",  # the cost exporter (exporters.cost)
              "exporter_automation",  # the automation exporter (exporters.automation)
              "postgres_replica",  # the embedded cluster's streaming replica (database.embedded.replica)
              "mailsink_smtp", "mailsink_web",  # the demo mail sink (demo.mailsink)
              "loki", "loki_grpc",  # Grafana Loki (logs.loki; docs/logs.md)
              "airflow", "airflow_worker_logs", "airflow_trigger_logs")  # Apache Airflow (demo.airflow)

SECTION = {
    "run_dir": Field("str", ".run", "folder for generated configs, data and logs"),
    "host": Field("str", "127.0.0.1", "address every native component binds to"),
    "scrape_interval": Field("duration", "15s", minimum=1),
    "scrape_timeout": Field("duration", "10s", minimum=0.5),
    "evaluation_interval": Field("duration", "15s", minimum=1),
    "retention": Field("duration", "15d", minimum=3600),
    "startup_timeout": Field("duration", "120s", minimum=5),
    # 'auto' = a free port chosen on the first `up` and remembered in <run_dir>/ports.json
    "ports": {name: Field("port", "auto") for name in PORT_NAMES},
}


def check(cfg):


    s = cfg["stack"]
    if s["scrape_timeout"] > s["scrape_interval"]:
        raise ConfigError("stack.scrape_timeout", "must not be longer than stack.scrape_interval")
