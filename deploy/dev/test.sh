#!/usr/bin/env bash
# Runs every test: makes sure RabbitMQ and MariaDB are up, builds every binary (the
# end-to-end tests run them), then runs the whole workspace's tests.
set -euo pipefail
cd "$(dirname "$0")/../.."
deploy/dev/services.sh
cargo build --workspace --bins
cargo test --workspace "$@"
