"""surge lb: command line and config file (exit 2 + one stderr line on errors)."""
import re
import socket

import pytest

from harness import run_surge

LB_FLAGS = ["-c", "--listen", "--backend", "--algorithm", "--admin", "--threads", "--hash-key",
            "--timeout-connect", "--timeout-header", "--timeout-upstream", "--timeout-idle",
            "--trust-forwarded", "--health-check", "--health-interval", "--rise", "--fall",
            "--retries"]

L = ["--listen", "127.0.0.1:0"]
B = ["--backend", "127.0.0.1:9"]

USAGE_ERRORS = [
    ("no_listen", B, "listen"),
    ("no_backend", L, "backend"),
    ("unknown_option", L + B + ["--bogus-flag"], "--bogus-flag"),
    ("unknown_algorithm", L + B + ["--algorithm", "fastest_wins"], "fastest_wins"),
    ("backend_without_port", L + ["--backend", "nohost"], "nohost"),
    ("backend_port_out_of_range", L + ["--backend", "1.2.3.4:99999"], "1.2.3.4:99999"),
    ("zero_threads", L + B + ["--threads", "0"], "threads"),
    ("bad_weight", L + ["--backend", "127.0.0.1:9,weight=abc"], "weight"),
]


def stderr_lines(res):
    return [ln for ln in res.stderr_text.splitlines() if ln.strip()]


@pytest.mark.parametrize("args,names", [(a, n) for _, a, n in USAGE_ERRORS],
                         ids=[i for i, _, _ in USAGE_ERRORS])
def test_usage_error_exits_2_with_one_line(args, names):
    res = run_surge("lb", *args)
    lines = stderr_lines(res)
    assert (res.returncode, len(lines)) == (2, 1), (res.returncode, res.stderr_text)
    assert names in lines[0], "the message should name %r: %r" % (names, lines[0])


def test_config_unknown_key_names_file_and_line(tmp_path):
    cfg = tmp_path / "lb.ini"
    cfg.write_text("listen = 127.0.0.1:0\nbackend = 127.0.0.1:9\nno_such_key = 1\n")
    res = run_surge("lb", "-c", cfg)
    lines = stderr_lines(res)
    assert (res.returncode, len(lines)) == (2, 1), (res.returncode, res.stderr_text)
    assert "%s:3" % cfg in lines[0], lines[0]


def test_config_file_works(tmp_path, start_upstreams, start_lb):
    a, b = start_upstreams("a", "b")
    cfg = tmp_path / "lb.ini"
    cfg.write_text("listen = 127.0.0.1:0\nbackend = %s\nbackend = %s\n"
                   "algorithm = round_robin\nthreads = 2\n" % (a.addr, b.addr))
    lb = start_lb("-c", cfg, listen=False, threads=None)
    got = [lb.get("/").backend for _ in range(4)]
    assert got == ["a", "b", "a", "b"], got


def test_sigterm_exits_0(start_upstreams, start_lb):
    (a,) = start_upstreams("a")
    lb = start_lb(backends=[a])
    assert lb.get("/").status == 200
    rc = lb.stop()
    assert rc == 0, (rc, lb.log())


def test_version():
    res = run_surge("version")
    assert res.returncode == 0, (res.returncode, res.stderr_text)
    assert re.search(r"\d+\.\d+", res.stdout_text), res.stdout_text


def test_help_lb_mentions_every_flag():
    res = run_surge("help", "lb")
    assert res.returncode == 0, (res.returncode, res.stderr_text)
    text = res.stdout_text
    missing = [f for f in LB_FLAGS if not re.search(r"(?<![\w-])%s(?![\w-])" % re.escape(f), text)]
    assert not missing, (missing, text)


def test_admin_address_in_use_exits_2_cleanly():
    """The admin server is torn down before it ever listened: exit 2 with the
    reason, and no sanitizer report (run_surge fails on one)."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        res = run_surge("lb", *L, *B, "--admin", "127.0.0.1:%d" % port)
    lines = stderr_lines(res)
    assert res.returncode == 2, res.stderr_text
    assert "--admin" in lines[-1] and "in use" in lines[-1], lines
