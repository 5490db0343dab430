"""surge lb: TLS termination (docs/contract.md §4, docs/operations.md "TLS").

  * `--listen HOST:PORT,tls,cert=FILE,key=FILE[,cert=...]` next to a plain
    `--listen`: curl over https gets the backend's answer with
    `X-Forwarded-Proto: https` (http on the plain port);
  * TLS 1.2 and 1.3, ALPN http/1.1 (also when h2 is offered first), SNI picks
    the certificate whose names match (wildcards), the first otherwise;
  * session resumption by ticket (openssl s_client -sess_out/-sess_in), for
    TLS 1.2 and 1.3; counted in surge_lb_tls_handshakes_total;
  * bodies both ways (5 MB upload checked by hash, 3 MB download, chunked),
    pipelined requests in one write;
  * a plain-HTTP client, a silent client and a half-handshake are closed
    (the handshake is due within --timeout-header); the balancer goes on;
  * SIGHUP reloads the certificates: new connections get the new one, an open
    connection goes on; unreadable files keep the running certificates;
  * a missing certificate or a bad spec is exit 2 with one line on stderr;
  * OCSP stapling from CERT.ocsp (a DER response made here with `openssl
    ocsp` against a test CA): stapled when the client asks (`s_client
    -status`), reloaded on SIGHUP (good, then revoked); no file, nothing
    stapled; a file that is not a successful OCSP response is exit 2.

Certificates are made in the test with `openssl req -x509` (ECDSA P-256).
Run from the repository root:
    SURGE_BIN=build/asan/surge /usr/bin/python3 -m pytest -q -p no:cacheprovider \\
        tests/integration/test_lb_tls.py
"""
import hashlib
import os
import re
import signal
import socket
import ssl
import subprocess
import time

import pytest

from harness import SURGE_BIN, RawConn, build_request, pattern, wait_until

OPENSSL = "openssl"


def make_cert(dirpath, name, cn=None):
    """A self-signed ECDSA certificate for `cn` (and *.cn) in dirpath/name.pem|.key."""
    cn = cn or name
    pem, key = dirpath / (name + ".pem"), dirpath / (name + ".key")
    subprocess.run([OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-keyout", str(key),
                    "-out", str(pem), "-subj", "/CN=" + cn,
                    "-addext", "subjectAltName=DNS:%s,DNS:*.%s" % (cn, cn)],
                   check=True, capture_output=True)
    return pem, key


def tls_ports(lb):
    """The TLS listener's port (the log line 'listening on IP:PORT with TLS')."""
    m = re.search(r"listening on [0-9.]+:(\d+) with TLS", lb.log())
    assert m, lb.log()
    return int(m.group(1))


