#!/usr/bin/env bash
# Throughput benchmark: wrk on loopback against Debian's nginx, bare (no module) and with each
# shield feature, all in one run. Rounds are interleaved (bare, A, B, bare, A, B, ...) and the
# median per scenario is reported with its ratio to bare nginx (to bare_many for the scenarios
# with many clients).
#
#   scripts/bench.sh [seconds-per-run=5] [rounds=3] [connections=50]
#
# nginx runs 1 worker (one core), wrk 1 thread (the other core). Every run is bounded by
# wrk's -d; nothing here is a test assertion: numbers are reported, not judged.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
install_deps
SECS="${1:-5}"; ROUNDS="${2:-3}"; CONNS="${3:-50}"
so="$(build_module debian)"
WORK="$BUILD/bench"; rm -rf "$WORK"; mkdir -p "$WORK/html"
printf 'hello from the benchmark\n' >"$WORK/html/index.html"
# The response cache's bodies: 1 KB and 64 KB, dated in the past so the static responses
# get the Last-Modified heuristic's freshness (a day) and are stored.
head -c 1024 /dev/zero | tr '\0' a >"$WORK/html/1k.txt"
head -c 65536 /dev/zero | tr '\0' b >"$WORK/html/64k.txt"
touch -d 2020-01-01 "$WORK/html/1k.txt" "$WORK/html/64k.txt"
user_line=""; [ "$(id -u)" = 0 ] && user_line="user root;"

# scenario NAME LOAD_MODULE(yes|no|lua) PATH WRK_SCRIPT HTTP_SNIPPET [REFERENCE=bare]
# A scenario's ratios are to its reference (same wrk script) in the same round.
SCENARIOS=()
# ONLY="headers filter" scripts/bench.sh runs a subset (with the references it needs).
scenario() {
    eval "S_MOD_$1=\$2; S_PATH_$1=\$3; S_LUA_$1=\$4; S_CONF_$1=\$5; S_REF_$1=\${6:-bare}"
    [ -n "${ONLY:-}" ] && [ "$1" != bare ] && [[ " $ONLY " != *" $1 "* ]] && return
    local ref="${6:-bare}"
    [[ " ${SCENARIOS[*]} " != *" $ref "* ]] && [ "$ref" != "$1" ] && SCENARIOS+=("$ref")
    SCENARIOS+=("$1")
}

scenario bare no /index.html "" "" bare
# What the preset's bytes alone cost: the same eight headers with plain add_header, no module.
scenario add_header_same no /index.html "" "add_header Content-Security-Policy \"default-src 'self'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'; object-src 'none'\" always; add_header X-Frame-Options DENY always; add_header X-Content-Type-Options nosniff always; add_header Referrer-Policy strict-origin-when-cross-origin always; add_header Permissions-Policy \"accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), microphone=(), payment=(), usb=()\" always; add_header Cross-Origin-Opener-Policy same-origin always; add_header Cross-Origin-Resource-Policy same-origin always;"
scenario headers yes /index.html "" "shield_headers on;"
scenario headers_cors_cache yes /index.html "" "shield_headers on; shield_cors on; shield_cors_origins https://a.example; shield_cache_control \"no-cache\" type=text/html;"

# Input filtering: benign POSTs with query args, a cookie and a small JSON body, all packs on.
scenario bare_post no / "$ROOT/scripts/wrk/post-json.lua" "" bare_post
scenario filter yes / "$ROOT/scripts/wrk/post-json.lua" "shield_filter on;" bare_post
# The same POST through Debian's CRS 3.3.4 at PL1 (the rules the engine cannot express left out),
# and through a CRS v4 checkout when SHIELD_CRS4_DIR names one (its crs-setup.conf.example).
scenario crs yes / "$ROOT/scripts/wrk/post-json.lua" "shield_filter_secrules /etc/modsecurity/crs/crs-setup.conf /usr/share/modsecurity-crs/rules/*.conf remove=910100,910140,920120,942130,953120;" bare_post
if [ -n "${SHIELD_CRS4_DIR:-}" ]; then
    scenario crs4 yes / "$ROOT/scripts/wrk/post-json.lua" "shield_filter_secrules $SHIELD_CRS4_DIR/crs-setup.conf.example $SHIELD_CRS4_DIR/rules/*.conf;" bare_post
