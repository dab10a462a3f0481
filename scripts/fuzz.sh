#!/usr/bin/env bash
# Fuzzes the decoders/parsers, the WAF engine and the JWT parser/verifier with cargo-fuzz (libFuzzer), each for a
# bounded time. Not part of scripts/test.sh: it needs cargo-fuzz and a nightly toolchain (or
# RUSTC_BOOTSTRAP on stable, without sanitizers).
#
#   scripts/fuzz.sh [seconds-per-target=60]
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
SECS="${1:-60}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
if rustup toolchain list 2>/dev/null | grep -q nightly; then
    run() { cargo +nightly fuzz run --fuzz-dir scripts/fuzz "$@"; }
else
    log "no nightly toolchain: fuzzing without sanitizers via RUSTC_BOOTSTRAP"
    run() { RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir scripts/fuzz --sanitizer none "$@"; }
fi
for target in decoders engine jwt_token; do
    log "fuzzing $target for ${SECS}s"
    mkdir -p "$BUILD/fuzz-corpus/$target"
    run "$target" "$BUILD/fuzz-corpus/$target" -- -max_total_time="$SECS" -max_len=8192 -rss_limit_mb=2048
done
log "fuzzing finished clean"