def client_ctx(tls_max=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    if tls_max:
        ctx.maximum_version = tls_max
    return ctx


class TlsConn(RawConn):
    """RawConn over TLS (python's ssl module)."""

    def __init__(self, port, server_name=None, ctx=None):
        super().__init__(port)
        self.sock = (ctx or client_ctx()).wrap_socket(self.sock, server_hostname=server_name)

    def peer_cn(self):
        der = self.sock.getpeercert(binary_form=True)
        out = subprocess.run([OPENSSL, "x509", "-inform", "DER", "-noout", "-subject"],
                             input=der, capture_output=True, check=True).stdout.decode()
        return out.strip().rsplit("=", 1)[-1].strip()


def s_client(port, *args, stdin=b""):
    r = subprocess.run([OPENSSL, "s_client", "-connect", "127.0.0.1:%d" % port] + list(args),
                       input=stdin, capture_output=True, timeout=20)
    return r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")


@pytest.fixture
def certs(tmp_path):
    one = make_cert(tmp_path, "one", "one.test")
    two = make_cert(tmp_path, "two", "two.test")
    return one, two


def tls_listen(certs, host="127.0.0.1:0"):
    spec = host + ",tls"
    for pem, key in certs:
        spec += ",cert=%s,key=%s" % (pem, key)
    return spec


def headers_of(resp):
    return {k.lower(): v for k, v in resp.json()["headers"]}


def test_https_next_to_http(start_upstreams, start_lb, certs):
    (a,) = start_upstreams("a")
    lb = start_lb("--listen", tls_listen(certs), backends=[a])
    port = tls_ports(lb)
    out = subprocess.run(["curl", "-sk", "--http1.1", "https://127.0.0.1:%d/headers" % port],
                         capture_output=True, timeout=20)
    assert out.returncode == 0, out
    import json
    h = {k.lower(): v for k, v in json.loads(out.stdout)["headers"]}
    assert h["x-forwarded-proto"] == "https"
    assert h["x-forwarded-for"] == "127.0.0.1"
    plain = lb.get("/headers")
    assert headers_of(plain)["x-forwarded-proto"] == "http"


def test_versions_alpn_and_sni(start_upstreams, start_lb, certs):
    (a,) = start_upstreams("a")
    lb = start_lb("--listen", tls_listen(certs), backends=[a], listen=False)
    port = lb.port
    for flag, version in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
        out = s_client(port, flag, "-alpn", "h2,http/1.1")
        assert "Protocol  : " + version in out or ", %s," % version in out, out
        assert "ALPN protocol: http/1.1" in out, out
    out = s_client(port, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
    assert "New, (NONE)" in out or "alert" in out, out
    for name, cn in ((None, "one.test"), ("two.test", "two.test"), ("www.two.test", "two.test"),
                     ("other.example", "one.test")):
        with TlsConn(port, server_name=name) as c:
            assert c.peer_cn() == cn, name
            resp = c.request("GET", "/")
            assert resp.status == 200 and resp.body == b"a", resp


def test_resumption_by_ticket(start_upstreams, start_lb, certs, tmp_path):
    (a,) = start_upstreams("a")
    lb = start_lb("--listen", tls_listen(certs), backends=[a], listen=False, admin=True)
    for flag in ("-tls1_2", "-tls1_3"):
        sess = tmp_path / ("sess" + flag)
        # TLS 1.3 tickets come after the handshake: send a request and wait for
        # the answer so s_client has read them before it saves the session.
        out = s_client(lb.port, flag, "-sess_out", str(sess), "-ign_eof",
                       stdin=b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert "New, " in out and "200 OK" in out, out
        out = s_client(lb.port, flag, "-sess_in", str(sess))
        assert "Reused, " in out, out
    m = lb.metrics()
    assert re.search(r'surge_lb_tls_handshakes_total\{result="resumed"\} 2\b', m), m
    assert re.search(r'surge_lb_tls_handshakes_total\{result="full"\} 2\b', m), m


def test_bodies_both_ways_and_pipelining(start_upstreams, start_lb, certs):
    (a,) = start_upstreams("a")
    lb = start_lb("--listen", tls_listen(certs), backends=[a], listen=False)
    body = os.urandom(5 * 1024 * 1024)
    with TlsConn(lb.port) as c:
        resp = c.request("POST", "/sha256", body=body)
        assert resp.status == 200, resp
        assert resp.json() == {"sha256": hashlib.sha256(body).hexdigest(), "length": len(body)}
        for chunked in ("", "&chunked=1"):
            resp = c.request("GET", "/bytes?n=3000000" + chunked)
            assert resp.status == 200 and resp.body == pattern(3000000), len(resp.body)
        c.send(b"".join(build_request("GET", "/?n=%d" % i, host="x") for i in range(20)))
        for _ in range(20):
            assert c.read_response().status == 200


def test_garbage_silent_and_half_handshakes_are_closed(start_upstreams, start_lb, certs):
    (a,) = start_upstreams("a")
    lb = start_lb("--listen", tls_listen(certs), "--timeout-header", "700ms", backends=[a],
                  listen=False, admin=True)
    with RawConn(lb.port) as c:
        c.send(build_request("GET", "/", host="x"))
        closed, extra = c.wait_closed(3)
        assert closed and b"HTTP/1.1" not in extra, extra
    with RawConn(lb.port) as silent, RawConn(lb.port) as half:
        # The first bytes of a ClientHello, then nothing.
        half.send(bytes.fromhex("160301020001000200"))
        t0 = time.monotonic()
        assert silent.wait_closed(5)[0] and half.wait_closed(5)[0]
        assert time.monotonic() - t0 < 4
    m = lb.metrics()
    assert re.search(r'surge_lb_tls_handshakes_total\{result="failed"\} [1-9]', m), m
    with TlsConn(lb.port) as c:
        assert c.request("GET", "/").status == 200


def test_sighup_reloads_certificates(start_upstreams, start_lb, tmp_path):
    (a,) = start_upstreams("a")
    pem, key = make_cert(tmp_path, "site", "old.test")
    lb = start_lb("--listen", "127.0.0.1:0,tls,cert=%s,key=%s" % (pem, key), backends=[a],
                  listen=False)
    kept = TlsConn(lb.port)
    assert kept.peer_cn() == "old.test"
    assert kept.request("GET", "/").status == 200
    make_cert(tmp_path, "site", "new.test")  # the same files, a new certificate
    lb.signal(signal.SIGHUP)
    wait_until(lambda: "certificates of" in lb.log(), 5)
    with TlsConn(lb.port) as c:
        assert c.peer_cn() == "new.test"
        assert c.request("GET", "/").status == 200
    assert kept.request("GET", "/").status == 200, "an open connection survives the reload"
    # Broken files: the running certificates stay.
    pem.write_text("not a certificate\n")
    mark = len(lb.log())
    lb.signal(signal.SIGHUP)
    wait_until(lambda: lb.log_lines_since(mark, "keeping the running certificates"), 5)
    with TlsConn(lb.port) as c:
        assert c.peer_cn() == "new.test"
        assert c.request("GET", "/").status == 200
    kept.close()


def ca_signed_cert(d, cn):
    """A test CA (d/ca.pem, ca.key) and a certificate for cn it signed (d/site.pem, .key)."""
    def run(*args):
        subprocess.run([OPENSSL] + [str(a) for a in args], check=True, capture_output=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run("req", "-x509", *ec, "-days", "2", "-keyout", d / "ca.key", "-out", d / "ca.pem",
        "-subj", "/CN=Test CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature")
    run("req", *ec, "-keyout", d / "site.key", "-out", d / "site.csr", "-subj", "/CN=" + cn)
    (d / "ext").write_text("subjectAltName=DNS:%s\n" % cn)
    run("x509", "-req", "-in", d / "site.csr", "-CA", d / "ca.pem", "-CAkey", d / "ca.key",
        "-CAcreateserial", "-days", "2", "-out", d / "site.pem", "-extfile", d / "ext")
    return d / "site.pem", d / "site.key"


def ocsp_response(d, pem, cn, revoked):
    """The test CA's DER OCSP response for pem: good, or revoked."""
    serial = subprocess.run([OPENSSL, "x509", "-in", str(pem), "-noout", "-serial"], check=True,
                            capture_output=True).stdout.decode().strip().split("=")[1]
    flag, rev = ("R", "250101000000Z") if revoked else ("V", "")
    (d / "index.txt").write_text("%s\t301231000000Z\t%s\t%s\tunknown\t/CN=%s\n"
                                 % (flag, rev, serial, cn))
    for args in (["-issuer", d / "ca.pem", "-cert", pem, "-reqout", d / "req.der", "-no_nonce"],
                 ["-index", d / "index.txt", "-rsigner", d / "ca.pem", "-rkey", d / "ca.key",
                  "-CA", d / "ca.pem", "-reqin", d / "req.der", "-respout", d / "resp.der",
                  "-ndays", "1"]):
        subprocess.run([OPENSSL, "ocsp"] + [str(a) for a in args], check=True,
                       capture_output=True)
    return (d / "resp.der").read_bytes()


def test_ocsp_stapling_from_cert_ocsp(start_upstreams, start_lb, tmp_path):
    (a,) = start_upstreams("a")
    pem, key = ca_signed_cert(tmp_path, "ocsp.test")
    plain_pem, plain_key = make_cert(tmp_path, "plain", "plain.test")  # no .ocsp file
    staple = tmp_path / "site.pem.ocsp"
    staple.write_bytes(ocsp_response(tmp_path, pem, "ocsp.test", revoked=False))
    lb = start_lb("--listen", tls_listen([(pem, key), (plain_pem, plain_key)]), backends=[a],
                  listen=False)
    out = s_client(lb.port, "-status", "-servername", "ocsp.test")
    assert "OCSP Response Status: successful" in out and "Cert Status: good" in out, out
    out = s_client(lb.port, "-servername", "ocsp.test")
    assert "OCSP Response Status" not in out, "stapled only when asked"
    out = s_client(lb.port, "-status", "-servername", "plain.test")
    assert "OCSP response: no response sent" in out, out
    # A fresh response (the operator's cron) and SIGHUP: the new one is stapled.
    staple.write_bytes(ocsp_response(tmp_path, pem, "ocsp.test", revoked=True))
    lb.signal(signal.SIGHUP)
    wait_until(lambda: "certificates of" in lb.log(), 5)
    out = s_client(lb.port, "-status", "-servername", "ocsp.test")
    assert "Cert Status: revoked" in out, out
    # Not an OCSP response: the running certificates (and staple) stay.
    staple.write_bytes(b"garbage")
    mark = len(lb.log())
    lb.signal(signal.SIGHUP)
    wait_until(lambda: lb.log_lines_since(mark, "keeping the running certificates"), 5)
    assert "Cert Status: revoked" in s_client(lb.port, "-status", "-servername", "ocsp.test")
    r = subprocess.run([str(SURGE_BIN), "lb", "--listen", "127.0.0.1:0,tls,cert=%s,key=%s"
                        % (pem, key), "--backend", "127.0.0.1:1"], capture_output=True, timeout=30)
    lines = r.stderr.decode().strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "OCSP" in lines[0], r


@pytest.mark.parametrize("spec", ["127.0.0.1:0,tls", "127.0.0.1:0,tls,cert=/nonexistent.pem",
                                  "127.0.0.1:0,cert=x.pem", "127.0.0.1:0,tls,cert=a,bogus=1"])
def test_bad_listen_is_exit_2(spec):
    r = subprocess.run([str(SURGE_BIN), "lb", "--listen", spec, "--backend", "127.0.0.1:1"],
                       capture_output=True, timeout=30)
    assert r.returncode == 2, r
    lines = r.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "listen" in lines[0], lines


def test_surge_bench_speaks_tls(start_upstreams, start_lb, certs, tmp_path):
    (a,) = start_upstreams("a")
    lb = start_lb("--listen", tls_listen(certs), backends=[a], listen=False, admin=True)
    import json
    url = "https://127.0.0.1:%d/" % lb.port
    for extra, want_resumed in (([], False), (["--tls-resume"], True)):
        out = tmp_path / "bench.json"
        r = subprocess.run([str(SURGE_BIN), "bench", "-c", "2", "-t", "1", "-d", "1", "-H",
                            "Connection: close", "--json", str(out)] + extra + [url],
                           capture_output=True, timeout=60)
        assert r.returncode == 0, r
        rep = json.loads(out.read_text())
        assert rep["requests"] > 4 and rep["errors"] == 0, rep
        cn = rep["connections"]
        assert cn["tls_handshakes"] >= rep["requests"], cn
        if want_resumed:
            assert cn["tls_resumed"] >= cn["tls_handshakes"] - 2, cn
        else:
            assert cn["tls_resumed"] == 0, cn
    r = subprocess.run([str(SURGE_BIN), "bench", "-c", "2", "-t", "1", "-d", "1", url],
                       capture_output=True, timeout=60)
    assert r.returncode == 0 and b"2 handshakes, 0 resumed" in r.stdout, r


# ---- TLS to backends -------------------------------------------------------------

def make_ip_cert(dirpath, name):
    """A self-signed certificate for the address 127.0.0.1 (its own CA)."""
    pem, key = dirpath / (name + ".pem"), dirpath / (name + ".key")
    subprocess.run([OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-keyout", str(key),
                    "-out", str(pem), "-subj", "/CN=backend",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return pem, key


def test_tls_to_backends(start_upstreams, start_lb, tmp_path):
    tls = make_ip_cert(tmp_path, "backend")
    (a,) = start_upstreams("a", tls=tls)
    lb = start_lb("--backend-tls", "--health-check", "/healthz", "--health-interval", "200ms",
                  backends=[a], admin=True)
    wait_until(lambda: lb.states() == {a.addr: "up"}, 5)
    body = os.urandom(3 * 1024 * 1024)
    with lb.conn() as c:
        for _ in range(5):
            r = c.request("GET", "/headers")
            assert r.status == 200 and r.backend == "a", r
        r = c.request("POST", "/sha256", body=body)
        assert r.json() == {"sha256": hashlib.sha256(body).hexdigest(), "length": len(body)}
        r = c.request("GET", "/bytes?n=2000000&chunked=1")
        assert r.status == 200 and r.body == pattern(2000000)
    with TlsConn(a.port) as c:
        stats = c.request("GET", "/__stats", [("Connection", "close")]).json()
    assert stats["requests"] >= 7 and stats["connections"] <= 3, stats


def test_backend_certificates_verified_with_backend_ca(start_upstreams, start_lb, tmp_path):
    tls = make_ip_cert(tmp_path, "backend")
    other = make_ip_cert(tmp_path, "other")
    (a,) = start_upstreams("a", tls=tls)
    good = start_lb("--backend-tls", "--backend-ca", tls[0], backends=[a])
    assert good.get("/").status == 200
    bad = start_lb("--backend-tls", "--backend-ca", other[0], "--retries", "0", backends=[a])
    r = bad.get("/")
    assert r.status == 502, r
    assert "TLS handshake failed" in bad.log()


def test_backend_ca_needs_backend_tls(tmp_path):
    r = subprocess.run([str(SURGE_BIN), "lb", "--listen", "127.0.0.1:0", "--backend",
                        "127.0.0.1:1", "--backend-ca", str(tmp_path / "x.pem")],
                       capture_output=True, timeout=30)
    assert r.returncode == 2 and b"--backend-ca needs --backend-tls" in r.stderr, r
