#!/usr/bin/env python3
"""Cold start: time from exec of the handler to its first 200 on GET / (the host's readiness probe),
against the time to exec and reap /bin/true measured in the same run.

usage: scripts/coldstart.py [path/to/handler] [runs]"""
import http.client, os, socket, statistics, subprocess, sys, tempfile, time

handler = sys.argv[1] if len(sys.argv) > 1 else "target/release/handler"
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 30

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

def once(store):
    port = free_port()
    env = dict(os.environ, FUNCTIONS_CUSTOMHANDLER_PORT=str(port), RUST_LOG="warn",
               JwtRefreshToken__Descriptor__Issuer="https://cold", JwtRefreshToken__Descriptor__Audience="cold",
               JwtRefreshToken__Descriptor__AlgorithmKey="cold-start-signing-key-cold-start-0000",
               JwtRefreshToken__Embedded__Path=store)
    t0 = time.perf_counter()
    p = subprocess.Popen([handler], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                c.request("GET", "/")
                if c.getresponse().status == 200:
                    return time.perf_counter() - t0
            except OSError:
                time.sleep(0.0005)
    finally:
        p.terminate(); p.wait()

def baseline():
    t0 = time.perf_counter()
    subprocess.run(["/bin/true"])
    return time.perf_counter() - t0

with tempfile.TemporaryDirectory() as store:
    once(store)  # creates the schema; later runs open an existing store, as a restarted instance does
    cold = [once(store) for _ in range(runs)]
base = [baseline() for _ in range(runs)]
c, b = statistics.median(cold), statistics.median(base)
print(f"handler ready (exec -> GET / 200): median {c*1000:.2f} ms, max {max(cold)*1000:.2f} ms over {runs} runs")
print(f"baseline exec /bin/true:           median {b*1000:.2f} ms")
print(f"ratio: {c/b:.1f}x a bare process start")
