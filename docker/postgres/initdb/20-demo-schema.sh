#!/bin/bash
# The demo platform's schema and data (demo/db/schema.sql, demo/db/seed.sql), the same
# files `opsstack db workload` applies natively. Skipped with OPSSTACK_DEMO_SCALE=0.
set -euo pipefail
scale="${OPSSTACK_DEMO_SCALE:-2}"
if [ "$scale" = "0" ]; then
  echo "opsstack: demo schema skipped (OPSSTACK_DEMO_SCALE=0)"
  exit 0
fi
db="${POSTGRES_DB:-postgres}"
psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname "$db" \
     -f /opt/opsstack/demo/schema.sql
start=$(date +%s)
psql -v ON_ERROR_STOP=1 -v scale="$scale" --username "${POSTGRES_USER:-postgres}" --dbname "$db" \
     -f /opt/opsstack/demo/seed.sql
secs=$(( $(date +%s) - start ))
psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname "$db" \
     -c "insert into platform.seed_info (scale, seconds) values (${scale}, ${secs}) on conflict do nothing"
echo "opsstack: demo schema seeded at scale ${scale} in ${secs}s"
