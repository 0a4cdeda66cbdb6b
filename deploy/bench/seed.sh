#!/usr/bin/env bash
# The replica-seeding benchmark: builds ftrove-bench-seed in release mode and runs it. It
# fills a source MariaDB with SIZE_GB of InnoDB data, then measures in one run the raw copy
# of its data dir (tar | tar; sync), physical seeding of one replica and of three at once
# (mariabackup snapshot + attach, through the agent's own code), and logical seeding of one;
# prints a table, the two targets and one JSON line (also kept in target/bench/seed/).
# Usage: deploy/bench/seed.sh [SIZE_GB] [ftrove-bench-seed options]   (default 2)
#   e.g. deploy/bench/seed.sh 0.2 --skip-logical      a quick check
#        deploy/bench/seed.sh 2 --cold                page cache dropped before each step
# Needs root (the servers run as the mysql user) and about 8x SIZE_GB of free disk under
# $TMPDIR (or --work-dir). Keep other heavy work off the machine while it runs.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SIZE_GB=${1:-2}
shift || true

if [ "$(id -u)" != 0 ]; then
  echo "[bench] run me as root: the servers run as the mysql user" >&2
  exit 1
fi
if ! command -v mariadbd >/dev/null || ! command -v mariabackup >/dev/null \
  || ! command -v mbstream >/dev/null || ! command -v mariadb-dump >/dev/null; then
  deploy/dev/services.sh
fi
echo "[bench] building" >&2
cargo build --release -q -p ferrotrove-bench --bin ftrove-bench-seed
OUT=$ROOT/target/bench/seed
mkdir -p "$OUT"
"$ROOT/target/release/ftrove-bench-seed" --size-gb "$SIZE_GB" "$@" | tee "$OUT/last.txt"
tail -n 1 "$OUT/last.txt" >> "$OUT/runs.jsonl"
