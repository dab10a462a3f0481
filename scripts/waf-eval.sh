#!/usr/bin/env bash
# End-to-end WAF evaluation: replays every payload list in tests/data/payloads (and the project's
# benign corpus) through a real nginx with the module at the default paranoia level, one
# request per line as the query argument q (URL-encoded by curl), and reports per family the
# share answered 403, plus the false-positive rate on the benign lists.
#
#   scripts/waf-eval.sh [payload-dir]
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
install_deps
PAYLOADS="${1:-$ROOT/tests/data/payloads}"
so="$(build_module debian)"
WORK="$BUILD/waf-eval"; rm -rf "$WORK"; mkdir -p "$WORK/html"
echo ok >"$WORK/html/index.html"
user_line=""; [ "$(id -u)" = 0 ] && user_line="user root;"
PORT=18490
cat >"$WORK/nginx.conf" <<CONF
load_module $so;
daemon off; worker_processes 2; error_log $WORK/error.log warn; pid $WORK/nginx.pid; $user_line
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $WORK/cb; proxy_temp_path $WORK/px; fastcgi_temp_path $WORK/fc; uwsgi_temp_path $WORK/uw; scgi_temp_path $WORK/sc;
    shield_filter on;
    server { listen 127.0.0.1:$PORT; root $WORK/html; location / { } }
}
CONF
/usr/sbin/nginx -p "$WORK" -c "$WORK/nginx.conf" &
NGINX_PID=$!
trap 'kill $NGINX_PID 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.1; done

# status_of LINE: the HTTP status for ?q=LINE
status_of() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 -G --data-urlencode "q=$1" "http://127.0.0.1:$PORT/index.html"; }

declare -A TOTAL BLOCKED
FILES=("$PAYLOADS"/*.txt "$ROOT/scripts/waf-eval-corpus/benign.txt")
for f in "${FILES[@]}"; do
    name="$(basename "$f" .txt)"; family="${name%%--*}"
    [ "$f" = "$ROOT/scripts/waf-eval-corpus/benign.txt" ] && family="benign (project corpus)"
    [ "$name" = "benign--libinjection_false_positives" ] && family="benign (libinjection)"
    while IFS= read -r line || [ -n "$line" ]; do
        line="${line%$'\r'}"; [ -z "$line" ] && continue
        s="$(status_of "$line")"
        TOTAL[$family]=$(( ${TOTAL[$family]:-0} + 1 ))
        # 403 = blocked by a rule, 400/414 = refused as malformed: both stop the request.
        case "$s" in 403|400|414) BLOCKED[$family]=$(( ${BLOCKED[$family]:-0} + 1 )) ;; esac
    done <"$f"
done

echo
echo "WAF evaluation, paranoia 1, threshold 5, nginx $(/usr/sbin/nginx -v 2>&1 | sed 's|.*/||'), $(date -u +%F)"
printf '| %-26s | %8s | %7s |\n' "list" "blocked" "rate"
printf '|%s|%s|%s|\n' "----------------------------" "----------" "---------"
for family in $(printf '%s\n' "${!TOTAL[@]}" | sort | tr ' ' '~'); do
    family="${family//\~/ }"
    t=${TOTAL[$family]}; b=${BLOCKED[$family]:-0}
    printf '| %-26s | %4d/%-4d | %6.2f%% |\n' "$family" "$b" "$t" "$(awk -v b="$b" -v t="$t" 'BEGIN{print 100*b/t}')"
done
grep -E '\[(alert|crit|emerg)\]' "$WORK/error.log" && { echo "error.log has alerts" >&2; exit 1; } || true
