#!/bin/bash
# The exporter reads pg_stat_statements; the index advisor plans with HypoPG (and reads
# pg_qualstats when it is there). In template1 too, so every new database has them.
set -euo pipefail
for db in template1 "${POSTGRES_DB:-postgres}"; do
  psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname "$db" <<'SQL'
create extension if not exists pg_stat_statements;
create extension if not exists hypopg;
create extension if not exists pg_qualstats;
SQL
done
