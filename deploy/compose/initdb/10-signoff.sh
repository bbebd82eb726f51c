#!/bin/sh
# Runs once, when the postgres volume is empty (docker-entrypoint-initdb.d).
# - role `temporal` (CREATEDB) for temporalio/auto-setup, which creates `temporal` and
#   `temporal_visibility` itself;
# - database `signoff` (the audit ledger), owned by the admin role that `signoff db migrate` uses;
# - role `signoff_worker`: LOGIN only; `signoff db migrate` grants it INSERT/SELECT on the ledger.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v temporal_pw="$TEMPORAL_DB_PASSWORD" -v worker_pw="$SIGNOFF_WORKER_DB_PASSWORD" <<'SQL'
CREATE ROLE temporal LOGIN CREATEDB PASSWORD :'temporal_pw';
CREATE ROLE signoff_worker LOGIN PASSWORD :'worker_pw';
CREATE DATABASE signoff;
REVOKE ALL ON DATABASE signoff FROM PUBLIC;
GRANT CONNECT ON DATABASE signoff TO signoff_worker;
SQL
