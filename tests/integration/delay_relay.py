"""A TCP relay that delays every byte: network latency in user space, for
kernels without sch_netem (tc qdisc ... netem fails), as toxiproxy's latency
toxic does.

    python3 delay_relay.py --delay-ms D LISTEN=TARGET [LISTEN=TARGET ...]
        LISTEN and TARGET are ADDR:PORT. Run it inside the source host's
        network namespace (ip netns exec): clients there connect to LISTEN
        and the relay connects to TARGET for each of them.

Every chunk read from one side is held D ms, then written to the other side,
in each direction: one way costs D more, a round trip 2 x D more (the same as
tc netem delay D on the link). Order is preserved; a half-close (EOF) is
passed on after the data before it, also delayed; a reset (or any error) on
one side resets the other (SO_LINGER 0), after the data before it. The
connect to TARGET is not delayed; a TARGET that refuses or does not answer
within --connect-timeout-ms resets the client.

Buffers are bounded: a direction holding more than --buffer bytes stops
reading its source until the destination has taken them (TCP's own flow
control then slows the sender). --user-timeout-ms and --keepalive I,N,C
(default: off) set TCP_USER_TIMEOUT and keepalives on the upstream socket, so
that a host cut off the network is noticed as it would be without the relay:
surge's PostgreSQL driver sets them on its own sockets, which here only reach
the relay's loopback listener (always answered).

On SIGTERM or SIGINT it prints one line of totals (connections, chunks,
bytes, its own CPU seconds) and exits 0. Standard library only.
"""
import argparse
import asyncio
import resource
import signal
import socket
import struct
import sys
import time

LINGER_RESET = struct.pack("ii", 1, 0)


class Stats:
    conns = 0
    chunks = 0
    bytes = 0
    resets = 0
    connect_failures = 0


class Pipe:
    """One direction: chunks from src held `delay` s, then written to dst."""

    def __init__(self, loop, delay, limit, src_side):
        self.loop, self.delay, self.limit = loop, delay, limit
        self.src_side = src_side  # the Side whose transport we read from
        self.dst = None  # the Side whose transport we write to
        self.queue = []  # (due, bytes | "eof" | "reset"), in order
        self.head = 0
        self.held = 0
        self.timer = None
        self.src_paused = False

    def push(self, item):
        due = self.loop.time() + self.delay
        self.queue.append((due, item))
        if isinstance(item, bytes):
            self.held += len(item)
            Stats.chunks += 1
            Stats.bytes += len(item)
            if self.held > self.limit and not self.src_paused:
                self.src_paused = True
                self.src_side.pause()
        if self.timer is None:
            self.timer = self.loop.call_at(due, self.flush)

    def flush(self):
        self.timer = None
        if self.dst.transport is None:
            return  # target not connected yet: Conn.connect flushes
        now = self.loop.time()
        q = self.queue
        while self.head < len(q) and q[self.head][0] <= now:
            item = q[self.head][1]
            self.head += 1
            if item == "eof":
                self.dst.write_eof()
            elif item == "reset":
                self.dst.reset()
            else:
                self.held -= len(item)
                self.dst.write(item)
        if self.head == len(q):
            q.clear()
            self.head = 0
        else:
            if self.head > 256:
                del q[:self.head]
                self.head = 0
            self.timer = self.loop.call_at(q[self.head][0], self.flush)
        self.maybe_resume()

    def maybe_resume(self):
        if self.src_paused and self.held <= self.limit // 2 and not self.dst.write_paused:
            self.src_paused = False
            self.src_side.resume()

    def cancel(self):
        if self.timer:
            self.timer.cancel()
            self.timer = None


class Side(asyncio.Protocol):
    """One socket of a relayed connection (client side or target side)."""

    def __init__(self, conn):
        self.conn = conn
        self.transport = None
        self.out = None  # the Pipe that carries what this side reads
        self.into = None  # the Pipe that writes into this side
        self.write_paused = False
        self.read_paused = False
        self.closed = False
        self.eof_in = self.eof_out = False

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.out.push(data)

    def eof_received(self):
        self.out.push("eof")
        self.eof_in = True
        self.close_when_done()
        return True  # keep our write half open: a half-close

    def connection_lost(self, exc):
        # Our own close or abort sets closed first; anything else is the
        # peer's reset or an error: reset the other side after the data before it.
        if not self.closed:
            self.closed = True
            self.out.push("reset")

    def pause_writing(self):
        self.write_paused = True
        self.into.src_side.pause()

    def resume_writing(self):
        self.write_paused = False
        self.into.maybe_resume()
        if not self.into.src_paused:
            self.into.src_side.resume()

    def pause(self):
        if self.transport and not self.read_paused and not self.closed:
            self.read_paused = True
            self.transport.pause_reading()

    def resume(self):
        if self.transport and self.read_paused and not self.closed:
            self.read_paused = False
            self.transport.resume_reading()

    def write(self, data):
        if not self.closed and self.transport:
            self.transport.write(data)

    def write_eof(self):
        if not self.closed and self.transport and self.transport.can_write_eof():
            try:
                self.transport.write_eof()
            except OSError:
                self.reset()
                return
            self.eof_out = True
            self.close_when_done()

    def close_when_done(self):
        if self.eof_in and self.eof_out:
            self.close()

    def reset(self):
        if self.transport and not self.closed:
            self.closed = True
            Stats.resets += 1
            sock = self.transport.get_extra_info("socket")
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
            except OSError:
                pass
            self.transport.abort()

    def close(self):
        if self.transport and not self.closed:
            self.closed = True
            self.transport.close()  # after what is buffered


