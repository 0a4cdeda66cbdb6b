#!/usr/bin/env bash
# The scale benchmark: builds ftrove-bench-scale, ftrove-conductor and ftrove-api in release
# mode and runs it. In a control database and a RabbitMQ vhost of its own (both removed at
# the end) it inserts 10,000 ACTIVE instances with their own secrets, runs the real
# conductor and publishes signed heartbeats for all of them from many connections,
# counting what MariaDB has stored; then it times the API's list (1,000 instances of one
# tenant) and show, and the liveness check over 10,000 rows. Prints a table with the
# targets and one JSON line (also kept in target/bench/scale/).
# Usage: deploy/bench/scale.sh [ftrove-bench-scale options]
#   e.g. deploy/bench/scale.sh --rounds 20 --publishers 32
# Needs rabbitmqctl on this host (root, or a user allowed to run it). Keep other heavy
# work off the machine while it runs: the publishers, RabbitMQ, MariaDB and the conductor
# all share its cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

deploy/dev/services.sh
echo "[bench] building" >&2
cargo build --release -q -p ferrotrove-bench -p ferrotrove-conductor -p ferrotrove-api \
  --bin ftrove-bench-scale --bin ftrove-conductor --bin ftrove-api
OUT=$ROOT/target/bench/scale
mkdir -p "$OUT"
"$ROOT/target/release/ftrove-bench-scale" "$@" | tee "$OUT/last.txt"
tail -n 1 "$OUT/last.txt" >> "$OUT/runs.jsonl"
