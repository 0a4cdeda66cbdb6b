#!/usr/bin/env bash
# The replication walkthrough, end to end: brings the stack up (deploy/dev/up.sh), then
# creates a source, a replica seeded from a snapshot of it, shows both, detaches the
# replica, and deletes both, printing every command. The stack stays up afterwards.
set -euo pipefail
cd "$(dirname "$0")/../.."
export FTROVE_URL
FTROVE_URL=$(deploy/dev/up.sh)
export PATH=$PWD/target/debug:$PATH

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

SUFFIX=${1:-}
M=m1$SUFFIX S=s1$SUFFIX
step ftrove flavor-list
step ftrove create "$M" 7 --size 2 --databases appdb --users app:apppass --wait
step ftrove list
M_ID=$(ftrove show "$M" --json | sed -n 's/^ *"id": "\([0-9a-f-]\{36\}\)",\{0,1\}$/\1/p' | head -n 1)
step ftrove create "$S" 7 --size 2 --replica-of "$M_ID" --wait
step ftrove show "$S"
step ftrove show "$M"
step ftrove detach-replica "$S" --wait
step ftrove show "$S"
step ftrove delete "$S" --wait
step ftrove delete "$M" --wait
step ftrove list
printf '\nThe stack is still up at %s (try ftrove with FTROVE_URL=%s); stop it with deploy/dev/down.sh\n' "$FTROVE_URL" "$FTROVE_URL"
