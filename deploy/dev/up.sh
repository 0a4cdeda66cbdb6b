#!/usr/bin/env bash
# Starts the development stack on this machine: RabbitMQ and MariaDB (installed if missing),
# then ftrove-conductor, ftrove-taskmanager and ftrove-api in the background.
# Idempotent: what is already running is left alone. Prints the API URL.
#
# State (configs, logs, pids, instances) lives in $FTROVE_DEV_DIR, default ./.state/dev.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
DEV=${FTROVE_DEV_DIR:-$ROOT/.state/dev}
TENANT=${FTROVE_TENANT:-demo}
API_PORT=${FTROVE_API_PORT:-8779}
URL="http://127.0.0.1:$API_PORT/v1.0/$TENANT"

log() { printf '[up] %s\n' "$*" >&2; }

deploy/dev/services.sh

log "building (cargo build --workspace --bins)"
cargo build --workspace --bins --quiet
BIN=$ROOT/target/debug

# The stack's own RabbitMQ vhost, so that down.sh can remove every queue it made.
if ! rabbitmqctl -q list_vhosts | grep -qx ferrotrove-dev; then
  rabbitmqctl -q add_vhost ferrotrove-dev
  rabbitmqctl -q set_permissions -p ferrotrove-dev guest '.*' '.*' '.*'
fi

mkdir -p "$DEV/local"
chmod 0755 "$DEV" "$DEV/local"

# One config per daemon; the same broker, exchange and control database for all.
common() {
  cat <<TOML
[bus]
url = "amqp://guest:guest@127.0.0.1:5672/ferrotrove-dev"
exchange = "ferrotrove"

[store]
url = "mysql://ferrotrove:ferrotrove@127.0.0.1:3306"
database = "ferrotrove_dev"
TOML
}
[ -f "$DEV/conductor.toml" ] || common > "$DEV/conductor.toml"
[ -f "$DEV/taskmanager.toml" ] || { common; cat <<TOML

[local]
state_dir = "$DEV/local"
TOML
} > "$DEV/taskmanager.toml"
# No authentication on a laptop (the API warns about it in its log); see api.toml.example
# for tokens. An api.toml from before [auth] existed gets it added.
[ -f "$DEV/api.toml" ] || { printf 'listen = "127.0.0.1:%s"\n\n[auth]\nmode = "none"\n\n' "$API_PORT"; common; } > "$DEV/api.toml"
grep -q '^\[auth\]' "$DEV/api.toml" || printf '\n[auth]\nmode = "none"\n' >> "$DEV/api.toml"

running() { [ -f "$DEV/$1.pid" ] && kill -0 "$(cat "$DEV/$1.pid")" 2>/dev/null; }

for daemon in conductor taskmanager api; do
  if running "$daemon"; then
    log "ftrove-$daemon already running (pid $(cat "$DEV/$daemon.pid"))"
    continue
  fi
  # setsid: the daemons outlive this shell; down.sh stops them.
  setsid "$BIN/ftrove-$daemon" --config "$DEV/$daemon.toml" >>"$DEV/$daemon.log" 2>&1 < /dev/null &
  echo $! > "$DEV/$daemon.pid"
  log "started ftrove-$daemon (pid $!, log $DEV/$daemon.log)"
done

for _ in $(seq 1 300); do
  if curl -fsS -o /dev/null "$URL/flavors" 2>/dev/null; then
    log "API ready"
    echo "$URL"
    exit 0
  fi
  for daemon in conductor taskmanager api; do
    running "$daemon" || { log "ftrove-$daemon exited; last lines of its log:"; tail -n 20 "$DEV/$daemon.log" >&2; exit 1; }
  done
  sleep 0.2
done
log "the API did not answer at $URL within 60 s; see $DEV/api.log"
exit 1
