#!/usr/bin/env bash
# The main job: installs what is missing, builds the module against Debian's nginx and runs
# /usr/sbin/nginx with it and nginx-conf/demo.conf on 127.0.0.1:8080 until Ctrl-C.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
install_deps
so="$(build_module debian)"

RUNTIME="$BUILD/demo"
mkdir -p "$RUNTIME"
user_line=""
[ "$(id -u)" = 0 ] && user_line="user root;"   # workers must read the checkout's files
sed -e "s|@MODULE@|$so|" -e "s|@RUNTIME@|$RUNTIME|g" -e "s|@SITE@|$ROOT/nginx-conf/demo-site|g" \
    -e "s|@USER@|$user_line|" nginx-conf/demo.conf >"$RUNTIME/nginx.conf"

/usr/sbin/nginx -t -q -p "$RUNTIME" -c "$RUNTIME/nginx.conf"
cat <<MSG

nginx-shield demo on http://127.0.0.1:8080 (Ctrl-C stops it). Try:
  curl -si http://127.0.0.1:8080/                      # security headers, CSP nonce, no-cache HTML
  curl -si http://127.0.0.1:8080/missing               # the same headers on nginx's own 404
  curl -si http://127.0.0.1:8080/assets/app.3f9a2c.js  # immutable cache policy
  curl -si -X OPTIONS -H 'Origin: https://app.example.com' \\
       -H 'Access-Control-Request-Method: PUT' http://127.0.0.1:8080/api/items.json   # preflight: 204
  curl -si -X OPTIONS -H 'Origin: https://evil.example' \\
       -H 'Access-Control-Request-Method: PUT' http://127.0.0.1:8080/api/items.json   # preflight: 403
  curl -s  http://127.0.0.1:8080/shield/metrics        # Prometheus metrics
  curl -s  http://127.0.0.1:8080/shield/health         # JSON health
Logs: $RUNTIME/error.log, $RUNTIME/access.log

MSG
exec /usr/sbin/nginx -p "$RUNTIME" -c "$RUNTIME/nginx.conf"