fi

# Rate limiting: a limit high enough never to reject, so the cost of checking is measured.
# GET scenarios ask for /index.html: "/" would add an internal redirect (index) to each.
# A private redis-server on a free port (never one that is already running: a scenario would
# then measure someone else's Redis, or none at all and fail open).
free_port() { local p; for p in $(seq "$1" "$(($1 + 100))"); do (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }; done; return 1; }
REDIS_PORT="$(free_port 18479)"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
    --unixsocket "$WORK/redis.sock" --unixsocketperm 777 --pidfile "$WORK/redis.pid" >/dev/null
trap 'kill "$(cat "$WORK/redis.pid" 2>/dev/null)" 2>/dev/null || true' EXIT
for _ in $(seq 50); do [ "$(redis-cli -s "$WORK/redis.sock" ping 2>/dev/null)" = PONG ] && break; sleep 0.1; done
[ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] || { echo "redis-server did not start on port $REDIS_PORT" >&2; exit 1; }
scenario limit_req no /index.html "" "limit_req_zone \$binary_remote_addr zone=b:10m rate=1000000r/s; limit_req zone=b burst=1000 nodelay;"
scenario shield_local yes /index.html "" "shield_limit_zone \$binary_remote_addr zone=b:10m rate=1000000r/s backend=local; shield_limit zone=b burst=1000 nodelay;"
scenario shield_local_noheaders yes /index.html "" "shield_limit_zone \$binary_remote_addr zone=b:10m rate=1000000r/s backend=local; shield_limit zone=b burst=1000 nodelay; shield_limit_headers off;"
scenario shield_redis yes /index.html "" "shield_redis redis://127.0.0.1:$REDIS_PORT timeout=100ms; shield_limit_zone \$binary_remote_addr zone=b:10m rate=1000000r/s; shield_limit zone=b burst=1000 nodelay;"
# The same Redis over its Unix socket (a Redis on the nginx host).
scenario shield_redis_unix yes /index.html "" "shield_redis unix://$WORK/redis.sock timeout=100ms; shield_limit_zone \$binary_remote_addr zone=b:10m rate=1000000r/s; shield_limit zone=b burst=1000 nodelay;"

# Many clients: each request carries one of 10,000 API keys (X-Api-Key), the limit is per key.
# Every key of a batch is then its own read and write in Redis. Ratios are to bare_many (the
# same wrk script, whose request generation costs wrk some CPU).
MANY="$ROOT/scripts/wrk/many-clients.lua"
scenario bare_many no /index.html "$MANY" "" bare_many
scenario shield_local_many yes /index.html "$MANY" "shield_limit_zone \$http_x_api_key zone=b:10m rate=1000000r/s backend=local; shield_limit zone=b burst=1000 nodelay;" bare_many
scenario shield_redis_many yes /index.html "$MANY" "shield_redis redis://127.0.0.1:$REDIS_PORT timeout=100ms; shield_limit_zone \$http_x_api_key zone=b:10m rate=1000000r/s; shield_limit zone=b burst=1000 nodelay;" bare_many

