#!/usr/bin/env bash
# Stops everything deploy/dev/up.sh started: the daemons, then every instance's agent and
# database server, and removes the dev stack's instances, snapshots and control database.
# RabbitMQ and MariaDB themselves keep running.
set -uo pipefail
cd "$(dirname "$0")/../.."
DEV=${FTROVE_DEV_DIR:-$PWD/.state/dev}

log() { printf '[down] %s\n' "$*" >&2; }

stop_pid() { # pid-file
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 0
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  log "pid $pid ignored SIGTERM; killing it"
  kill -KILL "$pid" 2>/dev/null
}

[ -d "$DEV" ] || { log "nothing to stop in $DEV"; exit 0; }
for daemon in api taskmanager conductor; do
  [ -f "$DEV/$daemon.pid" ] && { stop_pid "$DEV/$daemon.pid"; rm -f "$DEV/$daemon.pid"; log "stopped ftrove-$daemon"; }
done
# Agents first (so none restarts its server), then the database servers.
for f in "$DEV"/local/instances/*/agent.pid; do [ -e "$f" ] && stop_pid "$f"; done
find "$DEV/local/instances" -name '*.pid' ! -name agent.pid 2>/dev/null | while read -r f; do stop_pid "$f"; done
n=$(ls "$DEV/local/instances" 2>/dev/null | wc -l)
# Each instance's own broker user (ftga-<id without dashes>) outlives the vhost.
for d in "$DEV"/local/instances/*/; do
  [ -d "$d" ] || continue
  id=$(basename "$d")
  rabbitmqctl -q delete_user "ftga-${id//-/}" >/dev/null 2>&1 || true
done
rm -rf "$DEV/local"
mariadb -h 127.0.0.1 -u ferrotrove -pferrotrove -e 'DROP DATABASE IF EXISTS ferrotrove_dev' 2>/dev/null
rabbitmqctl -q delete_vhost ferrotrove-dev >/dev/null 2>&1 || true
log "stopped the stack and removed $n instance(s)"