class ClientSide(Side):
    """The accepted socket: not read until the target is connected."""

    def connection_made(self, transport):
        super().connection_made(transport)
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pause()
        self.conn.loop.create_task(self.conn.connect())


class Conn:
    """A relayed connection: the client's socket and the target's."""

    def __init__(self, relay, loop):
        self.relay, self.loop = relay, loop
        self.client = ClientSide(self)
        self.target = Side(self)
        a = Pipe(loop, relay.delay, relay.limit, self.client)  # client -> target
        b = Pipe(loop, relay.delay, relay.limit, self.target)  # target -> client
        a.dst, b.dst = self.target, self.client
        self.client.out, self.client.into = a, b
        self.target.out, self.target.into = b, a

    async def connect(self):
        r = self.relay
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if r.user_timeout_ms:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, r.user_timeout_ms)
            if r.keepalive:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                idle, intvl, cnt = r.keepalive
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, intvl)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, cnt)
            await asyncio.wait_for(self.loop.sock_connect(sock, r.target), r.connect_timeout)
            await self.loop.create_connection(lambda: self.target, sock=sock)
        except (OSError, asyncio.TimeoutError):
            sock.close()
            Stats.connect_failures += 1
            self.client.reset()
            return
        # What the client sent meanwhile (some Pythons read before
        # pause_reading takes effect) is queued in its pipe.
        if self.client.out.queue:
            self.client.out.flush()
        self.client.resume()


class Relay:
    def __init__(self, listen, target, args, loop):
        self.listen, self.target = listen, target
        self.delay = args.delay_ms / 1000.0
        self.limit = args.buffer
        self.connect_timeout = args.connect_timeout_ms / 1000.0
        self.user_timeout_ms = args.user_timeout_ms
        self.keepalive = args.keepalive
        self.loop = loop

    def accept(self):
        Stats.conns += 1
        return Conn(self, self.loop).client

    async def start(self):
        return await self.loop.create_server(self.accept, self.listen[0], self.listen[1],
                                             reuse_address=True, backlog=1024)


def addr_port(text):
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError("expected ADDR:PORT, got %r" % text)
    return host, int(port)


def mapping(text):
    if text.count("=") != 1:
        raise argparse.ArgumentTypeError("expected LISTEN=TARGET, got %r" % text)
    a, b = text.split("=")
    return addr_port(a), addr_port(b)


def keepalive(text):
    parts = text.split(",")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError("expected IDLE,INTERVAL,COUNT (s, s, n), got %r" % text)
    return tuple(int(p) for p in parts)


def main(argv=None):
    p = argparse.ArgumentParser(description="TCP relay holding every chunk D ms each way")
    p.add_argument("--delay-ms", type=float, required=True)
    p.add_argument("--buffer", type=int, default=1 << 20, help="bytes held per direction")
    p.add_argument("--connect-timeout-ms", type=int, default=1000)
    p.add_argument("--user-timeout-ms", type=int, default=0)
    p.add_argument("--keepalive", type=keepalive, default=None)
    p.add_argument("maps", nargs="+", type=mapping, metavar="LISTEN=TARGET")
    args = p.parse_args(argv)
    if args.delay_ms < 0 or args.buffer < 4096:
        p.error("--delay-ms must be >= 0 and --buffer >= 4096")

    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)

    async def run():
        servers = [await Relay(lst, tgt, args, loop).start() for lst, tgt in args.maps]
        print("delay_relay: %.3f ms each way: %s" % (
            args.delay_ms, ", ".join("%s:%d -> %s:%d" % (lst + tgt) for lst, tgt in args.maps)),
            flush=True)
        t0 = time.monotonic()
        await stop.wait()
        for s in servers:
            s.close()
        ru = resource.getrusage(resource.RUSAGE_SELF)
        wall = time.monotonic() - t0
        cpu = ru.ru_utime + ru.ru_stime
        print("delay_relay totals: %d connections, %d chunks, %d bytes, %d resets, "
              "%d connect failures; cpu %.2f s (%.1f%% of one core over %.0f s), "
              "%.1f us per chunk" % (Stats.conns, Stats.chunks, Stats.bytes, Stats.resets,
                                     Stats.connect_failures, cpu, 100 * cpu / max(wall, 1e-9),
                                     wall, 1e6 * cpu / max(Stats.chunks, 1)), flush=True)

    loop.run_until_complete(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