# The same limits on a 3-primary Redis Cluster (no replicas, so redis-server CPU compares with
# the single Redis's): one client key (one slot, one node) and 10,000 (every node, a batch
# split per slot). "redis us/req" sums every redis-server of the run.
CLUSTER_PORTS=()
if [[ -z "${ONLY:-}" || " $ONLY " == *cluster* ]]; then
    for i in 1 2 3; do
        p="$(free_port $((18600 + i * 101)))"; CLUSTER_PORTS+=("$p"); d="$WORK/cluster-$p"; mkdir -p "$d"
        (cd "$d" && redis-server --port "$p" --bind 127.0.0.1 --cluster-enabled yes --cluster-config-file nodes.conf \
            --save "" --appendonly no --daemonize yes --pidfile "$d/redis.pid" --logfile "$d/log" >/dev/null)
    done
    trap 'kill "$(cat "$WORK/redis.pid" 2>/dev/null)" $(cat "$WORK"/cluster-*/redis.pid 2>/dev/null) 2>/dev/null || true' EXIT
    for p in "${CLUSTER_PORTS[@]}"; do
        for _ in $(seq 50); do [ "$(redis-cli -p "$p" ping 2>/dev/null)" = PONG ] && break; sleep 0.1; done
    done
    redis-cli --cluster create $(printf '127.0.0.1:%s ' "${CLUSTER_PORTS[@]}") --cluster-yes >/dev/null
    for _ in $(seq 100); do
        [ "$(redis-cli -p "${CLUSTER_PORTS[0]}" cluster info | tr -d '\r' | awk -F: '/cluster_state/ {print $2}')" = ok ] && break
        sleep 0.1
    done
    CLUSTER_URL="redis+cluster://127.0.0.1:${CLUSTER_PORTS[0]},127.0.0.1:${CLUSTER_PORTS[1]}"
    scenario shield_cluster yes /index.html "" "shield_redis $CLUSTER_URL timeout=100ms; shield_limit_zone \$binary_remote_addr zone=b:10m rate=1000000r/s; shield_limit zone=b burst=1000 nodelay;"
    scenario shield_cluster_many yes /index.html "$MANY" "shield_redis $CLUSTER_URL timeout=100ms; shield_limit_zone \$http_x_api_key zone=b:10m rate=1000000r/s; shield_limit zone=b burst=1000 nodelay;" bare_many
fi

# JWT verification per request: one bearer token (RS256 or ES256) on every request, verified by
# shield_jwt with the per-worker token cache (a keyed hash, a lookup and a compare) and without it (a
# signature check each time). Ratios are to bare_jwt: bare nginx receiving the same header.
JWT_RS="$ROOT/scripts/wrk/jwt-rs256.lua"; JWT_ES="$ROOT/scripts/wrk/jwt-es256.lua"
JWT_CONF="shield_jwt on; shield_jwt_key_file $ROOT/scripts/wrk/jwt-jwks.json; shield_jwt_require iss=https://idp.bench aud=api;"
scenario bare_jwt no /index.html "$JWT_RS" "" bare_jwt
scenario jwt_rs256 yes /index.html "$JWT_RS" "$JWT_CONF" bare_jwt
scenario jwt_rs256_nocache yes /index.html "$JWT_RS" "$JWT_CONF shield_jwt_cache off;" bare_jwt
scenario jwt_es256 yes /index.html "$JWT_ES" "$JWT_CONF" bare_jwt
scenario jwt_es256_nocache yes /index.html "$JWT_ES" "$JWT_CONF shield_jwt_cache off;" bare_jwt

# Response cache hits against nginx serving the same bytes as a static file (the issue's
# reference): the first request stores the file's response, every later one is a hit.
CACHE_SHM="shield_cache_zone zone=c:64m; shield_cache zone=c;"
CACHE_REDIS="shield_redis redis://127.0.0.1:$REDIS_PORT timeout=100ms; $CACHE_SHM"
scenario static_1k no /1k.txt "" "" static_1k
scenario cache_shm_1k yes /1k.txt "" "$CACHE_SHM" static_1k
scenario cache_redis_1k yes /1k.txt "" "$CACHE_REDIS" static_1k
scenario static_64k no /64k.txt "" "" static_64k
scenario cache_shm_64k yes /64k.txt "" "$CACHE_SHM" static_64k
scenario cache_redis_64k yes /64k.txt "" "$CACHE_REDIS" static_64k

