#!/usr/bin/env python3
"""Replays the CRS regression tests (go-ftw YAML) through nginx running the module with that CRS.

Usage (scripts/crs-ftw.sh wraps it):
  crs-ftw.py --crs DIR --module SO [--nginx BIN] [--mode block|ftw] [--paranoia N] [--work DIR]

Two ways of scoring, both per test family (the directory of the YAML file):
- block (default): the CRS as users run it (crs-setup.conf.example, SecRuleEngine On, blocking
  paranoia level N, default 1). An attack test (one that expects rule ids) passes when nginx
  answers 403. Only tests whose rule belongs to paranoia level <= N are counted (the "PL1-
  targeted tests" of issue 14); ModSecurity + CRS's figures there are the reference.
- ftw: go-ftw's own verdict, as the CRS project runs its CI (DetectionOnly, blocking paranoia
  level 4, the 900005 settings of tests/regression/README.md, tests/regression/
  nginx-overrides.yaml applied): expect_ids all logged, no_expect_ids none, status if given.

Which rules matched comes from the access log: every request carries X-Ftw-Id, logged next to
$status, $shield_filter_status and $shield_filter_rules (the logged rule ids).

Load errors of the CRS (rules the engine cannot express) are found with `nginx -t`, printed
with file:line, and left out with remove=.

--builtin replays the same tests against the module's built-in packs instead (`shield_filter on;
shield_filter_paranoia N`, no CRS loaded): only "answered 403" means anything there (the
packs' rule ids are not the CRS's).
"""

import argparse
import base64
import collections
import glob
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse

import yaml

FAMILIES = {
    "911": "method enforcement",
    "913": "scanner detection",
    "920": "protocol enforcement",
    "921": "protocol attack",
    "922": "multipart attack",
    "930": "LFI",
    "931": "RFI",
    "932": "RCE",
    "933": "PHP",
    "934": "generic/Node",
    "941": "XSS",
    "942": "SQLi",
    "943": "session fixation",
    "944": "Java",
    "949": "blocking evaluation",
    "999": "common exceptions",
}

# go-ftw's nginx overrides (tests/regression/nginx-overrides.yaml) only apply in ftw mode.

# The test environment of tests/regression/README.md (rule 900005): limits the 920 tests rely on.
TEST_LIMITS = (
    "setvar:tx.crs_validate_utf8_encoding=1,setvar:tx.arg_name_length=100,setvar:tx.arg_length=400,"
    "setvar:tx.total_arg_length=64000,setvar:tx.max_num_args=255,setvar:tx.max_file_size=64100,"
    "setvar:tx.combined_file_sizes=65535"
)
TEST_SETUP_FTW = f'SecAction "id:900005,phase:1,nolog,pass,ctl:ruleEngine=DetectionOnly,setvar:tx.blocking_paranoia_level=4,{TEST_LIMITS}"\n'
TEST_SETUP_BLOCK = f'SecAction "id:900005,phase:1,nolog,pass,setvar:tx.blocking_paranoia_level={{pl}},{TEST_LIMITS}"\n'


def rule_paranoia(crs):
    """Rule id -> paranoia level, from each rule's `tag:'paranoia-level/N'`."""
    levels = {}
    for path in glob.glob(os.path.join(crs, "rules", "*.conf")):
        text = open(path, encoding="utf-8", errors="replace").read().replace("\\\n", " ")
        for chunk in re.split(r"\n\s*(?=SecRule|SecAction)", text):
            m = re.search(r"id:(\d+)", chunk)
            p = re.search(r"paranoia-level/(\d)", chunk)
            if m and p:
                levels[int(m.group(1))] = int(p.group(1))
    return levels


def load_tests(crs):
    tests = []
    root = os.path.join(crs, "tests", "regression", "tests")
    for path in sorted(glob.glob(os.path.join(root, "**", "*.yaml"), recursive=True)):
        doc = yaml.safe_load(open(path, encoding="utf-8"))
        if not doc:
            continue
        family = os.path.basename(os.path.dirname(path))
        rule_id = doc.get("rule_id") or int(re.sub(r"\D", "", os.path.basename(path))[:6] or 0)
        for t in doc.get("tests", []):
            tests.append({"family": family, "rule_id": int(rule_id), "test_id": t.get("test_id"), "stages": t["stages"]})
    return tests


def overrides(crs):
    path = os.path.join(crs, "tests", "regression", "nginx-overrides.yaml")
    out = {}
    if os.path.exists(path):
        for o in (yaml.safe_load(open(path)) or {}).get("test_overrides", []) or []:
            for tid in o.get("test_ids", []) or []:
                out[(int(o["rule_id"]), tid)] = o.get("output", {})
    return out


def query_unescape(data):
    """Go's url.QueryUnescape: None when a %-escape is invalid."""
    if re.search(rb"%(?![0-9A-Fa-f]{2})", data):
        return None
    return urllib.parse.unquote_to_bytes(data.replace(b"+", b" "))


