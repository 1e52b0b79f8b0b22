#!/usr/bin/env bash
# Install the real parts opsstack runs, from Debian's packages, when they are missing.
# Usage: scripts/install-deps.sh [--test]   (--test adds what only the test suite needs)
set -euo pipefail

want=()
need() { # need BINARY PACKAGE
  if ! command -v "$1" >/dev/null 2>&1 && [ ! -x "$1" ]; then want+=("$2"); fi
}
need prometheus prometheus
need promtool prometheus
need prometheus-alertmanager prometheus-alertmanager
need amtool prometheus-alertmanager
need prometheus-node-exporter prometheus-node-exporter
need prometheus-blackbox-exporter prometheus-blackbox-exporter
need prometheus-postgres-exporter prometheus-postgres-exporter
need pgbackrest pgbackrest  # WAL archiving and backups of the embedded cluster (demo/backups.py)
# Grafana Loki: not packaged in Debian (its `loki` package is an unrelated genetics program, never
# installed here); `logs.loki: auto` runs Loki only when a Grafana Loki binary is found (docs/logs.md)

# PostgreSQL server binaries for the embedded cluster, and hypopg for the same major.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then want+=(postgresql); fi
major=$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1 || true)
if [ -n "$major" ]; then
  [ -f "/usr/share/postgresql/$major/extension/hypopg.control" ] || want+=("postgresql-$major-hypopg")
  [ -f "/usr/share/postgresql/$major/extension/pg_qualstats.control" ] || want+=("postgresql-$major-pg-qualstats")
else
  want+=(postgresql-15-hypopg postgresql-15-pg-qualstats)
fi

# the demo's edge (demo/edge.py, started by `make up`): nginx with ModSecurity v3 + OWASP CRS,
# varnishd with vmod xkey, redis-server, fail2ban
need /usr/sbin/nginx nginx
[ -f /usr/lib/nginx/modules/ngx_http_modsecurity_module.so ] || want+=(libnginx-mod-http-modsecurity)
[ -d /usr/share/modsecurity-crs/rules ] || want+=(modsecurity-crs)
need /usr/sbin/varnishd varnish
need varnishstat varnish
ls /usr/lib/*/varnish/vmods/libvmod_xkey.so >/dev/null 2>&1 || want+=(varnish-modules)
need redis-server redis-server
need fail2ban-server fail2ban

if [ "${1:-}" = "--test" ]; then
  need chromium chromium
  need chromedriver chromium-driver
  need /usr/sbin/pgbouncer pgbouncer
  # the Debian exporters bench/cdn_exporter_bench.py measures ours against
  need prometheus-varnish-exporter prometheus-varnish-exporter
  need prometheus-redis-exporter prometheus-redis-exporter
  # security exporter tests and bench (exporters/security): the real logrotate, pgBackRest
  need /usr/sbin/logrotate logrotate
  need pgbackrest pgbackrest
fi

# python3-venv is needed to create .venv on a bare Debian/Ubuntu
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || want+=(python3-venv)

if [ ${#want[@]} -eq 0 ]; then
  exit 0
fi
# unique
mapfile -t want < <(printf '%s\n' "${want[@]}" | sort -u)
echo "opsstack: installing missing packages: ${want[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# policy-rc.d keeps Debian from starting the packaged services: opsstack runs its own.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get install -y -qq --no-install-recommends "${want[@]}"
