#!/usr/bin/python3
"""The abuse benchmark's driver (scripts/bench-abuse.sh runs it; standard library only).

    abuse_driver.py run --bin SURGE --label NAME --out FILE.json [--flood-conns N]
                        [--flood-seconds S] [--slow-clients N] [--slow-seconds S]
    abuse_driver.py flood --port P --conns N --seconds S --mode taken|new --sources K
    abuse_driver.py slow --port P --clients N --seconds S
    abuse_driver.py report BEFORE.json AFTER.json     (markdown on stdout)

`run` starts `SURGE app` (defaults: the real argon2id cost, every limit at its
default) on a fresh data directory for each scenario and measures:

  signup flood   N keep-alive connections POST /api/users for S seconds (mode
                 `taken`: one existing email, the issue's flood; mode `new`:
                 a fresh email each time, from K loopback source addresses
                 127.0.0.2.. so per-address limits do not stop it), in a child
                 process; meanwhile this process logs in one existing user
                 every 0.25 s on a fresh connection (30 s timeout each) and
                 records each login's latency and status.
  slow bodies    N clients each send a head announcing a 60,000-byte body and
                 then one byte per second (asyncio, in a child process); this
                 process samples the app's open connections
                 (surge_app_connections) every second and probes GET /healthz.

Every process this script starts is stopped by PID."""
import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

READY_RE = re.compile(r"listening on ([0-9.]+):(\d+)")


# ---- a tiny HTTP/1.1 client ------------------------------------------------------------
def request_once(port, method, path, body=None, headers=(), timeout=30.0, source=None):
    """One request on a fresh connection: (status or 'error', seconds)."""
    t0 = time.monotonic()
    try:
        s = socket.socket()
        s.settimeout(timeout)
        if source:
            s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        head = "%s %s HTTP/1.1\r\nHost: b\r\nConnection: close\r\n" % (method, path)
        for k, v in headers:
            head += "%s: %s\r\n" % (k, v)
        if body is not None:
            head += "Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        s.sendall(head.encode() + b"\r\n" + (body or b""))
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
        return (int(m.group(1)) if m else "error"), time.monotonic() - t0
    except OSError:
        return "timeout" if time.monotonic() - t0 >= timeout - 0.01 else "error", \
            time.monotonic() - t0


def metric(port, name):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            c = s.recv(65536)
            if not c:
                break
            data += c
        s.close()
    except OSError:
        return None
    for line in data.decode(errors="replace").splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


# ---- the flood (child process) ---------------------------------------------------------
async def flood_worker(i, port, mode, source, deadline, counts):
    reader = writer = None
    k = 0
    while time.monotonic() < deadline:
        k += 1
        email = "taken@example.com" if mode == "taken" else "f%d-%d-%d@example.com" % (
            os.getpid(), i, k)
        body = json.dumps({"email": email, "password": "correct horse",
                           "name": "Flood"}).encode()
        req = (b"POST /api/users HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body)) + body
        try:
            if writer is None:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(
                    "127.0.0.1", port, local_addr=(source, 0) if source else None), 10)
            writer.write(req)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"),
                                          max(0.1, deadline - time.monotonic() + 5))
            status = int(head[9:12])
            m = re.search(rb"(?i)content-length: *(\d+)", head)
            if m:
                await reader.readexactly(int(m.group(1)))
            counts[status] = counts.get(status, 0) + 1
            if re.search(rb"(?i)connection: *close", head):
                writer.close()
                writer = None
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError,
                asyncio.LimitOverrunError):
            counts["error"] = counts.get("error", 0) + 1
            if writer is not None:
                writer.close()
            writer = None
            await asyncio.sleep(0.05)
    if writer is not None:
        writer.close()


async def flood_main(a):
    counts = {}
    deadline = time.monotonic() + a.seconds
    srcs = ["127.0.0.%d" % (2 + i % a.sources) for i in range(a.conns)] if a.sources else \
        [None] * a.conns
    await asyncio.gather(*(flood_worker(i, a.port, a.mode, srcs[i], deadline, counts)
                           for i in range(a.conns)))
    print(json.dumps({str(k): v for k, v in counts.items()}))


# ---- slow bodies (child process) -------------------------------------------------------
async def slow_client(port, deadline, out):
    t0 = time.monotonic()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 30)
    except (OSError, asyncio.TimeoutError):
        out["connect_failed"] = out.get("connect_failed", 0) + 1
        return
    writer.write(b"POST /api/users HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 60000\r\n\r\n")
    got = b""
    while time.monotonic() < deadline:
        try:
            writer.write(b"x")
            data = await asyncio.wait_for(reader.read(4096), 1.0)
            if not data:
                break
            got += data
        except asyncio.TimeoutError:
            continue
        except OSError:
            break
    held = time.monotonic() - t0
    key = "answered_408" if got.startswith(b"HTTP/1.1 408") else (
        "closed_silently" if time.monotonic() < deadline else "still_open_at_end")
    out[key] = out.get(key, 0) + 1
    out.setdefault("held_s", []).append(held)
    writer.close()


