"""PostgreSQL made highly available by pg_auto_failover (Debian's
postgresql-15-auto-failover) across simulated hosts (hosts_harness.Hosts).

    af = AutoFailover(hosts, "mon", ["pg1", "pg2"])  # monitor + two data nodes
    af.up(timeout=90)          # create the monitor, then pg1 (primary), then pg2
                               # (its streaming secondary); waits for primary/secondary
    af.url("shop")             # libpq multi-host URL of the data nodes,
                               # target_session_attrs=read-write
    af.primary()               # the host whose node is primary now (or None)
    af.states()                # {host: (reported state, goal state)}
    af.kill(host)              # SIGKILL every process of the node (pg_autoctl and
                               # its postgres): nothing restarts it
    af.psql(host, sql)         # psql on that node's database (unix socket, postgres)
    af.close()                 # files removed (the processes stop with the hosts)

Every pg_autoctl runs as the postgres user (initdb refuses root) through runuser,
with its own XDG config/data dirs and its own unix socket dir (the hosts share one
filesystem: two servers on the default /var/run/postgresql would collide), in a
temp dir postgres owns. The monitor's health checks are tightened (1 s period,
3 s to "unhealthy", 5 s demote timeout) and each keeper's network partition
timeout with them (3 s, below the demote timeout), so a failover takes seconds,
not the defaults' ~40 s.
"""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from pg_harness import PGBIN, RUNUSER, available

MON_PORT = 5430
NODE_PORT = 5432
PG_AUTOCTL = shutil.which("pg_autoctl") or "/usr/bin/pg_autoctl"

# The monitor's GUCs (pg_auto_failover's docs, "Configuring the monitor").
MONITOR_TUNING = {
    "pgautofailover.health_check_period": "1000",
    "pgautofailover.health_check_timeout": "1000",
    "pgautofailover.health_check_max_retries": "1",
    "pgautofailover.health_check_retry_delay": "500",
    "pgautofailover.node_considered_unhealthy_timeout": "3000",
    "pgautofailover.primary_demote_timeout": "5000",
}
NETWORK_PARTITION_S = 3  # each keeper's timeout.network_partition_timeout (default 20)


def unavailable():
    """None when pg_auto_failover can run here, else why not."""
    why = available()
    if why:
        return why
    if not os.path.exists(PG_AUTOCTL):
        return ("pg_autoctl is not installed (scripts/deps.sh test installs "
                "postgresql-15-auto-failover)")
    if not os.path.exists(os.path.join(os.path.dirname(PGBIN), "lib", "pgautofailover.so")):
        return "the pgautofailover extension for PostgreSQL 15 is not installed"
    return None


