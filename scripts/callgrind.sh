#!/usr/bin/env bash
# Instructions per request under callgrind: stable on a noisy machine where wall-clock ratios
# move 10-30% between rounds. One nginx process (master off) serves N keep-alive GETs of a
# static file from one curl; only those requests are instrumented (the warm-up is not).
#
#   scripts/callgrind.sh NAME yes|no "HTTP_SNIPPET" N [curl args...]
#   e.g. scripts/callgrind.sh bare no "" 500 -H "Authorization: Bearer ..."
#        scripts/callgrind.sh jwt yes "shield_jwt on; shield_jwt_key_file ...;" 500 -H "..."
# yes|no: load the module built by scripts/lib.sh (Debian flavour) or not. URL_PATH (default
# /index.html, a static file) picks another path: /api/... answers with `return 200`, as in
# scripts/bench.sh; e.g. the benign POST:
#   URL_PATH="/api/items?q=x" scripts/callgrind.sh filter yes "shield_filter on;" 300 \
#       -H "Content-Type: application/json" -d '{"name":"Jane"}'

source "$(dirname "$0")/lib.sh"
cd "$ROOT"
name=$1; mod=$2; snip=$3; n=$4; shift 4
[ "$mod" = yes ] && so="$(build_module debian)"
d="$BUILD/callgrind/$name"; rm -rf "$d"; mkdir -p "$d/html"; echo hello >"$d/html/index.html"
# The response cache's bodies, as in scripts/bench.sh: /1k.txt and /64k.txt, dated in the past
# (the Last-Modified heuristic makes them storable).
head -c 1024 /dev/zero | tr '\0' a >"$d/html/1k.txt"; head -c 65536 /dev/zero | tr '\0' b >"$d/html/64k.txt"
touch -d 2020-01-01 "$d/html/1k.txt" "$d/html/64k.txt"
port=$(for p in $(seq 19400 19500); do (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; break; }; done)
{ [ "$mod" = yes ] && echo "load_module $so;"
  echo "daemon off; master_process off; worker_processes 1; error_log $d/error.log warn; pid $d/nginx.pid;"
  [ "$(id -u)" = 0 ] && echo "user root;"
  echo "events { worker_connections 64; } http { access_log off; $snip"
  for t in client_body proxy fastcgi uwsgi scgi; do echo "${t}_temp_path $d/$t;"; done
  echo "server { listen 127.0.0.1:$port; root $d/html; location / { } location /api/ { return 200 \"ok\\n\"; } } }"; } >"$d/nginx.conf"
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$d/cg.out" \
    /usr/sbin/nginx -p "$d" -c "$d/nginx.conf" 2>"$d/valgrind.log" &
vg=$!
trap 'kill -9 $vg 2>/dev/null || true' EXIT
for _ in $(seq 150); do curl -s -o /dev/null "http://127.0.0.1:$port${URL_PATH:-/index.html}" "$@" && break; sleep 0.2; done
curl -s -o /dev/null "http://127.0.0.1:$port${URL_PATH:-/index.html}" "$@"   # warm-up (caches, token cache)
callgrind_control -i on $vg >/dev/null
urls=(); for _ in $(seq "$n"); do urls+=("http://127.0.0.1:$port${URL_PATH:-/index.html}"); done
curl -s "$@" "${urls[@]}" >/dev/null
callgrind_control -i off $vg >/dev/null
callgrind_control -d $vg >/dev/null
out="$(ls "$d"/cg.out* | tail -1)"
ir="$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ && !n++ {gsub(",", "", $1); print $1}')"
echo "$name: $((ir / n)) instructions per request ($n requests; profile: callgrind_annotate $out)"