async def slow_main(a):
    out = {}
    deadline = time.monotonic() + a.seconds
    tasks = []
    for _ in range(a.clients):
        tasks.append(asyncio.ensure_future(slow_client(a.port, deadline, out)))
        await asyncio.sleep(0.001)      # ~1,000 new connections a second
    await asyncio.gather(*tasks)
    held = sorted(out.pop("held_s", [0]))
    out["held_median_s"] = round(statistics.median(held), 1)
    out["held_max_s"] = round(held[-1], 1)
    print(json.dumps(out))


# ---- orchestration ---------------------------------------------------------------------
def start_app(binary, data_dir, log_path):
    argv = [binary, "app", "--listen", "127.0.0.1:0", "--data-dir", data_dir]
    log = open(log_path, "wb")
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL)
    line = p.stdout.readline().decode()
    m = READY_RE.search(line)
    if not m:
        p.kill()
        p.wait()
        raise SystemExit("surge app did not start: %r (see %s)" % (line, log_path))
    return p, int(m.group(2))


def stop(p):
    p.terminate()
    try:
        p.wait(15)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def pct(xs, q):
    xs = sorted(xs)
    if not xs:
        return None
    i = min(len(xs) - 1, max(0, int(round(q / 100.0 * len(xs) + 0.5)) - 1))
    return xs[i]


