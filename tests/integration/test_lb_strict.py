"""surge lb: malformed requests get an exact error status, the connection is
closed after it, and nothing at all reaches the backend."""
import time

import pytest

from harness import assert_json_error

H = b"Host: x\r\n"
PAD = b"".join(b"X-Pad-%03d: %s\r\n" % (i, b"a" * 1000) for i in range(70))  # ~71 KiB

CASES = [
    ("content_length_and_transfer_encoding", 400,
     b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"5\r\nhello\r\n0\r\n\r\n"),
    ("two_different_content_lengths", 400,
     b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
    ("whitespace_before_colon", 400,
     b"GET / HTTP/1.1\r\n" + H + b"X-Foo : bar\r\n\r\n"),
    ("invalid_chunk_size", 400,
     b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
    ("nul_in_header_value", 400,
     b"GET / HTTP/1.1\r\n" + H + b"X-Foo: a\x00b\r\n\r\n"),
    ("bare_cr_in_header_value", 400,
     b"GET / HTTP/1.1\r\n" + H + b"X-Foo: a\rb\r\n\r\n"),
    ("unknown_transfer_coding", 501,
     b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\nhello"),
    ("request_head_over_64k", 431,
     b"GET / HTTP/1.1\r\n" + H + PAD + b"\r\n"),
    ("uri_over_8k", 414,
     b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + H + b"\r\n"),
    ("request_line_missing_parts", 400,
     b"GET\r\n" + H + b"\r\n"),
    ("request_line_bad_protocol", 400,
     b"GET / FOO/1.1\r\n" + H + b"\r\n"),
    ("http11_without_host", 400,
     b"GET / HTTP/1.1\r\nX-Foo: bar\r\n\r\n"),
    # our own parser's rules (src/http/http.h)
    ("target_with_raw_utf8", 400,
     b"GET /caf\xc3\xa9 HTTP/1.1\r\n" + H + b"\r\n"),
    ("method_not_a_token", 400,
     b"G(T / HTTP/1.1\r\n" + H + b"\r\n"),
    ("http_version_2_0", 505,
     b"GET / HTTP/2.0\r\n" + H + b"\r\n"),
    ("protocol_htxp", 400,
     b"GET / HTXP/1.1\r\n" + H + b"\r\n"),
    ("chunk_extension_without_name", 400,
     b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n" + b"5;\r\nhello\r\n0\r\n\r\n"),
    ("chunk_extension_unterminated_quote", 400,
     b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n" + b'5;a="b\r\nhello\r\n0\r\n\r\n'),
    ("chunk_extension_cr_in_quotes", 400,
     b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n" + b'5;a="b\rc"\r\nhello\r\n0\r\n\r\n'),
]


@pytest.mark.parametrize("raw,status", [(raw, st) for _, st, raw in CASES],
                         ids=[name for name, _, _ in CASES])
def test_malformed_request_rejected_and_not_forwarded(start_upstreams, start_lb, raw, status):
    (up,) = start_upstreams("a")
    lb = start_lb(backends=[up])
    warm = lb.get("/")  # the path to the backend works
    assert (warm.status, warm.backend) == (200, "a"), warm
    before = up.stats()["requests"]
    assert before == 1, up.stats()

    with lb.conn() as c:
        c.send(raw, tolerate_reset=True)
        try:
            resp = c.read_response()
        except (ConnectionResetError, EOFError) as e:
            raise AssertionError("no complete %d response before the connection ended: %r"
                                 % (status, e))
        assert_json_error(resp, status)
        closed, extra = c.wait_closed()
        assert (closed, extra) == (True, b""), "connection not closed after the %d" % status

    time.sleep(0.2)  # anything forwarded late would show up now
    assert up.stats()["requests"] == before, "request reached the backend: %r" % up.stats()
