#!/usr/bin/env bash
# The benchmark (not part of CI's pass/fail; numbers drift on a shared machine, so read the ratios):
# builds the release handler and the load driver, runs the criterion micro-benchmarks, then drives
# both embedded backends and the Cosmos DB store (through the local test peer), and writes
# bench/results.json, bench/results.md and bench/latency.png.
#
#   scripts/bench.sh [seconds per phase = 5] [clients = 8]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-5}
clients=${2:-8}

cargo build --release --locked --bin handler --example load --example memory_server
# The Cosmos DB test peer (pinned npm package, as for the tests).
[ -f emulator/node_modules/@vercel/cosmosdb-server/package.json ] || (cd emulator && npm ci --no-audit --no-fund --loglevel=error)
cargo bench --locked --bench primitives -- --warm-up-time 1 --measurement-time 3
target/release/examples/load target/release/handler target/release/examples/memory_server "$seconds" "$clients"
