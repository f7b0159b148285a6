#!/usr/bin/env bash
# Sets up the real test services (Kafka-protocol broker, PostgreSQL, S3) and runs every test.
# This is the README's test command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

# One build cache outside the clone, so a second run (or CI after a session) is incremental.
if [ -z "${CARGO_TARGET_DIR:-}" ]; then
  if mkdir -p /var/cache/alluvium/target 2>/dev/null && [ -w /var/cache/alluvium/target ]; then
    export CARGO_TARGET_DIR=/var/cache/alluvium/target
  fi
fi

if ! command -v cargo-nextest >/dev/null 2>&1; then
  echo "[test] installing cargo-nextest" >&2
  cargo install --locked cargo-nextest
fi

export ALLUVIUM_SERVICES_DIR=${ALLUVIUM_SERVICES_DIR:-$(mktemp -d /tmp/alluvium-services.XXXXXX)}
# Free loopback ports, so that a developer's own services (or a parallel run) don't collide.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
export ALLUVIUM_KAFKA_PORT=${ALLUVIUM_KAFKA_PORT:-$(free_port)}
export ALLUVIUM_PG_PORT=${ALLUVIUM_PG_PORT:-$(free_port)}
export ALLUVIUM_S3_PORT=${ALLUVIUM_S3_PORT:-$(free_port)}
scripts/services.sh up
trap 'scripts/services.sh down' EXIT
# shellcheck disable=SC1091
source "$ALLUVIUM_SERVICES_DIR/env"

# Doc tests first: nextest's summary must be the run's closing line.
cargo test --workspace --doc
cargo nextest run --workspace --no-fail-fast "$@"