# The peers an operator would pick instead, hits of the same files: nginx's own proxy_cache
# (an origin server in the same nginx, the cache on disk, hits read through the page cache),
# and OpenResty-style srcache + Lua + Redis (Debian: libnginx-mod-http-srcache-filter,
# libnginx-mod-http-lua, lua-nginx-redis; skipped when not installable). Both store on the
# first request; every later one is a hit.
ORIGIN_PORT="$(free_port 18680)"
PROXY_CACHE="proxy_cache_path $WORK/proxy_cache levels=1:2 keys_zone=pc:10m; server { listen 127.0.0.1:$ORIGIN_PORT; root $WORK/html; }"
PROXY_LOC="proxy_pass http://127.0.0.1:$ORIGIN_PORT; proxy_http_version 1.1; proxy_cache pc; proxy_cache_valid 200 1h;"
for size in 1k 64k; do
    scenario "proxy_cache_$size" no "/$size.txt" "" "$PROXY_CACHE" "static_$size"
    eval "S_LOC_proxy_cache_$size=\$PROXY_LOC"
done
SRCACHE_MODULE=/usr/lib/nginx/modules/ngx_http_srcache_filter_module.so
if [ ! -f "$SRCACHE_MODULE" ] || [ ! -f /usr/share/lua/5.1/nginx/redis.lua ]; then
    sudo="$(need_root)"; DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq libnginx-mod-http-srcache-filter lua-nginx-redis libnginx-mod-http-lua >/dev/null 2>&1 || true
fi
if [ -f "$SRCACHE_MODULE" ] && [ -f /usr/share/lua/5.1/nginx/redis.lua ]; then
    SRC_REDIS="local redis = require 'nginx.redis'; local r = redis:new(); r:set_timeout(100);
        if not r:connect('127.0.0.1', $REDIS_PORT) then return ngx.exit(404) end"
    SRCACHE_SRV="location = /sc_get { internal; content_by_lua_block { $SRC_REDIS
            local v = r:get(ngx.var.args); r:set_keepalive(10000, 100)
            if not v or v == ngx.null then return ngx.exit(404) end
            ngx.print(v) } }
        location = /sc_put { internal; client_body_buffer_size 128k; client_max_body_size 1m; content_by_lua_block {
            ngx.req.read_body(); local body = ngx.req.get_body_data()
            if not body then return ngx.exit(500) end
            $SRC_REDIS
            r:set(ngx.var.args, body, 'EX', 3600); r:set_keepalive(10000, 100) } }"
    for size in 1k 64k; do
        scenario "srcache_redis_$size" srcache "/$size.txt" "" "lua_package_path '/usr/share/lua/5.1/?.lua;;';" "static_$size"
        eval "S_LOC_srcache_redis_$size='set \$key sc:\$uri; srcache_fetch GET /sc_get \$key; srcache_store PUT /sc_put \$key; srcache_store_statuses 200;'"
        eval "S_SRV_srcache_redis_$size=\$SRCACHE_SRV"
    done
fi

# What operators hand-write today: OpenResty-style Lua with a pipelined INCR + PEXPIRE per
# request over a cosocket (Debian's lua module; a minimal RESP client inline, since
# lua-resty-redis is not packaged). Skipped when the module is not installable.
LUA_MODULE=/usr/lib/nginx/modules/ngx_http_lua_module.so
if [ ! -f "$LUA_MODULE" ]; then
    sudo="$(need_root)"; DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq libnginx-mod-http-lua >/dev/null 2>&1 || true
