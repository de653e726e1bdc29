#!/usr/bin/env bash
# Builds Charter in release mode and runs the end-to-end load benchmarks
# (benches/load.rs) on loopback: renewal and portal issuance (RS256, EdDSA),
# `GET /api/licensing/check` on `charter instance` next to a bare axum
# handler, push to 1,000 and 10,000 instances, peak RSS; on SQLite and on
# PostgreSQL (a fresh database on $LOAD_PG_ADMIN, default
# postgres://postgres@127.0.0.1:5432/postgres, dropped afterwards).
# Prints one table. Knobs: see the top of benches/load.rs (LOAD_N,
# LOAD_CONCURRENCY, LOAD_STORES, LOAD_PUSH, LOAD_CHECK_SECS, CHARTER_LOG).
# LOAD_SCALE=1 runs the scale bench instead (benches/scale/mod.rs;
# LOAD_SCALE_SIZES=10000,100000,1000000). LOAD_USAGE=1 runs the usage-query
# rows instead (benches/usage/mod.rs: 100k usage reports, GET .../usage).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin charter
exec cargo bench --bench load
