#!/usr/bin/env bash
# Runs every test: the pure core's unit tests, then the integration tests against a real nginx
# loading the built module, once per nginx build (Debian's /usr/sbin/nginx 1.22 and the
# vendored nginx 1.28). Installs whatever is missing first. Usage: scripts/test.sh [filter]
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
install_deps

log "toolchain checks: rustfmt, clippy (pure core and tests)"
cargo fmt --all --check
CARGO_TARGET_DIR="$BUILD/unit" cargo clippy --locked --no-default-features --lib --tests -- -D warnings

log "unit tests (pure core, no nginx)"
CARGO_TARGET_DIR="$BUILD/unit" cargo test --locked --no-default-features --lib ${1:+"$1"}

for flavour in debian vendored; do
    so="$(build_module "$flavour")"
    bin="$(nginx_bin "$flavour")"
    log "integration tests: $($bin -v 2>&1 | sed 's|.*/||') loading $so"
    extra=()
    [ "$flavour" = vendored ] && extra=(--features vendored)
    [ "$flavour" = debian ] && export NGINX_BUILD_DIR="$DEBIAN_NGINX_SRC/objs"
    if [ "$flavour" = debian ]; then
        log "clippy: the nginx glue"
        CARGO_TARGET_DIR="$BUILD/$flavour" cargo clippy --release --locked --lib -- -D warnings
    fi
    SHIELD_NGINX_BIN="$bin" SHIELD_MODULE="$so" CARGO_TARGET_DIR="$BUILD/$flavour" \
        cargo test --release --locked "${extra[@]}" --test '*' ${1:+"$1"}
    unset NGINX_BUILD_DIR
done
log "all tests passed"
