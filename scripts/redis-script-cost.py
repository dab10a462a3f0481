#!/usr/bin/env python3
"""Redis CPU per key of the limiter's batch script, measured without nginx or the network's
noise: a private redis-server runs LIMIT_SCRIPT (read from src/limit/script.rs) on batches of
50 distinct keys (10,000 keys in all, as bench.sh's many-clients scenario), and the CPU time
redis-server spent (/proc/PID/schedstat) is divided by the keys decided. For scale it also
measures a floor (one MGET and a SET PX per key from Lua, no arithmetic) and what the Lua+Redis
peer sends (pipelined INCR + PEXPIRE per key).

    scripts/redis-script-cost.py [rounds=3]
"""
import os, re, socket, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = open(os.path.join(ROOT, "src/limit/script.rs")).read()
LIMIT = re.search(r'pub const LIMIT_SCRIPT: &str = r#"(.*?)"#;', SOURCE, re.S).group(1)
FLOOR = """local v = redis.call('MGET', unpack(KEYS))
for i = 1, #KEYS do redis.call('SET', KEYS[i], '123456789012', 'PX', 60000) end
local out = {1}
for i = 1, #KEYS do out[#out + 1] = 0; out[#out + 1] = 1 end
return out"""
KEYS_PER_BATCH, BATCHES = 50, 400
# One GCRA limit: 10000r/s (interval 100 us), burst 1000, cost 1, quota 1001.
PARAMS = ["0", "100", "1000000", "1000", "1", "1001"]


def enc(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    tmp = tempfile.mkdtemp()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                s = socket.create_connection(("127.0.0.1", port))
                break
            except OSError:
                time.sleep(0.05)
        f = s.makefile("rb")

        def reply():
            line = f.readline()
            if line[:1] == b"*":
                return [reply() for _ in range(int(line[1:]))]
            if line[:1] == b"$":
                n = int(line[1:])
                return None if n < 0 else f.read(n + 2)[:-2]
            if line[:1] == b"-":
                raise RuntimeError(line.decode())
            return line[1:].strip()

        def cmd(args):
            s.sendall(enc(args))
            return reply()

        def cpu_ns():
            return int(open(f"/proc/{server.pid}/schedstat").read().split()[0])

        def run_script(src, limit_layout):
            sha = cmd(["SCRIPT", "LOAD", src]).decode()
            cmd(["FLUSHALL"])
            start = cpu_ns()
            for r in range(BATCHES):
                base = (r % 200) * KEYS_PER_BATCH
                keys = [f"shield:{{k{base + i}}}:z" for i in range(KEYS_PER_BATCH)]
                argv = ["0", "0", "1"] + PARAMS + [str(KEYS_PER_BATCH)] + ["1", "1", "0", "1"] * KEYS_PER_BATCH
                if not limit_layout:
                    argv = []
                cmd(["EVALSHA", sha, len(keys)] + keys + argv)
            return (cpu_ns() - start) / 1000 / (BATCHES * KEYS_PER_BATCH)

        def run_peer():
            start = cpu_ns()
            for r in range(BATCHES):
                base = (r % 200) * KEYS_PER_BATCH
                out = b"".join(enc(["INCR", f"lua:k{base + i}"]) + enc(["PEXPIRE", f"lua:k{base + i}", "60000"])
                               for i in range(KEYS_PER_BATCH))
                s.sendall(out)
                for _ in range(2 * KEYS_PER_BATCH):
                    reply()
            return (cpu_ns() - start) / 1000 / (BATCHES * KEYS_PER_BATCH)

        print("redis-server CPU microseconds per key (batches of %d keys, %d keys in all)" % (KEYS_PER_BATCH, 10000))
        print("| round | LIMIT_SCRIPT | floor: MGET + SET PX | peer: INCR + PEXPIRE |")
        print("|---|---|---|---|")
        for i in range(rounds):
            print(f"| {i + 1} | {run_script(LIMIT, True):.2f} | {run_script(FLOOR, False):.2f} | {run_peer():.2f} |")
    finally:
        server.kill()


main()
