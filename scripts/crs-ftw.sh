#!/usr/bin/env bash
# Replays a CRS checkout's regression tests (go-ftw YAML, tests/regression/tests/**/*.yaml)
# through nginx running the module with that CRS, and prints per-family pass rates. Not part of
# scripts/test.sh: it needs a CRS checkout (CI has no network).
#
#   scripts/crs-ftw.sh CRS_DIR [--mode block|ftw] [--paranoia N] [--family 942] [--failures N] [--builtin]
# --builtin: the same tests against the built-in packs (shield_filter on) instead of the CRS.
#
# SHIELD_MODULE=path/to/ngx_http_shield_module.so skips the build.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
[ $# -ge 1 ] && [ -d "$1/rules" ] && [ -d "$1/tests/regression/tests" ] || {
    echo "usage: $0 CRS_DIR [options] (a coreruleset checkout with rules/ and tests/regression/tests/)" >&2
    exit 2
}
crs="$1"; shift
install_deps
so="${SHIELD_MODULE:-$(build_module debian)}"
exec python3 "$ROOT/scripts/crs-ftw.py" --crs "$crs" --module "$so" --nginx /usr/sbin/nginx "$@"