fi
lua_conf() { # KEY_EXPRESSION (Lua)
    echo "lua_package_path '/usr/share/lua/5.1/?.lua;;'; init_by_lua_block { require 'resty.core' }
    access_by_lua_block {
        local sock = ngx.socket.tcp()
        sock:settimeout(100)
        local ok = sock:connect('127.0.0.1', $REDIS_PORT)
        if not ok then return end
        local key = 'lua:' .. ($1)
        local cmd = '*2\\r\\n\$4\\r\\nINCR\\r\\n\$' .. #key .. '\\r\\n' .. key .. '\\r\\n'
                 .. '*3\\r\\n\$7\\r\\nPEXPIRE\\r\\n\$' .. #key .. '\\r\\n' .. key .. '\\r\\n\$5\\r\\n60000\\r\\n'
        sock:send(cmd)
        local count = sock:receive('*l')
        sock:receive('*l')
        sock:setkeepalive(10000, 100)
        if tonumber(string.sub(count or ':0', 2)) > 100000000000 then return ngx.exit(429) end
    }"
}
if [ -f "$LUA_MODULE" ]; then
    scenario lua_redis lua /index.html "" "$(lua_conf ngx.var.binary_remote_addr)"
    scenario lua_redis_many lua /index.html "$MANY" "$(lua_conf "ngx.var.http_x_api_key or ''")" bare_many
fi

port="$(free_port 18580)"
start_nginx() { # name -> pid
    local name="$1" dir="$WORK/$1" mod conf
    mkdir -p "$dir"
    eval "mod=\$S_MOD_$name; conf=\$S_CONF_$name"
    {
        [ "$mod" = yes ] && echo "load_module $so;"
        [ "$mod" = lua ] && echo "load_module /usr/lib/nginx/modules/ndk_http_module.so; load_module $LUA_MODULE;"
        [ "$mod" = srcache ] && echo "load_module /usr/lib/nginx/modules/ndk_http_module.so; load_module $LUA_MODULE; load_module $SRCACHE_MODULE;"
        echo "daemon off; worker_processes 1; error_log $dir/error.log warn; pid $dir/nginx.pid; $user_line"
        echo "events { worker_connections 4096; }"
        echo "http { access_log off; keepalive_requests 100000;"
        echo "  client_body_temp_path $dir/cb; proxy_temp_path $dir/px; fastcgi_temp_path $dir/fc; uwsgi_temp_path $dir/uw; scgi_temp_path $dir/sc;"
        echo "  include /etc/nginx/mime.types;"
        echo "  $conf"
        eval "loc=\${S_LOC_$name:-}; srv=\${S_SRV_$name:-}"
        echo "  server { listen 127.0.0.1:$port; root $WORK/html; location / { $loc } location /api/ { return 200 \"ok\\n\"; } $srv }"
        echo "}"
    } >"$dir/nginx.conf"
    /usr/sbin/nginx -p "$dir" -c "$dir/nginx.conf" &
    echo $! >"$dir/pid"
    for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/" && return; sleep 0.1; done
    echo "nginx for $name did not start" >&2; cat "$dir/error.log" >&2; exit 1
}
# CPU time a process has spent so far, in ns (/proc/PID/schedstat: exact, unlike the 10 ms
# ticks of /proc/PID/stat); 0 when it is gone.
cpu_ns() { awk '{print $1}' "/proc/$1/schedstat" 2>/dev/null || echo 0; }
redis_cpu_ns() { local p t=0; for p in "$@"; do t=$((t + $(cpu_ns "$p"))); done; echo "$t"; }
worker_pid() { pgrep -P "$(cat "$WORK/$1/pid")" | head -1; }
stop_nginx() { kill "$(cat "$WORK/$1/pid")" 2>/dev/null || true; wait "$(cat "$WORK/$1/pid")" 2>/dev/null || true; }

