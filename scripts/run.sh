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

# Redis for the rate limits when it is installed: a private one on a Unix socket (no port to
# collide with), stopped with the demo. Without it the limits use shared memory.
redis_line="# no redis-server found: rate limits use the shared-memory backend"
if command -v redis-server >/dev/null; then
    redis-server --port 0 --unixsocket "$RUNTIME/redis.sock" --unixsocketperm 700 --save "" \
        --appendonly no --daemonize yes --pidfile "$RUNTIME/redis.pid" --logfile "$RUNTIME/redis.log"
    trap 'kill "$(cat "$RUNTIME/redis.pid" 2>/dev/null)" 2>/dev/null || true' EXIT
    for _ in $(seq 50); do [ -S "$RUNTIME/redis.sock" ] && break; sleep 0.1; done
    redis_line="shield_redis unix://$RUNTIME/redis.sock timeout=50ms;"
fi
# The demo login: demo / demo.
printf 'demo:%s\n' "$(openssl passwd -apr1 demo)" >"$RUNTIME/htpasswd"

sed -e "s|@MODULE@|$so|" -e "s|@RUNTIME@|$RUNTIME|g" -e "s|@SITE@|$ROOT/nginx-conf/demo-site|g" \
    -e "s|@USER@|$user_line|" -e "s|@REDIS@|$redis_line|" nginx-conf/demo.conf >"$RUNTIME/nginx.conf"

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
  for i in \$(seq 13); do curl -s -o /dev/null -w '%{http_code} ' http://127.0.0.1:8080/api/items.json; done  # 429s
  for i in \$(seq 6); do curl -s -o /dev/null -w '%{http_code} ' -u demo:wrong http://127.0.0.1:8080/login; done  # ban
  curl -si 'http://127.0.0.1:8080/?q=1%27%20OR%201=1--'  # blocked by the filter (403)
  curl -s  http://127.0.0.1:8080/shield/metrics        # Prometheus metrics
  curl -s  http://127.0.0.1:8080/shield/health         # JSON health
Logs: $RUNTIME/error.log, $RUNTIME/access.log

MSG
# Not exec: the EXIT trap stops the demo's Redis when nginx stops.
/usr/sbin/nginx -p "$RUNTIME" -c "$RUNTIME/nginx.conf"
