#!/usr/bin/python3
"""Open N idle HTTP/1.1 keep-alive connections and hold them.

    idle_conns.py HOST PORT N HOLD_SECONDS [--inflight K] [--timeout S] [--requests R]

Each connection sends R `GET / HTTP/1.1` requests one after the other
(default 1) and reads each complete response (Content-Length or chunked);
then all connections stay open, idle, for HOLD_SECONDS. --requests 0 holds
connections that never sent a request (what a server pays before the first
request) instead of kept-alive ones (what it pays after a request ended). At most K connections are connecting/awaiting a response at
any moment (default 200) so the listener's accept backlog is never flooded.

stdout (one line each, flushed):
    ready N <seconds to open>          all N responses read, holding now
    alive M/N                          at the end of the hold: M not closed by peer
Exit status: 0 if every connection got a response and stayed open, 1 otherwise.
Only the Python standard library is used.
"""
import argparse
import errno
import selectors
import socket
import sys
import time

REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def response_complete(buf):
    """True when buf holds one full HTTP response."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return False
    head = buf[:end].decode("latin-1").lower().split("\r\n")
    body = buf[end + 4:]
    length = None
    chunked = False
    for line in head[1:]:
        name, _, value = line.partition(":")
        name = name.strip()
        if name == "content-length":
            length = int(value.strip())
        elif name == "transfer-encoding" and "chunked" in value:
            chunked = True
    if chunked:
        return body.endswith(b"0\r\n\r\n")
    if length is None:
        return True  # e.g. 204/304: no body
    return len(body) >= length


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("n", type=int)
    ap.add_argument("hold", type=float)
    ap.add_argument("--inflight", type=int, default=200)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--requests", type=int, default=1)
    a = ap.parse_args()

    sel = selectors.DefaultSelector()
    state = {}  # sock -> [phase, buffer, requests left]; phase: "connect", "read"
    done = []
    failed = 0
    started = 0
    t0 = time.monotonic()

    def start_one():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        err = s.connect_ex((a.host, a.port))
        if err not in (0, errno.EINPROGRESS):
            s.close()
            return False
        state[s] = ["connect", b"", a.requests]
        sel.register(s, selectors.EVENT_WRITE)
        return True

    while len(done) + failed < a.n:
        if time.monotonic() - t0 > a.timeout:
            print("timeout: %d/%d responses, %d failed" % (len(done), a.n, failed), flush=True)
            return 1
        while started < a.n and len(state) < a.inflight:
            started += 1
            if not start_one():
                failed += 1
        for key, ev in sel.select(timeout=1.0):
            s = key.fileobj
            st = state[s]
            if st[0] == "connect":
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    sel.unregister(s)
                    del state[s]
                    s.close()
                    failed += 1
                    continue
                if st[2] == 0:  # hold it without a request
                    sel.unregister(s)
                    del state[s]
                    done.append(s)
                    continue
                s.sendall(REQUEST)  # 35 bytes into an empty send buffer
                st[0] = "read"
                sel.modify(s, selectors.EVENT_READ)
                continue
            try:
                data = s.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                sel.unregister(s)
                del state[s]
                s.close()
                failed += 1
                continue
            st[1] += data
            if response_complete(st[1]):
                st[2] -= 1
                if st[2] > 0:
                    st[1] = b""
                    s.sendall(REQUEST)
                    continue
                sel.unregister(s)
                del state[s]
                done.append(s)
    if failed:
        print("failed %d of %d connections" % (failed, a.n), flush=True)
        for s in done:
            s.close()
        return 1

    print("ready %d %.2f" % (len(done), time.monotonic() - t0), flush=True)
    time.sleep(a.hold)

    # A peer-closed socket is readable and recv() returns b"".
    for s in done:
        sel.register(s, selectors.EVENT_READ)
    closed = 0
    for key, _ in sel.select(timeout=0):
        try:
            if key.fileobj.recv(1, socket.MSG_PEEK) == b"":
                closed += 1
        except OSError:
            closed += 1
    print("alive %d/%d" % (len(done) - closed, len(done)), flush=True)
    for s in done:
        sel.unregister(s)
        s.close()
    return 0 if closed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
