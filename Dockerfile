# One image for every opsstack program of docker-compose.yml: the receiver, the exporters,
# the forecaster and the demo platform. Each compose service runs
#   opsstack -c /etc/opsstack/opsstack.yaml <command>
# Prometheus, Alertmanager, Grafana, node_exporter and PostgreSQL use their own images.
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OPSSTACK_CONFIG=/etc/opsstack/opsstack.yaml

# libpq for psycopg's pool diagnostics; tini reaps the children of gunicorn and the demo
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpq5 tini \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/opsstack
# dependencies first (pinned in pyproject.toml) so code changes do not reinstall them
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt

COPY core ./core
COPY stack ./stack
COPY exporters ./exporters
COPY forecasters ./forecasters
COPY webhook_receiver ./webhook_receiver
COPY dashboards ./dashboards
COPY demo ./demo
COPY alert_rules ./alert_rules
COPY bench ./bench
# the runbooks the receiver serves at /runbooks (receiver.runbooks_dir in docker/opsstack.yaml)
COPY docs/runbooks ./docs/runbooks
RUN pip install --no-deps . \
 && useradd --system --uid 10001 --home-dir /var/lib/opsstack --create-home opsstack \
 && mkdir -p /etc/opsstack

COPY docker/opsstack.yaml /etc/opsstack/opsstack.yaml
COPY docker/healthcheck.py /usr/local/bin/opsstack-healthcheck
RUN chmod 0755 /usr/local/bin/opsstack-healthcheck

USER opsstack
WORKDIR /var/lib/opsstack
ENTRYPOINT ["/usr/bin/tini", "--", "opsstack"]
CMD ["--help"]
