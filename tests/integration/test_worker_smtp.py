"""`surge worker --smtp`: the order confirmation goes through a (tiny, fake)
SMTP server via libcurl, once per job: a replayed job sends nothing twice."""
import socket
import socketserver
import threading

from harness import wait_until
from jobs_harness import insert_orders, jobs_json, make_store, order_statuses, stats
from jobs_harness import queue, redeliver, workers  # noqa: F401 (fixtures)


class _Smtp(socketserver.StreamRequestHandler):
    def reply(self, line):
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self):
        self.reply("220 fake ESMTP")
        rcpt, data = [], None
        while True:
            line = self.rfile.readline()
            if not line:
                return
            cmd = line.decode(errors="replace").strip()
            up = cmd.upper()
            if up.startswith("EHLO") or up.startswith("HELO"):
                self.reply("250 fake")
            elif up.startswith("MAIL FROM:"):
                mail_from = cmd[10:].strip()
                self.reply("250 ok")
            elif up.startswith("RCPT TO:"):
                rcpt.append(cmd[8:].strip())
                self.reply("250 ok")
            elif up == "DATA":
                self.reply("354 go on")
                lines = []
                while True:
                    ln = self.rfile.readline()
                    if ln in (b".\r\n", b".\n", b""):
                        break
                    lines.append(ln)
                data = b"".join(lines)
                self.server.messages.append((mail_from, list(rcpt), data))
                rcpt = []
                self.reply("250 queued")
            elif up == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("250 ok")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def test_order_mail_goes_through_smtp_once(queue, workers, tmp_path):
    srv = _Server(("127.0.0.1", 0), _Smtp)
    srv.messages = []
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        data = tmp_path / "data"
        make_store(data, users=2)
        made = insert_orders(data, 3)
        url = "smtp://127.0.0.1:%d" % srv.server_address[1]
        w = workers.start(data, "--smtp", url)
        assert wait_until(lambda: stats(data)["done"] == 3, timeout=20), stats(data)
        assert len(srv.messages) == 3, srv.messages
        for mail_from, rcpt, body in srv.messages:
            assert mail_from == "<orders@surge.invalid>"
            assert len(rcpt) == 1 and rcpt[0].startswith("<user"), rcpt
            assert b"Subject: Your order " in body and b"Message-ID: <job-" in body, body
        assert all(s == "confirmed" for s in order_statuses(data).values())
        # Replay one job: the sent marker stops a second message.
        jid = int(jobs_json(data, "list", "--json")[0]["id"])
        redeliver(data, jid)
        assert wait_until(lambda: stats(data)["done"] == 3 and stats(data)["ready"] == 0,
                          timeout=10)
        assert len(srv.messages) == 3
        assert (data / "mail" / "sent" / str(jid)).exists()
        assert w.stop() == 0
        assert len(made) == 3
    finally:
        srv.shutdown()
        srv.server_close()


def test_smtp_down_means_retries_not_loss(queue, workers, tmp_path):
    data = tmp_path / "data"
    make_store(data, users=1)
    insert_orders(data, 1)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there
    w = workers.start(data, "--smtp", "smtp://127.0.0.1:%d" % port, "--retry-base", "100ms",
                      metrics=True)
    assert wait_until(lambda: (w.metric("surge_worker_retries_total") or 0) >= 2, timeout=20)
    [job] = jobs_json(data, "list", "--json")
    j = jobs_json(data, "show", job["id"])
    assert j["state"] in ("delayed", "ready", "running"), j
    assert "smtp" in j["last_error"].lower(), j
    assert all(s == "pending" for s in order_statuses(data).values())
    assert w.stop() == 0