def encode_form(data):
    """go-ftw's encodeDataParameters: key=value pairs not yet escaped are query-escaped."""
    if query_unescape(data) != data:
        return data
    pairs = []
    for token in data.split(b"&"):
        key, eq, value = token.partition(b"=")
        q = lambda b: urllib.parse.quote_plus(b, safe="").encode()
        pairs.append(q(key) + b"=" + q(value) if eq else q(token))
    return b"&".join(pairs)


def raw_request(inp, marker):
    """The bytes go-ftw sends for a stage (ftwhttp BuildRequest), plus an X-Ftw-Id marker."""
    if "encoded_request" in inp:
        raw = base64.b64decode(inp["encoded_request"])
        head, sep, rest = raw.partition(b"\r\n")
        return head + b"\r\nX-Ftw-Id: " + marker.encode() + b"\r\n" + rest if sep else raw
    method = str(inp.get("method", "GET"))
    uri = str(inp.get("uri", "/"))
    version = str(inp.get("version", "HTTP/1.1"))
    headers = [(str(k), str(v)) for k, v in (inp.get("headers") or {}).items()]
    has = lambda name: any(k.lower() == name.lower() for k, _ in headers)
    value = lambda name: next((v for k, v in headers if k.lower() == name.lower()), "")
    data = inp.get("data")
    body = b"" if data is None else str(data).encode("utf-8", "surrogateescape")
    auto = inp.get("autocomplete_headers", True)
    if body and auto:
        if not has("Content-Type"):
            headers.append(("Content-Type", "application/x-www-form-urlencoded"))
        if value("Content-Type") == "application/x-www-form-urlencoded":
            body = encode_form(body)
    if value("Content-Type").startswith("multipart/form-data;"):
        body = body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if auto:
        if not has("Connection"):
            headers.append(("Connection", "close"))
        if (body or re.match(r"^POST|PUT|PATCH|DELETE$", method)) and not has("Content-Length"):
            headers.append(("Content-Length", str(len(body))))
    lines = [f"{method} {uri} {version}"] + [f"{k}: {v}" for k, v in headers] + [f"X-Ftw-Id: {marker}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


def send(port, raw):
    """Status code of the response, 0 when nginx closed or timed out without one."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(raw)
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            data = b""
            while b"\r\n" not in data and len(data) < 65536:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            m = re.match(rb"HTTP/\d(?:\.\d)? (\d{3})", data)
            return int(m.group(1)) if m else 0
    except OSError:
        return 0


def nginx_conf(work, module, port, files, remove, builtin=0):
    user = "user root;" if os.geteuid() == 0 else ""
    remove_arg = f" remove={','.join(map(str, remove))}" if remove else ""
    return f"""load_module {module};
{user}
daemon on; worker_processes 1; error_log {work}/error.log notice; pid {work}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    client_body_temp_path {work}/cb; proxy_temp_path {work}/px; fastcgi_temp_path {work}/fc;
    uwsgi_temp_path {work}/uw; scgi_temp_path {work}/sc;
    log_format ftw "$http_x_ftw_id\\t$status\\t$shield_filter_status\\t$shield_filter_rules";
    access_log {work}/ftw.log ftw;
    client_max_body_size 10m;
    {f"shield_filter on; shield_filter_paranoia {builtin};" if builtin else f"shield_filter_secrules {' '.join(files)}{remove_arg};"}
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--crs", required=True)
    ap.add_argument("--module", required=True)
    ap.add_argument("--nginx", default="/usr/sbin/nginx")
    ap.add_argument("--mode", choices=["block", "ftw"], default="block")
    ap.add_argument("--paranoia", type=int, default=1)
    ap.add_argument("--port", type=int, default=18590)
    ap.add_argument("--work", default="/tmp/shield-crs-ftw")
    ap.add_argument("--family", default="", help="only test directories containing this")
    ap.add_argument("--failures", type=int, default=0, help="print up to N failing tests per family")
    ap.add_argument("--builtin", action="store_true", help="the built-in packs at --paranoia, not the CRS")
    args = ap.parse_args()

    crs = os.path.abspath(args.crs)
    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    shutil.copy(os.path.join(crs, "crs-setup.conf.example"), os.path.join(work, "crs-setup.conf"))
    setup = TEST_SETUP_FTW if args.mode == "ftw" else TEST_SETUP_BLOCK.format(pl=args.paranoia)
    with open(os.path.join(work, "test-setup.conf"), "w") as f:
        f.write(setup)
    files = [os.path.join(work, "crs-setup.conf"), os.path.join(work, "test-setup.conf"), os.path.join(crs, "rules", "*.conf")]
    conf = os.path.join(work, "nginx.conf")

    # Load errors: nginx -t lists each with file:line and rule id; they are left out by id.
    remove = []
    errors = []
    for _ in range(3):
        open(conf, "w").write(nginx_conf(work, args.module, args.port, files, remove, args.paranoia if args.builtin else 0))
        t = subprocess.run([args.nginx, "-t", "-p", work, "-c", conf], capture_output=True, text=True)
        if t.returncode == 0:
            break
        found = [l for l in t.stderr.splitlines() if "[emerg]" in l]
        ids = [int(m.group(1)) for l in found for m in [re.search(r": rule (\d+): ", l)] if m]
        if not ids:
            sys.exit("nginx -t failed for another reason:\n" + t.stderr)
        errors += found
        remove += ids
    print(f"CRS load errors ({len(remove)} rules left out):")
    for l in errors:
        print("  " + re.sub(r"^.*\[emerg\] \d+#\d+: ", "", l).replace(crs + "/", ""))
    compiled = re.search(r"compiled rule set 1: (\d+) rules", t.stderr)
    print("rules: the built-in packs" if args.builtin else f"rules loaded: {compiled.group(1) if compiled else '?'}")

    subprocess.run([args.nginx, "-p", work, "-c", conf], check=True)
    try:
        for _ in range(100):
            if send(args.port, b"GET / HTTP/1.0\r\n\r\n"):
                break
            time.sleep(0.05)
        levels = rule_paranoia(crs)
        over = overrides(crs) if args.mode == "ftw" else {}
        tests = [t for t in load_tests(crs) if args.family in t["family"]]
        sent = []
        for t in tests:
            for i, stage in enumerate(t["stages"]):
                marker = f"{t['rule_id']}-{t['test_id']}-{i}"
                status = send(args.port, raw_request(stage.get("input", {}), marker))
                sent.append((t, i, marker, status))
    finally:
        subprocess.run([args.nginx, "-p", work, "-c", conf, "-s", "stop"], capture_output=True)
    time.sleep(0.5)

    logged = {}
    for line in open(os.path.join(work, "ftw.log"), errors="replace"):
        parts = line.rstrip("\n").split("\t")
        if len(parts) == 4:
            logged[parts[0]] = {int(x) for x in parts[3].split(",") if x.isdigit()}

    # Per test (all its stages): (blocked, go-ftw verdict).
    per_test = {}
    failures = collections.defaultdict(list)
    for t, i, marker, status in sent:
        stage = t["stages"][i]
        out = dict(stage.get("output", {}))
        out.update(over.get((t["rule_id"], t["test_id"]), {}))
        log = dict(out.get("log") or {})
        expect = set(log.get("expect_ids") or ([log["expect_id"]] if "expect_id" in log else []))
        absent = set(log.get("no_expect_ids") or ([log["no_expect_id"]] if "no_expect_id" in log else []))
        ids = logged.get(marker, set())
        if args.mode == "block" and (not expect or levels.get(t["rule_id"], 1) > args.paranoia):
            continue
        conform = expect <= ids and not (absent & ids)
        want_status = out.get("status")
        if args.mode == "ftw" and want_status is not None:
            conform = conform and status in (want_status if isinstance(want_status, list) else [want_status])
        blocked = status == 403
        key = (t["family"], t["rule_id"], t["test_id"])
        b, c = per_test.get(key, (True, True))
        per_test[key] = (b and blocked, c and conform)
        if not (conform and (blocked or args.mode == "ftw")):
            failures[t["family"]].append(
                f"{t['rule_id']}-{t['test_id']}: status {status}, expected {sorted(expect)}"
                f" absent {sorted(absent)}, logged {sorted(ids)}"
            )

    results = collections.defaultdict(lambda: [0, 0, 0])
    for (family, _, _), (blocked, conform) in per_test.items():
        results[family][0] += blocked
        results[family][1] += conform
        results[family][2] += 1
    if args.mode == "block":
        print(f"\nattack tests of rules at paranoia level <= {args.paranoia}, CRS blocking at that level:")
        print(f"  {'family':<60} {'answered 403':>18} {'expected ids logged':>20}")
    else:
        print("\ngo-ftw verdicts (PL4, DetectionOnly, nginx overrides), all tests:")
        print(f"  {'family':<60} {'':>18} {'go-ftw pass':>20}")
    total = [0, 0, 0]
    inbound = [0, 0, 0]
    for family in sorted(results):
        blocked, conform, n = results[family]
        total = [total[0] + blocked, total[1] + conform, total[2] + n]
        if family.startswith("REQUEST-"):
            inbound = [inbound[0] + blocked, inbound[1] + conform, inbound[2] + n]
        name = FAMILIES.get(family.split("-")[1], "") if "-" in family else ""
        col = f"{blocked}/{n} {100.0 * blocked / n:5.1f}%" if args.mode == "block" else ""
        print(f"  {family + ' (' + name + ')' if name else family:<60} {col:>18} {conform:>5}/{n:<5} {100.0 * conform / n:5.1f}%")
        for f in failures[family][: args.failures]:
            print(f"      fail {f}")
    # Phases 3-5 (RESPONSE-*) are not evaluated by this engine: the request rows apart.
    for label, (blocked, conform, n) in [("all REQUEST-* (phases 1-2)", inbound), ("all", total)]:
        if n:
            col = f"{blocked}/{n} {100.0 * blocked / n:5.1f}%" if args.mode == "block" else ""
            print(f"  {label:<60} {col:>18} {conform:>5}/{n:<5} {100.0 * conform / n:5.1f}%")


if __name__ == "__main__":
    main()
