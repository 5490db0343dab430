"""surge worker under ThreadSanitizer: the loop, the store thread and the
handler pool hand jobs, results, cancellation flags and statistics to each
other. A ThreadSanitizer build (build/tsan/surge, SURGE_TSAN_BIN) runs
order confirmations, no-op, failing and sleeping jobs with lease renewals,
a per-queue limit, /metrics scrapes and a SIGTERM that hands jobs back (on
the embedded queue and on Redis, whose driver adds a waker thread); any
"ThreadSanitizer" line in its log, or an exit status other than 0, fails."""
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from harness import REPO_ROOT, wait_until
from jobs_harness import insert_orders, jobs, make_store, queue, queue_args, stats  # noqa: F401

TSAN_BIN = Path(os.environ.get("SURGE_TSAN_BIN") or REPO_ROOT / "build" / "tsan" / "surge")


def test_worker_threads_are_race_free(queue, tmp_path):
    if not TSAN_BIN.exists():
        pytest.fail("ThreadSanitizer build missing at %s (make build/tsan/surge)" % TSAN_BIN,
                    pytrace=False)
    data = tmp_path / "data"
    make_store(data, users=4)
    insert_orders(data, 200)
    jobs(data, "enqueue", "noop", "--count", 300)
    jobs(data, "enqueue", "fail", "--max-attempts", 2, "--count", 10)
    jobs(data, "enqueue", "sleep", "--payload", '{"ms":1500}', "--queue", "slow", "--count", 6)
    out, log = tmp_path / "w.out", tmp_path / "w.log"
    env = dict(os.environ, TSAN_OPTIONS="halt_on_error=0 report_signal_unsafe=0")
    with open(out, "wb") as o, open(log, "wb") as e:
        argv = [str(TSAN_BIN), "worker", "--data-dir", str(data)] + queue_args() + [
            "--concurrency", "6", "--lease", "600", "--retry-base", "20ms",
            "--queue-limit", "slow=3", "--metrics", "127.0.0.1:0", "--drain-timeout", "300",
            "--reservation-timeout", "0"]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=o, stderr=e, env=env)
    try:
        assert wait_until(lambda: "metrics on" in out.read_text(), timeout=20), log.read_text()
        port = int(out.read_text().split("metrics on ")[1].split()[0].rsplit(":", 1)[1])
        for _ in range(10):
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as r:
                assert r.status == 200
            time.sleep(0.2)
        assert wait_until(lambda: stats(data)["done"] >= 500, timeout=60), stats(data)
        time.sleep(0.5)  # sleeping jobs hold leases that get renewed
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "ThreadSanitizer" not in text, text[-6000:]
    s = stats(data)
    assert s["running"] == 0, s
