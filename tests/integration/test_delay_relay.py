"""delay_relay.py (latency in user space for kernels without sch_netem) on
loopback: the delay it adds each way, order and bytes preserved, half-close
and reset passed on, a refused target resets the client, bounded buffers under
a fast sender and a slow reader."""
import socket
import struct
import subprocess
import sys
import threading
import time

from engines import pick_port
from harness import REPO_ROOT, wait_until

RELAY = REPO_ROOT / "tests" / "integration" / "delay_relay.py"


class Relay:
    def __init__(self, target_port, delay_ms, extra=()):
        self.port = pick_port()
        self.proc = subprocess.Popen(
            [sys.executable, str(RELAY), "--delay-ms", str(delay_ms)] + list(extra)
            + ["127.0.0.1:%d=127.0.0.1:%d" % (self.port, target_port)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert "delay_relay:" in self.proc.stdout.readline()

    def connect(self):
        c = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return c

    def stop(self):
        self.proc.terminate()
        out = self.proc.communicate(timeout=10)[0]
        assert self.proc.returncode == 0, out
        return out


def _server():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    return srv


def _echo(conn):
    with conn:
        while True:
            data = conn.recv(65536)
            if not data:
                conn.shutdown(socket.SHUT_WR)
                return
            conn.sendall(data)


def _rtt(c, n=50):
    best = []
    for _ in range(n):
        t0 = time.perf_counter()
        c.sendall(b"x")
        assert c.recv(1) == b"x"
        best.append(time.perf_counter() - t0)
    best.sort()
    return best[len(best) // 2]


def test_relay_adds_its_delay_each_way_and_keeps_the_bytes():
    srv = _server()
    def accept_three():
        try:
            for _ in range(3):
                threading.Thread(target=_echo, args=(srv.accept()[0],), daemon=True).start()
        except OSError:
            pass    # the test closed the server first: nothing more to accept
    threading.Thread(target=accept_three, daemon=True).start()
    fast = Relay(srv.getsockname()[1], 0)
    slow = Relay(srv.getsockname()[1], 5)
    try:
        a, b = fast.connect(), slow.connect()
        r0, r5 = _rtt(a), _rtt(b)
        print("\nmedian echo RTT through the relay: %.2f ms at 0 ms, %.2f ms at 5 ms each way"
              % (r0 * 1e3, r5 * 1e3))
        assert 0.0095 <= r5 - r0 < 0.020, (r0, r5)
        # 4 MB in order, then a half-close: the echo comes back whole, then EOF.
        payload = bytes(range(256)) * 16384
        got = bytearray()

        def reader():
            while True:
                d = b.recv(65536)
                if not d:
                    return
                got.extend(d)
        t = threading.Thread(target=reader)
        t.start()
        b.sendall(payload)
        b.shutdown(socket.SHUT_WR)
        t.join(20)
        assert bytes(got) == payload
        a.close()
        b.close()
    finally:
        out = fast.stop() + slow.stop()
        srv.close()
    assert "delay_relay totals:" in out and "cpu" in out, out


def test_relay_passes_resets_and_refusals_on():
    srv = _server()
    relay = Relay(srv.getsockname()[1], 1)
    try:
        c = relay.connect()
        s, _ = srv.accept()
        c.sendall(b"hello")
        assert s.recv(5) == b"hello"
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()  # RST towards the relay
        c.settimeout(5)
        try:
            data = c.recv(10)
            assert False, "want a reset, got %r" % data
        except ConnectionResetError:
            pass
        c.close()
    finally:
        relay.stop()
    port = srv.getsockname()[1]
    srv.close()  # nothing listens there now: the relay's connect is refused
    relay = Relay(port, 1)
    try:
        try:  # the reset may come before connect() returns
            c = relay.connect()
            data = c.recv(10)
            assert False, "want a reset, got %r" % data
        except ConnectionResetError:
            pass
    finally:
        out = relay.stop()
    assert "1 connect failures" in out, out


def test_relay_buffers_are_bounded():
    """A reader that stops reading: the relay holds at most --buffer bytes per
    direction (plus the kernel's socket buffers), the sender blocks."""
    srv = _server()
    relay = Relay(srv.getsockname()[1], 1, ["--buffer", "65536"])
    try:
        c = relay.connect()
        s, _ = srv.accept()  # never reads
        c.setblocking(False)
        sent = 0
        chunk = b"y" * 65536
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                sent += c.send(chunk)
            except BlockingIOError:
                time.sleep(0.05)
        rss_kib = int(open("/proc/%d/status" % relay.proc.pid).read()
                      .split("VmRSS:")[1].split()[0])
        # Accepted bytes stop growing: kernel buffers (a few MB at most) + 64 KiB.
        assert sent < 32 * 1024 * 1024, sent
        assert rss_kib < 64 * 1024, rss_kib
        s.setblocking(False)
        total = [0]

        def more():
            try:
                while True:
                    d = s.recv(1 << 20)
                    if not d:
                        break
                    total[0] += len(d)
            except BlockingIOError:
                pass
            return total[0] >= sent
        assert wait_until(more, timeout=10, interval=0.05), (total[0], sent)
        c.close()
        s.close()
    finally:
        relay.stop()
        srv.close()
