#!/usr/bin/python3
"""The Black Friday scenario against `surge up`: does the pool follow the spike?

    bench/spike_up.py SURGE_BIN DATA_DIR SCENARIO OUT_DIR [UP_ARGS...]

Starts `surge up` (gateway + autoscaled app pool + worker) on DATA_DIR (a
seeded store) with UP_ARGS, waits for 2 ready instances, runs
`surge bench --scenario SCENARIO --watch http://ADMIN/status` against its
gateway (JSON and HTML reports in OUT_DIR), then keeps polling /status
until the pool is back at 2 instances (or 3 stabilization windows passed).
Prints key=value lines (scripts/bench-spike-up.sh turns them into the
docs/benchmarks.md section) and exits 0 when the three claims hold:
  - the pool is at 2 when the spike starts (the first stage whose rate
    rises above the first stage's) and grows within 30 s of that start,
  - no request failed (no transport error, no 5xx),
  - the pool is back at 2 after the load.
surge bench runs pinned to CPU 0 and surge up (with its children) to CPU 1
when the machine has 2 cores. Every process is stopped by PID. Standard
library only.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def status(admin):
    with urllib.request.urlopen("http://127.0.0.1:%d/status" % admin, timeout=2) as r:
        return json.loads(r.read())


def pinned(cpu, argv):
    if (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", str(cpu)] + argv
    return argv


def main():
    if len(sys.argv) < 5:
        print(__doc__, file=sys.stderr)
        return 2
    surge, data, scenario, out = sys.argv[1:5]
    up_args = sys.argv[5:]
    port, admin = free_port(), free_port()
    log = open(os.path.join(out, "up.log"), "wb")
    up = subprocess.Popen(pinned(1, [surge, "up", "--listen", "127.0.0.1:%d" % port,
                                     "--admin", "127.0.0.1:%d" % admin, "--data-dir", data]
                                 + up_args),
                          stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        return run(surge, scenario, out, up, port, admin)
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGTERM)
            try:
                up.wait(60)
            except subprocess.TimeoutExpired:
                up.kill()
                up.wait(10)
        print("up_exit=%s" % up.returncode)
        log.close()


def run(surge, scenario, out, up, port, admin):
    deadline = time.monotonic() + 60
    while True:
        if up.poll() is not None:
            print("error=surge up exited %s" % up.returncode)
            return 1
        try:
            st = status(admin)
            if len([i for i in st["instances"] if i["state"] == "ready"]) >= 2 and \
                    st["gateway"]["state"] == "ready":
                break
        except (OSError, ValueError, KeyError):
            pass
        if time.monotonic() > deadline:
            print("error=surge up not ready within 60 s")
            return 1
        time.sleep(0.2)
    time.sleep(1)
    rj, rh = os.path.join(out, "run.json"), os.path.join(out, "run.html")
    with open(os.path.join(out, "bench.out"), "wb") as bo:
        b = subprocess.run(pinned(0, [surge, "bench", "--scenario", scenario, "--watch",
                                      "http://127.0.0.1:%d/status" % admin, "--json", rj,
                                      "--html", rh, "http://127.0.0.1:%d" % port]),
                           stdout=bo, stderr=subprocess.STDOUT)
    t_end = time.monotonic()
    print("bench_exit=%d" % b.returncode)
    rep = json.load(open(rj))
    w = rep["watch"]
    stages = rep["stages"]
    base_rate = stages[0]["rate_to"]
    spike = next((s for s in stages if s["rate_to"] > base_rate), stages[0])
    peak = max(stages, key=lambda s: (s["rate_to"] + s["rate_from"], s["duration_s"]))
    t_spike = spike["start_s"]
    inst = w["instances"]
    desired = w["desired"]
    grew_at = next((t for t, d in enumerate(desired) if d is not None and d > 2 and t >= t_spike),
                   None)
    before = [d for d in desired[:int(t_spike)] if d is not None]
    at_spike = next((inst[t] for t in range(int(t_spike) - 1, -1, -1) if inst[t] is not None),
                    None)
    print("spike_start_s=%g (stage %s; peak stage %s at %g s, %g req/s)"
          % (t_spike, spike["name"], peak["name"], peak["start_s"], peak["rate_to"]))
    print("desired_before_spike_max=%s" % (max(before) if before else "none"))
    print("instances_at_spike_start=%s" % at_spike)
    print("grew_after_s=%s" % ("%g" % (grew_at - t_spike) if grew_at is not None else "never"))
    print("instances_max=%s" % max([i for i in inst if i is not None] or [0]))
    print("instances_series=%s" % ",".join("-" if i is None else str(i) for i in inst))
    print("desired_series=%s" % ",".join("-" if i is None else str(i) for i in desired))
    status_codes = rep.get("status", {})
    fivexx = sum(int(v) for k, v in status_codes.items() if k.startswith("5"))
    fourxx = sum(int(v) for k, v in status_codes.items() if k.startswith("4"))
    errs = rep["errors_by_kind"]
    transport = sum(v for k, v in errs.items() if k != "status") + rep.get("unfinished", 0)
    print("requests=%d" % rep["requests"])
    print("failed=%d (transport %d, 5xx %d)" % (transport + fivexx, transport, fivexx))
    print("status_4xx=%d" % fourxx)
    print("p50_ms=%.2f p99_ms=%.2f" % (rep["latency_ms"]["p50"], rep["latency_ms"]["p99"]))
    worst = max(rep["series"], key=lambda s: s["p99_ms"])
    print("worst_second_p99_ms=%.1f (t=%d s)" % (worst["p99_ms"], worst["t"]))
    print("watch_polls=%d watch_failures=%d" % (w["polls"], w["failures"]))
    # After the load: how long until the pool is back at 2.
    window = 300.0
    args = sys.argv[5:]
    for k, a in enumerate(args):
        if a == "--app.scale-down-window" and k + 1 < len(args):
            v = args[k + 1]
            window = float(v[:-2]) / 1000 if v.endswith("ms") else float(v.rstrip("s"))
    shrunk = None
    last_load = len(inst)  # seconds of the run; the recovery stage is low load
    deadline = time.monotonic() + 3 * window + 30
    while time.monotonic() < deadline:
        try:
            st = status(admin)
            if len(st["instances"]) == 2 and st["desired"] == 2:
                shrunk = time.monotonic() - t_end
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.5)
    # Back at 2 already during the run's quiet tail counts too.
    tail_back = next((t for t in range(int(peak["start_s"] + peak["duration_s"]), last_load)
                      if inst[t] == 2 and desired[t] == 2), None)
    print("scale_down_window_s=%g" % window)
    spike_end = peak["start_s"] + peak["duration_s"]
    if tail_back is not None:
        print("back_to_2_after_spike_end_s=%g" % (tail_back - spike_end))
    elif shrunk is not None:
        print("back_to_2_after_spike_end_s=%g" % (len(inst) - spike_end + shrunk))
    else:
        print("back_to_2_after_spike_end_s=never")
    ok = grew_at is not None and grew_at - t_spike <= 30 and transport + fivexx == 0 and \
        (tail_back is not None or shrunk is not None) and at_spike == 2
    print("claims=%s" % ("hold" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
