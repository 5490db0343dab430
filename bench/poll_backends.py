#!/usr/bin/python3
"""Watch one backend's state in surge lb's admin API (scripts/bench-faults.sh).

    poll_backends.py ADMIN_PORT ADDRESS INTERVAL_MS MAX_SECONDS

GETs http://127.0.0.1:ADMIN_PORT/backends every INTERVAL_MS and prints a line
"EPOCH STATE" (EPOCH = time.time() when the answer arrived, STATE = the
backend's "state" field, "absent" when ADDRESS is not listed, "error" when the
admin API did not answer) each time STATE changes, flushed at once. Exits after
MAX_SECONDS or on SIGTERM. Standard library only.
"""
import http.client
import json
import sys
import time


def main():
    port, addr = int(sys.argv[1]), sys.argv[2]
    interval, deadline = int(sys.argv[3]) / 1000.0, time.monotonic() + float(sys.argv[4])
    conn, last = None, None
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        state = "error"
        for _ in range(2):  # one reconnect if a kept-alive connection was closed
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                conn.request("GET", "/backends")
                resp = conn.getresponse()
                body = resp.read()
                if resp.status == 200:
                    state = "absent"
                    for b in json.loads(body):
                        if b.get("address") == addr:
                            state = b.get("state", "?")
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
                break
            except (OSError, http.client.HTTPException, ValueError):
                if conn is not None:
                    conn.close()
                conn = None
        if state != last:
            print(f"{time.time():.6f} {state}", flush=True)
            last = state
        time.sleep(max(0.0, interval - (time.monotonic() - t0)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
