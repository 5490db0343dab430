"""A Redis primary, a replica and one Sentinel for the failover tests, all on
ports the test picks, each with its files in a temp dir, stopped by PID.

    with SentinelGroup(master="shop") as g:
        g.url               # "redis-sentinel://127.0.0.1:SPORT/shop"
        g.primary, g.replica     # RedisServer
        g.current_primary()      # (host, port) as Sentinel reports it
        g.primary.kill()         # the failover starts (down-after 1 s)

One Sentinel with quorum 1 is enough to promote the replica (a production
setup runs three on separate machines; the client takes any number)."""
import os
import shutil
import subprocess
import tempfile
import time

import pytest

from engines import REDIS_CLI, RedisServer, _port_open, pick_port

REDIS_SENTINEL = shutil.which("redis-sentinel") or "/usr/bin/redis-sentinel"


class SentinelGroup:
    def __init__(self, master="shop", down_after_ms=1000):
        if not os.path.exists(REDIS_SENTINEL):
            pytest.fail("redis-sentinel is not installed (scripts/deps.sh test installs it)",
                        pytrace=False)
        self.master = master
        self.down_after_ms = down_after_ms
        self.primary = RedisServer()
        self.replica = RedisServer(extra=["--replicaof", "127.0.0.1", str(self.primary.port)])
        self.dir = tempfile.mkdtemp(prefix="surge-sentinel.")
        self.proc = None
        self.port = None
        try:
            self._wait(lambda: "master_link_status:up" in self.replica.cli("INFO", "replication"),
                       "the replica never synced")
            self._start_sentinel()
            self._wait(lambda: self.sentinel_cli("SENTINEL", "replicas", self.master).strip() != "",
                       "Sentinel never saw the replica")
        except BaseException:
            self.close()
            raise

    @property
    def url(self):
        return "redis-sentinel://127.0.0.1:%d/%s" % (self.port, self.master)

    def _wait(self, pred, what, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return
            time.sleep(0.1)
        pytest.fail("%s within %d s" % (what, timeout), pytrace=False)

    def _start_sentinel(self):
        for _ in range(5):
            self.port = pick_port()
            conf = os.path.join(self.dir, "sentinel.conf")
            with open(conf, "w") as f:
                f.write("port %d\nbind 127.0.0.1\ndir %s\nlogfile %s\n"
                        "sentinel monitor %s 127.0.0.1 %d 1\n"
                        "sentinel down-after-milliseconds %s %d\n"
                        "sentinel failover-timeout %s 10000\n"
                        "sentinel parallel-syncs %s 1\n"
                        % (self.port, self.dir, os.path.join(self.dir, "sentinel.log"),
                           self.master, self.primary.port, self.master, self.down_after_ms,
                           self.master, self.master))
            self.proc = subprocess.Popen([REDIS_SENTINEL, conf], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and self.proc.poll() is None:
                if _port_open(self.port):
                    return
                time.sleep(0.05)
            self._stop_sentinel()
        pytest.fail("redis-sentinel did not start; log:\n%s" % self.log(), pytrace=False)

    def sentinel_cli(self, *args):
        out = subprocess.run([REDIS_CLI, "-h", "127.0.0.1", "-p", str(self.port)] + list(args),
                             capture_output=True, timeout=10)
        return out.stdout.decode(errors="replace").strip()

    def current_primary(self):
        out = self.sentinel_cli("SENTINEL", "get-master-addr-by-name", self.master).split()
        return (out[0], int(out[1])) if len(out) == 2 else None

    def log(self):
        try:
            with open(os.path.join(self.dir, "sentinel.log"), errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def _stop_sentinel(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def close(self):
        self._stop_sentinel()
        self.replica.close()
        self.primary.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