class AutoFailover:
    def __init__(self, hosts, monitor, nodes):
        why = unavailable()
        if why:
            pytest.fail(why, pytrace=False)
        self.hosts, self.monitor, self.nodes = hosts, monitor, list(nodes)
        self.base = tempfile.mkdtemp(prefix="surge-pgaf.")
        os.chmod(self.base, 0o755)
        for h in [monitor] + self.nodes:
            os.makedirs(os.path.join(self.base, h))
        if os.geteuid() == 0:
            for root, dirs, _ in os.walk(self.base):
                shutil.chown(root, "postgres", "postgres")
                for d in dirs:
                    shutil.chown(os.path.join(root, d), "postgres", "postgres")
        self.procs = {}
        self.ports = {h: NODE_PORT + i for i, h in enumerate(self.nodes)}
        self.ports[monitor] = MON_PORT

    def _dir(self, host):
        return os.path.join(self.base, host)

    def pgdata(self, host):
        return os.path.join(self._dir(host), "pgdata")

    def _argv(self, host, argv):
        d = self._dir(host)
        env = ["PATH=%s:/usr/sbin:/usr/bin:/sbin:/bin" % PGBIN, "HOME=" + d,
               "XDG_CONFIG_HOME=" + os.path.join(d, "config"),
               "XDG_DATA_HOME=" + os.path.join(d, "share"),
               "PG_REGRESS_SOCK_DIR=" + d, "PGHOST=" + d]
        pre = [RUNUSER, "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return pre + ["env", "-i"] + env + [str(a) for a in argv]

    def _run(self, host, argv, timeout=60):
        res = self.hosts.run(host, self._argv(host, argv), timeout=timeout)
        if res.returncode != 0:
            raise AssertionError("%s on %s exited %d:\n%s\n%s" % (
                " ".join(map(str, argv)), host, res.returncode, res.stdout[-3000:],
                res.stderr[-3000:]))
        return res.stdout

    def monitor_url(self):
        return "postgres://autoctl_node@%s:%d/pg_auto_failover?sslmode=disable" % (
            self.hosts.addr(self.monitor), MON_PORT)

    def url(self, db):
        hosts = ",".join("%s:%d" % (self.hosts.addr(h), self.ports[h]) for h in self.nodes)
        return "postgres://postgres@%s/%s?target_session_attrs=read-write" % (hosts, db)

    def _start(self, host, argv):
        self.procs[host] = self.hosts.start(host, self._argv(host, argv), "pg_autoctl-" + host)

    def up(self, db="shop", timeout=90):
        deadline = time.monotonic() + timeout
        mon = self.monitor
        self._start(mon, [PG_AUTOCTL, "create", "monitor", "--pgdata", self.pgdata(mon),
                          "--pgport", MON_PORT, "--hostname", self.hosts.addr(mon),
                          "--auth", "trust", "--no-ssl", "--run"])
        self._wait(lambda: self._monitor_sql("SELECT 1", check=False) == "1", deadline,
                   "the monitor to accept connections")
        for k, v in MONITOR_TUNING.items():
            self._monitor_sql("ALTER SYSTEM SET %s = '%s'" % (k, v))
        self._monitor_sql("SELECT pg_reload_conf()")
        want = []
        for i, h in enumerate(self.nodes):
            self._start(h, [PG_AUTOCTL, "create", "postgres", "--pgdata", self.pgdata(h),
                            "--pgport", self.ports[h], "--hostname", self.hosts.addr(h),
                            "--name", h, "--monitor", self.monitor_url(), "--auth", "trust",
                            "--no-ssl", "--dbname", db, "--pg-hba-lan", "--run"])
            want = ["single"] if i == 0 else ["primary"] + ["secondary"] * i
            if i == 1:
                # pg_basebackup waits for a spread checkpoint (pg_autoctl does
                # not ask for a fast one): with fsync on a busy disk that took
                # minutes here. Test data: no fsync, and hurry the checkpoint.
                self._wait(lambda: self._hurry_checkpoint(self.nodes[0], h), deadline,
                           "%s to take its base backup" % h)
            if i == 0:
                self._wait(lambda: self.states().get(h, ("",))[0] == "single", deadline,
                           "%s to be a single node" % h)
                for sql in ("ALTER SYSTEM SET fsync = off",
                            "ALTER SYSTEM SET checkpoint_completion_target = 0.1",
                            "SELECT pg_reload_conf()"):
                    self.psql(h, sql, db="postgres")
            self._wait(lambda: sorted(s[0] for s in self.states().values()) == sorted(want)
                       and all(s[0] == s[1] for s in self.states().values()), deadline,
                       "nodes %s in states %s" % (self.nodes[:i + 1], want))
            # A node demotes itself when it has been cut from the monitor and
            # its standby this long: below the monitor's primary_demote_timeout,
            # so a partitioned old primary stops writing before another is
            # promoted (no split brain).
            setting = [PG_AUTOCTL, "config", "set", "--pgdata", self.pgdata(h),
                       "timeout.network_partition_timeout", NETWORK_PARTITION_S]
            # (set once the node is up: a SIGHUP during its creation breaks it)
            self._run(h, setting, timeout=20)

    def _hurry_checkpoint(self, primary, standby):
        self.psql(primary, "CHECKPOINT", db="postgres")
        return self.states().get(standby, ("",))[0] not in ("", "init", "wait_standby")

    def _wait(self, pred, deadline, what):
        while time.monotonic() < deadline:
            try:
                if pred():
                    return
            except (AssertionError, subprocess.TimeoutExpired, ValueError):
                pass
            for h, hp in self.procs.items():
                if hp.proc.poll() is not None and h not in getattr(self, "killed", ()):
                    raise AssertionError("pg_autoctl on %s exited %s while waiting for %s:\n%s"
                                         % (h, hp.proc.returncode, what, hp.log()[-3000:]))
            time.sleep(0.2)
        raise AssertionError("pg_auto_failover: timed out waiting for %s; states %s\n"
                             "monitor log:\n%s" % (what, self._states_or_error(),
                                                   self.procs[self.monitor].log()[-2000:]))

    def _states_or_error(self):
        try:
            return self.states()
        except Exception as e:  # noqa: BLE001 (a diagnostic only)
            return "unknown (%s)" % e

    def _monitor_sql(self, sql, check=True):
        d = self._dir(self.monitor)
        res = self.hosts.run(self.monitor, self._argv(self.monitor, [
            os.path.join(PGBIN, "psql"), "-X", "-At", "-h", d, "-p", MON_PORT, "-U", "postgres",
            "-d", "pg_auto_failover", "-c", sql]), timeout=10)
        if check and res.returncode != 0:
            raise AssertionError("monitor: %s: %s" % (sql, res.stderr))
        return res.stdout.strip()

    def states(self):
        """{host: (reported state, goal state)} from the monitor."""
        out = self._monitor_sql("SELECT json_agg(json_build_array(nodename, reportedstate, "
                                "goalstate)) FROM pgautofailover.node")
        rows = json.loads(out) if out else []
        return {r[0]: (r[1], r[2]) for r in rows or []}

    def primary(self):
        for h, (reported, goal) in self.states().items():
            if reported in ("primary", "wait_primary", "single") and reported == goal:
                return h
        return None

    def wait_primary(self, other_than, timeout):
        """Until a node other than other_than is primary (or wait_primary) as
        the monitor sees it; returns it."""
        deadline = time.monotonic() + timeout
        found = {}

        def promoted():
            p = self.primary()
            if p and p != other_than:
                found["h"] = p
                return True
            return False
        self._wait(promoted, deadline, "a node other than %s to be promoted" % other_than)
        return found["h"]

    def kill(self, host):
        """SIGKILL every process in host's namespace (pg_autoctl, its postgres;
        all started by this harness)."""
        self.killed = getattr(self, "killed", set()) | {host}
        ns = self.hosts.ns(host)
        for _ in range(5):
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True,
                                  text=True).stdout.split()
            if not pids:
                break
            for p in pids:
                try:
                    os.kill(int(p), signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.1)
        self.procs[host].proc.wait(10)
        self.procs[host].stopped = True

    def psql(self, host, sql, db="shop"):
        d = self._dir(host)
        res = self.hosts.run(host, self._argv(host, [
            os.path.join(PGBIN, "psql"), "-X", "-At", "-h", d, "-p", self.ports[host], "-U",
            "postgres", "-d", db, "-c", sql]), timeout=30)
        if res.returncode != 0:
            raise AssertionError("psql on %s: %s: %s" % (host, sql, res.stderr))
        return res.stdout.strip()

    def logs(self):
        return "\n".join("--- pg_autoctl on %s:\n%s" % (h, hp.log()[-1500:])
                         for h, hp in self.procs.items())

    def close(self):
        for h in reversed(list(self.procs)):
            self.hosts.stop(self.procs[h])
        shutil.rmtree(self.base, ignore_errors=True)
