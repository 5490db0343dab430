"""Real PostgreSQL 15 clusters for the integration tests, started by the tests.

    pg = PgCluster()                  # initdb + start a primary (a few seconds)
    rep = pg.add_replica()            # pg_basebackup -R + start a streaming replica
    pg.url("shop")                    # "postgres://postgres@127.0.0.1:PORT/shop"
    pg.psql("SELECT 1", db="shop")    # psql -At output, stripped
    pg.create_db("t1", template="tpl")  # CREATE DATABASE ... TEMPLATE (fast)
    rep.stop() / rep.kill() / rep.start()   # pg_ctl stop -m fast / SIGKILL / start again
    pg.close()                        # every server of the cluster stopped, files removed

How (Debian's postgresql-15, binaries by full path from /usr/lib/postgresql/15/bin):
initdb refuses to run as root, so every server command runs as `postgres`
through runuser, from a temp dir postgres owns (runuser keeps the cwd, and a
cwd postgres cannot enter makes it complain); unix_socket_directories is that
dir (the default /var/run/postgresql may not be writable); fsync is off
(test data) but synchronous_commit stays on, so a commit's WAL reaches the
replica at once (off, the WAL writer sends it up to 200 ms later); each server listens on 127.0.0.1 on a
port from engines.pick_port() given with `pg_ctl -o "-p PORT"` (a replica
inherits its primary's postgresql.conf). Servers are stopped with
`pg_ctl stop -m fast`, or by the PID in postmaster.pid; never by name.
"""
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from engines import pick_port

PGBIN = "/usr/lib/postgresql/15/bin"
RUNUSER = shutil.which("runuser") or "/usr/sbin/runuser"


def _as_pg(argv, cwd, timeout=60, check=True, netns=None):
    """Run argv as the postgres user (or as ourselves when not root), inside
    network namespace netns when given (a simulated host)."""
    if os.geteuid() == 0:
        argv = [RUNUSER, "-u", "postgres", "--"] + argv
    if netns:
        argv = ["ip", "netns", "exec", netns] + argv
    res = subprocess.run(argv, cwd=cwd, capture_output=True, timeout=timeout)
    if check and res.returncode != 0:
        pytest.fail("%s exited %d:\n%s%s" % (" ".join(argv), res.returncode,
                                              res.stdout.decode(errors="replace")[-2000:],
                                              res.stderr.decode(errors="replace")[-2000:]),
                    pytrace=False)
    return res


def available():
    """None when PostgreSQL 15 can run here, else the reason."""
    if not os.path.exists(os.path.join(PGBIN, "initdb")):
        return "PostgreSQL 15 is not installed (scripts/deps.sh test installs postgresql)"
    return None


def _value(text):
    if text == "\\N":
        return None
    try:
        return int(text)
    except ValueError:
        return text


