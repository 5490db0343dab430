"""Real engines for the integration tests: redis-server processes started on
ports the tests pick themselves, stopped by PID afterwards.

    with RedisServer() as r:            # ephemeral, no persistence
        r.url                           # "redis://127.0.0.1:PORT"
        r.cli("PING")                   # redis-cli output, stripped
        r.kill()                        # SIGKILL (a node lost under load)
        r.restart()                     # same port, same options

Ports come from pick_port(): a random port in 20000-32767 (below the
ephemeral range, where a busy machine's outgoing connections cannot take it
between our check and the server's bind) that nothing listens on; a start
that still fails to bind is retried on another port.
"""
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


def pick_port():
    """A free loopback port in 20000-32767 (never in 32768-60999)."""
    for _ in range(200):
        port = random.randint(20000, 32767)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    pytest.fail("no free loopback port in 20000-32767", pytrace=False)


def _port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


class RedisServer:
    """One redis-server on 127.0.0.1; extra is a list of further
    command-line options (e.g. ["--appendonly", "yes"])."""

    def __init__(self, extra=(), port=None):
        if not os.path.exists(REDIS_SERVER):
            pytest.fail("redis-server is not installed (scripts/deps.sh test installs it)",
                        pytrace=False)
        self.dir = tempfile.mkdtemp(prefix="surge-redis.")
        self.extra = list(extra)
        self.proc = None
        self.port = port
        self.start()

    @property
    def url(self):
        return "redis://127.0.0.1:%d" % self.port

    def start(self):
        for _ in range(5):
            port = self.port or pick_port()
            argv = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1",
                    "--save", "", "--appendonly", "no", "--dir", self.dir,
                    "--logfile", os.path.join(self.dir, "redis.log")] + self.extra
            self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and self.proc.poll() is None:
                if _port_open(port):
                    self.port = port
                    return
                time.sleep(0.02)
            self.stop()
            if self.port:
                break  # a fixed port (restart): do not wander off
        pytest.fail("redis-server did not start; log:\n%s" % self.log(), pytrace=False)

    def restart(self):
        self.stop()
        self.start()

    def cli(self, *args):
        out = subprocess.run([REDIS_CLI, "-h", "127.0.0.1", "-p", str(self.port)] + list(args),
                             capture_output=True, timeout=10)
        return out.stdout.decode(errors="replace").strip()

    def log(self):
        try:
            with open(os.path.join(self.dir, "redis.log"), errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def kill(self):
        """SIGKILL, as a lost node."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