declare -A RESULTS RATIOS ROUND WCPU RCPU
for round in $(seq "$ROUNDS"); do
    for name in "${SCENARIOS[@]}"; do
        start_nginx "$name"
        eval "path=\$S_PATH_$name; lua=\$S_LUA_$name"
        args=(-t1 -c"$CONNS" -d"${SECS}s" --latency)
        [ -n "$lua" ] && args+=(-s "$lua")
        wpid="$(worker_pid "$name")"; rpids="$(cat "$WORK/redis.pid" "$WORK"/cluster-*/redis.pid 2>/dev/null || true)"
        w0="$(cpu_ns "$wpid")"; r0="$(redis_cpu_ns $rpids)"
        out="$(wrk "${args[@]}" "http://127.0.0.1:$port$path")"
        w1="$(cpu_ns "$wpid")"; r1="$(redis_cpu_ns $rpids)"
        total="$(awk '/requests in/ {print $1}' <<<"$out")"
        # CPU microseconds per request of the nginx worker and of redis-server during the run
        # (redis-server's idle cron costs it ~0.1 ms/s whatever the scenario).
        WCPU[$name]+="$(awk -v a="$w0" -v b="$w1" -v n="$total" 'BEGIN{printf "%.2f", (b-a)/1000/n}') "
        RCPU[$name]+="$(awk -v a="$r0" -v b="$r1" -v n="$total" 'BEGIN{printf "%.2f", (b-a)/1000/n}') "
        rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
        p99="$(awk '$1=="99%" {print $2}' <<<"$out")"
        non2xx="$(awk '/Non-2xx/ {print $4}' <<<"$out")"
        stop_nginx "$name"
        # An [error] or worse means the run did not measure what it claims (say, Redis was
        # unreachable and the limiter failed open): count it and show it in the table.
        errs="$(grep -c '\[\(error\|crit\|alert\|emerg\)\]' "$WORK/$name/error.log" || true)"
        ROUND[$name]="$rps"; eval "ref=\$S_REF_$name"
        RATIOS[$name]+="$(awk -v a="$rps" -v b="${ROUND[$ref]}" 'BEGIN{printf "%.3f", a/b}') "
        RESULTS[$name]+="$rps "; eval "P99_$name=\$p99; NON2XX_$name=\${non2xx:-0}; ERRS_$name=\$((\${ERRS_$name:-0} + errs))"
        log "round $round $name: $rps req/s (p99 $p99)"
    done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo
echo "nginx $(/usr/sbin/nginx -v 2>&1 | sed 's|.*/||'), $(nproc) cores, wrk -t1 -c$CONNS -d${SECS}s x $ROUNDS rounds, $(date -u +%F)"
# "x ref" divides the medians by the reference's (bare, or bare_many for the many-client
# scenarios); "per round" divides each run by the reference's run of its own round
# (interleaved, so slow drifts of a noisy machine cancel) and gives the median and the range.
# "worker us/req" and "redis us/req": CPU microseconds per request (medians over the rounds),
# which do not depend on how busy the rest of the machine is.
printf '| %-22s | %10s | %9s | %7s | %-25s | %13s | %12s | %9s | %8s | %10s |\n' scenario "req/s" ref "x ref" "per round: median (range)" "worker us/req" "redis us/req" "p99 (last)" "non-2xx" "log errors"
printf '|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|\n' "------------------------" "------------" "-----------" "---------" "---------------------------" "---------------" "--------------" "-----------" "----------" "------------"
for name in "${SCENARIOS[@]}"; do
    m="$(median <<<"${RESULTS[$name]}")"
    eval "p99=\$P99_$name; n2=\$NON2XX_$name; errs=\${ERRS_$name:-0}"
    sorted="$(tr ' ' '\n' <<<"${RATIOS[$name]}" | grep -v '^$' | sort -n)"
    per_round="$(median <<<"${RATIOS[$name]}") ($(head -1 <<<"$sorted")-$(tail -1 <<<"$sorted"))"
    eval "ref=\$S_REF_$name"; r="$(median <<<"${RESULTS[$ref]}")"
    wcpu="$(median <<<"${WCPU[$name]}")"; rcpu="$(median <<<"${RCPU[$name]}")"
    printf '| %-22s | %10.0f | %9s | %7.3f | %-25s | %13s | %12s | %9s | %8s | %10s |\n' "$name" "$m" "$ref" "$(awk -v a="$m" -v b="$r" 'BEGIN{print a/b}')" "$per_round" "$wcpu" "$rcpu" "$p99" "$n2" "$errs"
done