class PgServer:
    """One postmaster: a data dir, a port, a log; on 127.0.0.1, or on a
    simulated host's address inside its network namespace (place)."""

    def __init__(self, base, name, port, place=None):
        self.base, self.name, self.port = base, name, port
        self.netns, self.addr = place or (None, "127.0.0.1")
        self.data = os.path.join(base, name)
        self.logfile = os.path.join(base, name + ".log")

    def start(self, timeout=30):
        for _ in range(3):
            res = _as_pg([os.path.join(PGBIN, "pg_ctl"), "-D", self.data, "-l", self.logfile,
                          "-o", "-p %d -h %s" % (self.port, self.addr), "-w", "-t",
                          str(timeout), "start"],
                         self.base, timeout=timeout + 10, check=False, netns=self.netns)
            if res.returncode == 0:
                return
            if "could not bind" in self.log():
                self.port = pick_port()   # someone took it between pick and bind
                continue
            break
        pytest.fail("postgres %s did not start:\n%s" % (self.name, self.log()[-3000:]),
                    pytrace=False)

    def pid(self):
        try:
            with open(os.path.join(self.data, "postmaster.pid")) as f:
                return int(f.readline())
        except (OSError, ValueError):
            return None

    def running(self):
        pid = self.pid()
        if not pid:
            return False
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False

    def stop(self):
        if self.running():
            _as_pg([os.path.join(PGBIN, "pg_ctl"), "-D", self.data, "-m", "fast", "-w",
                    "stop"], self.base, check=False)

    def kill(self):
        """SIGKILL the postmaster (a lost server); its backends exit by themselves."""
        pid = self.pid()
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except OSError:
                    break
                time.sleep(0.05)
            # the backends notice the postmaster is gone within a moment
            time.sleep(0.5)

    def log(self):
        try:
            with open(self.logfile, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def url(self, db="postgres"):
        return "postgres://postgres@%s:%d/%s" % (self.addr, self.port, db)

    def psql(self, sql, db="postgres", check=True, timeout=60, extra=()):
        pre = ["ip", "netns", "exec", self.netns] if self.netns else []
        res = subprocess.run(pre + [os.path.join(PGBIN, "psql"), "-X", "-q", "-At", "-v",
                                    "ON_ERROR_STOP=1", "-h", self.addr, "-p", str(self.port),
                                    "-U", "postgres", "-d", db] + list(extra) + ["-c", sql],
                             capture_output=True, timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError("psql on %s: %s\n%s" % (self.name, sql,
                                                        res.stderr.decode(errors="replace")))
        return res.stdout.decode(errors="replace").strip()


class PgCluster:
    """A primary (and replicas added with add_replica) in one temp dir.
    place=(netns, address) puts a server on a simulated host
    (hosts_harness): it listens on that address only, and the cluster
    trusts that /24 (the other hosts) besides loopback."""

    def __init__(self, conf=(), place=None):
        why = available()
        if why:
            pytest.fail(why, pytrace=False)
        self.base = tempfile.mkdtemp(prefix="surge-pg.")
        os.chmod(self.base, 0o755)
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres", "postgres")
        self.primary = PgServer(self.base, "primary", pick_port(), place)
        self.replicas = []
        _as_pg([os.path.join(PGBIN, "initdb"), "-D", self.primary.data, "-U", "postgres",
                "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync"], self.base)
        with open(os.path.join(self.primary.data, "postgresql.conf"), "a") as f:
            f.write("listen_addresses = '127.0.0.1'\n"
                    "unix_socket_directories = '%s'\n"
                    "fsync = off\nfull_page_writes = off\n"
                    "max_connections = 300\nwal_level = replica\n"
                    "max_wal_senders = 10\nhot_standby_feedback = on\n" % self.base)
            for line in conf:
                f.write(line + "\n")
        if place:
            lan = place[1].rsplit(".", 1)[0] + ".0/24"
            with open(os.path.join(self.primary.data, "pg_hba.conf"), "a") as f:
                f.write("host all all %s trust\nhost replication all %s trust\n" % (lan, lan))
        self.primary.start()

    @property
    def port(self):
        return self.primary.port

    def url(self, db="postgres"):
        return self.primary.url(db)

    def psql(self, sql, db="postgres", check=True):
        return self.primary.psql(sql, db, check)

    def psql_rows(self, sql, db="postgres"):
        """Rows of the last statement of sql as tuples; integers as int, NULL as None."""
        out = self.primary.psql(sql, db, extra=("-F", "\x1f", "-P", "null=\\N"))
        return [tuple(_value(v) for v in line.split("\x1f")) for line in out.splitlines()
                if line]

    def add_replica(self, conf=(), place=None):
        """A streaming replica of the primary (pg_basebackup -R), started."""
        name = "replica%d" % (len(self.replicas) + 1)
        rep = PgServer(self.base, name, pick_port(), place)
        _as_pg([os.path.join(PGBIN, "pg_basebackup"), "-h", self.primary.addr, "-p",
                str(self.primary.port), "-U", "postgres", "-D", rep.data, "-R", "-X", "stream",
                "-c", "fast"], self.base, timeout=120, netns=rep.netns)
        if conf:
            with open(os.path.join(rep.data, "postgresql.conf"), "a") as f:
                for line in conf:
                    f.write(line + "\n")
        rep.start()
        self.replicas.append(rep)
        return rep

    def create_db(self, name, template=None):
        self.psql('CREATE DATABASE "%s"%s' % (name, ' TEMPLATE "%s"' % template
                                              if template else ""))

    def drop_db(self, name):
        self.psql('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)

    def wait_replayed(self, rep, timeout=20):
        """Until rep has replayed everything the primary wrote so far."""
        lsn = self.psql("SELECT pg_current_wal_lsn()")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ok = rep.psql("SELECT pg_last_wal_replay_lsn() >= '%s'::pg_lsn" % lsn, check=False)
            if ok == "t":
                return
            time.sleep(0.05)
        raise AssertionError("replica %s did not replay up to %s in %ss" % (rep.name, lsn,
                                                                           timeout))

    def close(self):
        for rep in self.replicas:
            rep.stop()
        self.primary.stop()
        for srv in [self.primary] + self.replicas:
            if srv.running():
                srv.kill()
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class StoreBackend:
    """Where the shop tests keep their data: `sqlite` (files in the data dir,
    no extra flags) or `postgres` (one fresh database per data dir on a
    shared cluster, given as a -c topology file: the primary and its
    streaming replica; the same tests, unchanged, against the other driver
    with reads on the replica and read-your-writes).

        backend.args(data_dir)        extra flags for surge app/seed/worker
        backend.shard_rows(data_dir, sql)   [(shard index, row tuple)] from every shard
    """

    def __init__(self, name, cluster_factory=None):
        self.name = name
        self._factory = cluster_factory
        self._dbs = {}

    @property
    def cluster(self):
        return self._factory()

    def db_name(self, data_dir):
        key = os.path.realpath(str(data_dir))
        if key not in self._dbs:
            import hashlib
            name = "t_" + hashlib.sha1(key.encode()).hexdigest()[:20]
            self.cluster.drop_db(name)
            self.cluster.create_db(name)
            self._dbs[key] = name
        return self._dbs[key]

    def url(self, data_dir):
        return self.cluster.url(self.db_name(data_dir))

    def topology(self, data_dir):
        """A -c file whose [store] puts every database on the primary and
        its streaming replica (the contract form)."""
        db = self.db_name(data_dir)
        path = os.path.join(self.cluster.base, "topology-%s.ini" % db)
        if not os.path.exists(path):
            with open(path, "w") as f:
                f.write("[store]\nprimary = %s\n" % self.cluster.url(db))
                for rep in self.cluster.replicas:
                    f.write("replica = %s\n" % rep.url(db))
        return path

    def args(self, data_dir):
        if self.name == "sqlite" or data_dir is False or data_dir is None:
            return []
        return ["-c", self.topology(data_dir)]

    def settle(self, data_dir):
        """After a bulk load that no app answered for (surge seed, rows a
        test wrote itself): wait until the replicas have replayed it."""
        if self.name == "postgres":
            for rep in self.cluster.replicas:
                self.cluster.wait_replayed(rep)

    def app_args(self, data_dir):
        """args() for surge app: a write waits longer for the replica than
        the default (a loaded test machine replays slowly), so the suites'
        read-after-write checks hold from any process."""
        extra = self.args(data_dir)
        return extra + ["--replica-wait", "10s"] if extra else extra

    def shard_exec(self, data_dir, shard, sql):
        """Run sql (literal values only: test code) on one shard; its rows."""
        if self.name == "sqlite":
            import sqlite3
            from pathlib import Path
            con = sqlite3.connect(str(Path(data_dir) / ("shard-%d.db" % shard)), timeout=30)
            try:
                rows = con.execute(sql).fetchall()
                con.commit()
                return rows
            finally:
                con.close()
        return self.cluster.psql_rows("SET search_path = shard_%d; %s" % (shard, sql),
                                      db=self.db_name(data_dir))

    def shard_rows(self, data_dir, sql):
        rows = []
        if self.name == "sqlite":
            import sqlite3
            from pathlib import Path
            files = sorted(Path(data_dir).glob("shard-*.db"),
                           key=lambda p: int(p.stem.split("-")[1]))
            for f in files:
                db = sqlite3.connect("file:%s?mode=ro" % f, uri=True)
                try:
                    rows += [(int(f.stem.split("-")[1]), r) for r in db.execute(sql)]
                finally:
                    db.close()
            return rows
        db = self.db_name(data_dir)
        schemas = self.cluster.psql("SELECT nspname FROM pg_namespace WHERE nspname LIKE "
                                    "'shard\\_%' ORDER BY 1", db=db).split()
        for schema in sorted(schemas, key=lambda s: int(s.split("_")[1])):
            out = self.cluster.psql_rows("SET search_path = %s; %s" % (schema, sql), db=db)
            rows += [(int(schema.split("_")[1]), r) for r in out]
        return rows
