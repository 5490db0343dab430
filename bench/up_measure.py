#!/usr/bin/python3
"""surge up figures: an app instance's cold start, the replacement of a
kill -9'ed instance, and rolling reloads under load.

    bench/up_measure.py SURGE_BIN DATA_DIR [STARTS] [KILLS] [RELOADS]

DATA_DIR must hold a seeded store (surge seed). Prints one line per figure;
scripts/bench-up.sh puts them in docs/benchmarks.md. Every process it starts
is stopped by PID. Standard library only.
"""
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def get(url, timeout=2):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


def cold_starts(surge, data, n):
    """surge app start -> GET /readyz 200, polled every 2 ms."""
    out = []
    for _ in range(n):
        port = free_port()
        t0 = time.monotonic()
        p = subprocess.Popen([surge, "app", "--listen", "127.0.0.1:%d" % port, "--data-dir", data],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = t0 + 10
            while time.monotonic() < deadline:
                try:
                    if get("http://127.0.0.1:%d/readyz" % port, 1)[0] == 200:
                        break
                except OSError:
                    time.sleep(0.002)
            else:
                raise SystemExit("surge app not ready within 10 s")
            out.append((time.monotonic() - t0) * 1000)
        finally:
            p.terminate()
            p.wait(10)
    return out


class Up:
    def __init__(self, surge, data, log):
        self.port, self.admin = free_port(), free_port()
        self.proc = subprocess.Popen(
            [surge, "up", "--listen", "127.0.0.1:%d" % self.port,
             "--admin", "127.0.0.1:%d" % self.admin, "--data-dir", data,
             "--worker.min", "0", "--scale-interval", "200ms"],
            stdout=subprocess.DEVNULL, stderr=open(log, "w"), start_new_session=True)

    def status(self):
        return json.loads(get("http://127.0.0.1:%d/status" % self.admin)[1])

    def ready(self):
        s = self.status()
        return [i for i in s["instances"] if i["state"] == "ready"], s

    def wait(self, pred, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if pred():
                    return
            except OSError:
                pass
            time.sleep(0.005)
        raise SystemExit("surge up: condition not reached within %d s" % timeout)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


def main():
    surge, data = sys.argv[1], sys.argv[2]
    starts = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    kills = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    reloads = int(sys.argv[5]) if len(sys.argv) > 5 else 20
    cs = cold_starts(surge, data, starts)
    print("cold_start_ms median=%.0f max=%.0f n=%d" % (statistics.median(cs), max(cs), len(cs)))

    up = Up(surge, data, "/tmp/surge-bench-up-%d.log" % os.getpid())
    try:
        up.wait(lambda: len(up.ready()[0]) == 2 and up.status()["gateway"]["state"] == "ready")
        times = []
        for _ in range(kills):
            victim = up.ready()[0][0]["pid"]
            t0 = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            up.wait(lambda: len(up.ready()[0]) == 2 and
                    victim not in [i["pid"] for i in up.ready()[0]])
            times.append((time.monotonic() - t0) * 1000)
            time.sleep(0.5)
        print("kill9_replaced_ms median=%.0f max=%.0f n=%d"
              % (statistics.median(times), max(times), len(times)))

        ok, bad, stop, lock = [0], [], threading.Event(), threading.Lock()

        def load(k):
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    code, _ = get("http://127.0.0.1:%d/api/products/%d" % (up.port, 1 + (i + k) % 100),
                                  10)
                    good = code == 200
                except OSError as e:
                    good, code = False, repr(e)[:80]
                with lock:
                    if good:
                        ok[0] += 1
                    else:
                        bad.append(code)
        threads = [threading.Thread(target=load, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        t0 = time.monotonic()
        for _ in range(reloads):
            before = {i["pid"] for i in up.status()["instances"]}
            up.proc.send_signal(signal.SIGHUP)
            time.sleep(0.3)

            def rolled():
                now, s = up.ready()
                pids = {i["pid"] for i in now}
                return (not s["rolling"] and len(s["instances"]) == 2 and len(pids) == 2
                        and not (pids & before))
            up.wait(rolled)
        took = time.monotonic() - t0
        stop.set()
        for t in threads:
            t.join(30)
        print("reloads n=%d seconds=%.1f requests_ok=%d requests_failed=%d"
              % (reloads, took, ok[0], len(bad)))
    finally:
        rc = up.stop()
    print("up_exit=%d" % rc)


if __name__ == "__main__":
    main()