def signup_flood(a, mode, sources, work):
    d = tempfile.mkdtemp(prefix="data.", dir=work)
    p, port = start_app(a.bin, d, os.path.join(work, "app-%s-%s.log" % (a.label, mode)))
    try:
        for email in ("user@example.com", "taken@example.com"):
            body = json.dumps({"email": email, "password": "correct horse", "name": "U"}).encode()
            st, _ = request_once(port, "POST", "/api/users", body)
            assert st == 201, (email, st)
        login = json.dumps({"email": "user@example.com", "password": "correct horse"}).encode()
        quiet = [request_once(port, "POST", "/api/sessions", login)[1] for _ in range(5)]
        child = subprocess.Popen([sys.executable, __file__, "flood", "--port", str(port),
                                  "--conns", str(a.flood_conns), "--seconds",
                                  str(a.flood_seconds), "--mode", mode,
                                  "--sources", str(sources)],
                                 stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        time.sleep(1.0)
        lat, statuses = [], {}
        t_end = time.monotonic() + a.flood_seconds - 1.5
        while time.monotonic() < t_end:
            st, s = request_once(port, "POST", "/api/sessions", login)
            lat.append(s)
            statuses[str(st)] = statuses.get(str(st), 0) + 1
            time.sleep(0.25)
        out, _ = child.communicate(timeout=a.flood_seconds + 120)
        flood = json.loads(out.decode().strip().splitlines()[-1])
        rss = None
        try:
            with open("/proc/%d/status" % p.pid) as f:
                rss = next(int(ln.split()[1]) // 1024 for ln in f if ln.startswith("VmHWM"))
        except (OSError, StopIteration):
            pass
        return {"mode": mode, "flood_conns": a.flood_conns, "flood_seconds": a.flood_seconds,
                "sources": sources, "flood_statuses": flood, "logins": len(lat),
                "login_statuses": statuses, "login_quiet_ms": round(statistics.median(quiet) * 1000, 1),
                "login_p50_ms": round(pct(lat, 50) * 1000, 1),
                "login_p99_ms": round(pct(lat, 99) * 1000, 1),
                "login_max_ms": round(max(lat) * 1000, 1), "app_peak_rss_mb": rss}
    finally:
        stop(p)


def slow_bodies(a, work):
    d = tempfile.mkdtemp(prefix="data.", dir=work)
    p, port = start_app(a.bin, d, os.path.join(work, "app-%s-slow.log" % a.label))
    try:
        child = subprocess.Popen([sys.executable, __file__, "slow", "--port", str(port),
                                  "--clients", str(a.slow_clients), "--seconds",
                                  str(a.slow_seconds)],
                                 stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        samples, probes = [], []
        t0 = time.monotonic()
        while time.monotonic() - t0 < a.slow_seconds:
            samples.append((round(time.monotonic() - t0, 1), metric(port, "surge_app_connections")))
            st, s = request_once(port, "GET", "/healthz", timeout=10)
            probes.append((st, s))
            time.sleep(max(0.0, 1.0 - s))
        out, _ = child.communicate(timeout=120)
        clients = json.loads(out.decode().strip().splitlines()[-1])
        conns = [c for _, c in samples if c is not None]

        def at(sec):
            v = [c for t, c in samples if t >= sec and c is not None]
            return v[0] if v else None
        log_lines = 0
        try:
            with open(os.path.join(work, "app-%s-slow.log" % a.label), errors="replace") as f:
                log_lines = sum(1 for _ in f)
        except OSError:
            pass
        return {"clients": a.slow_clients, "seconds": a.slow_seconds,
                "conns_max": max(conns) if conns else None,
                "conns_at": {str(s): at(s) for s in (5, 10, 20, 30) if s < a.slow_seconds},
                "conns_end": conns[-1] if conns else None, "client_outcomes": clients,
                "probe_statuses": {str(k): sum(1 for st, _ in probes if st == k)
                                   for k in {st for st, _ in probes}},
                "probe_max_ms": round(max(s for _, s in probes) * 1000, 1) if probes else None,
                "app_log_lines": log_lines}
    finally:
        stop(p)


def run_main(a):
    work = tempfile.mkdtemp(prefix="surge-bench-abuse.")
    try:
        res = {"label": a.label, "bin": a.bin,
               "version": subprocess.run([a.bin, "version"], capture_output=True,
                                         text=True).stdout.strip()}
        res["flood_taken"] = signup_flood(a, "taken", 0, work)
        res["flood_new"] = signup_flood(a, "new", 100, work)
        res["slow"] = slow_bodies(a, work)
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)
        if a.keep:
            shutil.copytree(work, os.path.join(a.keep, a.label), dirs_exist_ok=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def fmt_counts(d):
    return ", ".join("%s: %s" % (k, "{:,}".format(v)) for k, v in
                     sorted(d.items(), key=lambda kv: str(kv[0])))


def report_main(a):
    runs = [json.load(open(p)) for p in (a.before, a.after)]
    print("| scenario | build | login quiet ms | login p50 ms | login p99 ms | login max ms "
          "| logins (status: n) | flood answers (status: n) | app peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for key, name in (("flood_taken", "signup flood, one taken email"),
                      ("flood_new", "signup flood, fresh emails from 100 addresses")):
        for r in runs:
            f = r[key]
            print("| %s (%d conns, %d s) | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                name, f["flood_conns"], f["flood_seconds"], r["label"],
                "{:,}".format(f["login_quiet_ms"]),
                "{:,}".format(f["login_p50_ms"]), "{:,}".format(f["login_p99_ms"]),
                "{:,}".format(f["login_max_ms"]), fmt_counts(f["login_statuses"]),
                fmt_counts(f["flood_statuses"]), f["app_peak_rss_mb"]))
    print()
    print("| slow bodies | build | app connections: max | at 5 s | at 10 s | at 20 s | at end "
          "| clients (outcome: n) | /healthz probes | app log lines |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        s = r["slow"]
        c = s["client_outcomes"]
        held = "held median %s s, max %s s" % (c.get("held_median_s"), c.get("held_max_s"))
        outc = fmt_counts({k: v for k, v in c.items() if not k.startswith("held")})
        print("| %s clients, 1 byte/s, %d s | %s | %s | %s | %s | %s | %s | %s; %s | %s (max %s ms) "
              "| %s |" % ("{:,}".format(s["clients"]), s["seconds"], r["label"], s["conns_max"],
                          s["conns_at"].get("5"), s["conns_at"].get("10"),
                          s["conns_at"].get("20"), s["conns_end"], outc, held,
                          fmt_counts(s["probe_statuses"]), s["probe_max_ms"],
                          s["app_log_lines"]))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--bin", required=True)
    r.add_argument("--label", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--keep")
    r.add_argument("--flood-conns", type=int, default=600)
    r.add_argument("--flood-seconds", type=int, default=15)
    r.add_argument("--slow-clients", type=int, default=3000)
    r.add_argument("--slow-seconds", type=int, default=30)
    f = sub.add_parser("flood")
    f.add_argument("--port", type=int, required=True)
    f.add_argument("--conns", type=int, required=True)
    f.add_argument("--seconds", type=float, required=True)
    f.add_argument("--mode", choices=("taken", "new"), required=True)
    f.add_argument("--sources", type=int, default=0)
    s = sub.add_parser("slow")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--clients", type=int, required=True)
    s.add_argument("--seconds", type=float, required=True)
    rep = sub.add_parser("report")
    rep.add_argument("before")
    rep.add_argument("after")
    a = ap.parse_args()
    if a.cmd == "run":
        run_main(a)
    elif a.cmd == "flood":
        asyncio.run(flood_main(a))
    elif a.cmd == "slow":
        asyncio.run(slow_main(a))
    else:
        report_main(a)


if __name__ == "__main__":
    main()
