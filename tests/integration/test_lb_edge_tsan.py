"""surge lb's TLS and response cache under ThreadSanitizer (build/tsan/surge,
path in SURGE_TSAN_BIN; `make test` builds it).

Two worker threads share the cache store (sharded locks, entry reference
counts, fetches in progress) and the TLS contexts and ticket keys. Under
concurrent load (plain requests to keys that expire every second, so entries
are inserted, replaced and coalesced; TLS requests on new and kept-alive
connections with session resumption), the test purges by prefix, scrapes
/metrics and reloads the certificates with SIGHUP. Any "ThreadSanitizer" line
in the balancer's log fails it.
"""
import os
import signal
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest

from harness import REPO_ROOT, RawConn

TSAN_BIN = Path(os.environ.get("SURGE_TSAN_BIN") or REPO_ROOT / "build" / "tsan" / "surge")


def test_cache_and_tls_are_race_free_under_load(start_upstreams, start_lb, tmp_path):
    if not TSAN_BIN.exists():
        pytest.fail("ThreadSanitizer build missing at %s (make test builds it)" % TSAN_BIN,
                    pytrace=False)
    (a,) = start_upstreams("a")
    pem, key = tmp_path / "c.pem", tmp_path / "c.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-keyout", str(key),
                    "-out", str(pem), "-subj", "/CN=t.test"], check=True, capture_output=True)
    lb = start_lb("--cache-size", "8", "--listen", "127.0.0.1:0,tls,cert=%s,key=%s" % (pem, key),
                  backends=[a], admin=True, binary=TSAN_BIN,
                  env={"TSAN_OPTIONS": "halt_on_error=0 report_signal_unsafe=0"})
    import re
    tls_port = int(re.search(r"listening on [0-9.]+:(\d+) with TLS", lb.log()).group(1))
    stop = threading.Event()
    failures = []

    def plain(k):
        while not stop.is_set():
            try:
                with RawConn(lb.port) as c:
                    for i in range(20):
                        r = c.request("GET", "/c/k%d?cc=max-age%%3D1&etag=e" % ((k + i) % 4))
                        if r.status != 200:
                            failures.append(r)
            except Exception as e:  # noqa: BLE001 - reported below
                failures.append(e)

    def tls():
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        session = None
        while not stop.is_set():
            try:
                c = RawConn(tls_port)
                c.sock = ctx.wrap_socket(c.sock, session=session)
                for _ in range(5):
                    r = c.request("GET", "/c/t?cc=max-age%3D1")
                    if r.status != 200:
                        failures.append(r)
                session = c.sock.session
                c.close()
            except Exception as e:  # noqa: BLE001 - reported below
                failures.append(e)

    ts = [threading.Thread(target=plain, args=(k,)) for k in range(3)] + \
         [threading.Thread(target=tls) for _ in range(2)]
    for t in ts:
        t.start()
    try:
        for _ in range(10):
            time.sleep(0.3)
            assert lb.admin("POST", "/cache/purge", {"prefix": "/c/k1"}).status == 200
            assert lb.admin("GET", "/metrics").status == 200
            lb.signal(signal.SIGHUP)
    finally:
        stop.set()
        for t in ts:
            t.join(30)
    assert not failures, failures[:3]
    assert "ThreadSanitizer" not in lb.log(), lb.log()[-4000:]
