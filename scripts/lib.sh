# Shared helpers for the scripts; sourced, not run.
# Everything a fresh Debian 12 machine needs is installed here, so the README's two commands
# (scripts/run.sh, scripts/test.sh) work on a new machine with only apt and cargo reachable.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="$ROOT/target"                    # all build products live under target/
DEBIAN_NGINX_SRC="$BUILD/nginx-debian"  # configured copy of Debian's nginx-dev source
APT_PACKAGES=(nginx nginx-dev libclang-dev libpcre2-dev libssl-dev zlib1g-dev pkg-config
              make gcc redis-server wrk curl openssl ca-certificates
              chromium modsecurity-crs redis-sentinel python3-yaml)

log() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }

need_root() {
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null; then echo sudo; else
            echo "this step needs root (apt-get)" >&2; exit 1; fi
    fi
}

install_deps() {
    local missing=()
    for p in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing: ${missing[*]}"
        local sudo; sudo="$(need_root)"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
        # Debian starts nginx and redis on install; the project runs its own.
        $sudo service nginx stop >/dev/null 2>&1 || true
        $sudo service redis-server stop >/dev/null 2>&1 || true
        $sudo service redis-sentinel stop >/dev/null 2>&1 || true
    fi
    if ! command -v cargo >/dev/null; then
        [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
    fi
    if ! command -v cargo >/dev/null; then
        log "installing the Rust toolchain from Debian (cargo)"
        local sudo; sudo="$(need_root)"
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq cargo rustc >/dev/null
    fi
}

# Configure Debian's nginx source with the exact flags /usr/sbin/nginx was built with, so the
# module's binary signature matches and `load_module` accepts it.
configure_debian_nginx() {
    local stamp="$DEBIAN_NGINX_SRC/objs/.shield-configured"
    local version; version="$(/usr/sbin/nginx -v 2>&1 | sed 's|.*/||')"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$version" ]; then return; fi
    log "configuring Debian nginx $version source for the module build"
    rm -rf "$DEBIAN_NGINX_SRC"; mkdir -p "$DEBIAN_NGINX_SRC"
    cp -a /usr/share/nginx/src/. "$DEBIAN_NGINX_SRC/"
    # conf_flags defines NGX_CONF_FLAGS=( ... ); cc/ld opts come from `nginx -V`.
    # shellcheck disable=SC1091
    source "$DEBIAN_NGINX_SRC/conf_flags"
    local cc_opt ld_opt
    cc_opt="$(/usr/sbin/nginx -V 2>&1 | sed -n "s/.*--with-cc-opt='\([^']*\)'.*/\1/p")"
    ld_opt="$(/usr/sbin/nginx -V 2>&1 | sed -n "s/.*--with-ld-opt='\([^']*\)'.*/\1/p")"
    (cd "$DEBIAN_NGINX_SRC" && ./configure "${NGX_CONF_FLAGS[@]}" \
        --with-cc-opt="$cc_opt" --with-ld-opt="$ld_opt" >"$DEBIAN_NGINX_SRC/configure.log" 2>&1) \
        || { tail -30 "$DEBIAN_NGINX_SRC/configure.log"; exit 1; }
    echo "$version" >"$stamp"
}

# build_module debian|vendored [cargo args...]: prints the path of the built .so.
build_module() {
    local flavour="$1"; shift
    local target="$BUILD/$flavour"
    case "$flavour" in
        debian)
            configure_debian_nginx
            log "building the module against Debian nginx ($(/usr/sbin/nginx -v 2>&1 | sed 's|.*/||'))"
            NGINX_BUILD_DIR="$DEBIAN_NGINX_SRC/objs" CARGO_TARGET_DIR="$target" \
                cargo build --release --locked "$@" >&2 ;;
        vendored)
            log "building the module and nginx from nginx-src (vendored)"
            CARGO_TARGET_DIR="$target" cargo build --release --locked --features vendored "$@" >&2 ;;
        *) echo "unknown flavour $flavour" >&2; exit 2 ;;
    esac
    cp "$target/release/libngx_http_shield_module.so" "$target/ngx_http_shield_module.so"
    echo "$target/ngx_http_shield_module.so"
}

# nginx_bin debian|vendored: the nginx binary a flavour's module loads into.
nginx_bin() {
    case "$1" in
        debian) echo /usr/sbin/nginx ;;
        vendored) echo "$(cat "$BUILD/vendored/release/nginx-build-dir")/nginx" ;;
    esac
}
