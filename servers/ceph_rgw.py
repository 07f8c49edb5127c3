"""A throwaway single-node Ceph cluster with the RADOS Gateway, an S3 server that enforces SSE-C.

One monitor, one OSD that keeps its objects in memory (memstore) and radosgw, all on 127.0.0.1,
all run in the foreground as children of the tests and stopped by their own PIDs. Everything
the cluster writes lives in a directory of its own: its ceph.conf names every path a daemon or
a CLI call would otherwise take from /etc/ceph, /var/lib/ceph, /var/run/ceph or /var/log/ceph,
and the cluster has its own fsid and ports (the monitor's and radosgw's from free_port(); the OSD
takes free ones in Ceph's 6800-7300 range), so it neither touches nor meets a system cluster.

Authentication is off inside the cluster (S3 requests are still signed and checked by radosgw).
Starting takes about 1.5 s, stopping 0.3 s; the daemons need about 130 MB of memory (RSS) plus
the objects stored, which the OSD keeps in memory (up to 4 GiB, after which it reports itself full).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from types import TracebackType

from typing_extensions import Self

from servers.process import free_port, start_process, stop_process, wait_for_port

DAEMONS = ("ceph-mon", "ceph-osd", "radosgw")
TOOLS = ("ceph", "radosgw-admin", "monmaptool")

CLUSTER = "objstoretest"
MON_ID = "a"
OSD_ID = 0
RGW_NAME = "client.rgw"
ZONEGROUP = "default"
ZONE = "default"
PLACEMENT = "default-placement"


def ceph_available() -> bool:
    """Whether the daemons and tools this module runs are installed (by .ci/install-ceph)."""
    return all(shutil.which(binary) for binary in DAEMONS + TOOLS)


def _tail(log: Path, lines: int = 40) -> str:
    """The last lines of a daemon's log (Ceph's -d output has a blank line after each)."""
    if not log.exists():
        return f"({log} does not exist)"
    return "\n".join([line for line in log.read_text(errors="replace").splitlines() if line][-lines:])


class CephRGW:
    """A Ceph cluster (monitor, in-memory OSD, radosgw) serving S3 on ``endpoint_url``.

    ``base_dir`` must exist; the cluster lives in a new directory under it (``directory``).
    Each instance starts once (its ports, keys and fsid are fixed when it is made).
    ``stop()`` kills the daemons by PID and deletes their data, keeping ceph.conf and the logs
    in ``directory/log`` for post-mortems.
    """

    def __init__(self, base_dir: Path, extra_storage_class: str = "COLD",
                 start_timeout: float = 60.0) -> None:
        self.fsid = str(uuid.uuid4())
        self.directory = base_dir / f"ceph-{self.fsid[:8]}"
        self.mon_port = free_port()
        self.port = free_port()
        while self.port == self.mon_port:
            self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self.access_key = "ceph-test-" + uuid.uuid4().hex[:10]
        self.secret_key = uuid.uuid4().hex + uuid.uuid4().hex[:8]
        self.extra_storage_class = extra_storage_class
        self.start_timeout = start_timeout
        self._conf = self.directory / "ceph.conf"
        self._logs = self.directory / "log"
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._created = False

    @property
    def pids(self) -> list[int]:
        """PIDs of the daemons started and not yet stopped."""
        return [process.pid for process in self._processes.values() if process.poll() is None]

    def start(self) -> Self:
        """Create the cluster and start its daemons; return once radosgw accepts connections."""
        if self._created:
            raise RuntimeError("a CephRGW starts only once; make a new one")
        deadline = time.monotonic() + self.start_timeout
        self.directory.mkdir()
        self._created = True
        for sub in ("log", "run", "mon", "osd", "rgw", "crash"):
            (self.directory / sub).mkdir()
        self._conf.write_text(self._config())
        try:
            self._start_monitor(deadline)
            self._start_osd(deadline)
            self._configure_rgw(deadline)
            self._start_daemon("radosgw", ["radosgw", "-n", RGW_NAME])
            self._wait_for_port("radosgw", self.port, deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the daemons, radosgw first, each by its PID; delete the cluster's data."""
        for name in ("radosgw", "ceph-osd", "ceph-mon"):
            process = self._processes.pop(name, None)
            if process is not None:
                stop_process(process)
        if self._created:
            for sub in ("run", "mon", "osd", "rgw", "crash"):
                shutil.rmtree(self.directory / sub, ignore_errors=True)
            (self.directory / "monmap").unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    # Cluster set-up, in start() order.

    def _config(self) -> str:
        d = self.directory
        return f"""\
[global]
fsid = {self.fsid}
mon host = [v2:127.0.0.1:{self.mon_port}]
mon initial members = {MON_ID}
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv4 = true
ms bind ipv6 = false
ms bind msgr1 = false
ms bind msgr2 = true
# Without this radosgw fails to authenticate to the monitor (-13, EACCES) and retries until it gives up.
ms mon client mode = crc
auth cluster required = none
auth service required = none
auth client required = none
# Never read while auth is none; named so that nothing would look for one in /etc/ceph.
keyring = {d}/keyring
run dir = {d}/run
admin socket = {d}/run/$name.asok
crash dir = {d}/crash
log file = {d}/log/$name.log
mon cluster log file = {d}/log/cluster.log
mon debug dump location = {d}/log/$name.tdump
# A commit every 50 ms instead of every second: starting takes under 2 s rather than 13 s.
paxos propose interval = 0.05
# The tests may run on a fuller disk than a real monitor would accept.
mon data avail warn = 2
mon data avail crit = 1
# One OSD: pools of one replica and few placement groups, placed on that OSD.
mon allow pool size one = true
mon warn on pool no redundancy = false
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0

[mon]
mon data = {d}/mon/$id

[osd]
osd data = {d}/osd/$id
osd journal = {d}/osd/$id/journal
osd objectstore = memstore
# The capacity the OSD reports, not an allocation: objects take memory as they are stored.
memstore device bytes = 4294967296

[{RGW_NAME}]
rgw frontends = beast endpoint=127.0.0.1:{self.port}
rgw data = {d}/rgw
# SSE-C over plain HTTP: the tests do not run TLS.
rgw crypt require ssl = false
"""

    def _start_monitor(self, deadline: float) -> None:
        monmap = self.directory / "monmap"
        self._run(["monmaptool", "--create", "--fsid", self.fsid,
                   "--addv", MON_ID, f"[v2:127.0.0.1:{self.mon_port}]", str(monmap)], deadline)
        self._run(["ceph-mon", *self._ceph_args(), "--mkfs", "-i", MON_ID, "--monmap", str(monmap)], deadline)
        self._start_daemon("ceph-mon", ["ceph-mon", "-i", MON_ID])
        self._wait_for_port("ceph-mon", self.mon_port, deadline)

    def _start_osd(self, deadline: float) -> None:
        osd_uuid = str(uuid.uuid4())
        self._run(["ceph", *self._ceph_args(), "osd", "new", osd_uuid, str(OSD_ID)], deadline)
        (self.directory / "osd" / str(OSD_ID)).mkdir()
        self._run(["ceph-osd", *self._ceph_args(), "-i", str(OSD_ID), "--mkfs", "--osd-uuid", osd_uuid],
                  deadline)
        self._start_daemon("ceph-osd", ["ceph-osd", "-i", str(OSD_ID)])
        while not self._osd_up(deadline):
            self._check_alive("ceph-osd", deadline)
            time.sleep(0.1)

    def _osd_up(self, deadline: float) -> bool:
        dump = json.loads(self._run(["ceph", *self._ceph_args(), "osd", "dump", "--format", "json"],
                                    deadline))
        return any(osd["osd"] == OSD_ID and osd["up"] == 1 for osd in dump["osds"])

    def _configure_rgw(self, deadline: float) -> None:
        """Create the S3 user and the extra storage class before radosgw starts.

        ``user create`` comes first because it creates the default zone and zonegroup that the
        placement commands modify; radosgw reads the placement when it starts, so no period
        commit (which would need a realm) is needed.
        """
        admin = ["radosgw-admin", *self._ceph_args(), "-n", "client.admin"]
        self._run([*admin, "user", "create", "--uid", "tests", "--display-name", "tests",
                   "--access-key", self.access_key, "--secret-key", self.secret_key], deadline)
        self._run([*admin, "zonegroup", "placement", "add", "--rgw-zonegroup", ZONEGROUP,
                   "--placement-id", PLACEMENT, "--storage-class", self.extra_storage_class], deadline)
        self._run([*admin, "zone", "placement", "add", "--rgw-zone", ZONE, "--placement-id", PLACEMENT,
                   "--storage-class", self.extra_storage_class,
                   "--data-pool", f"{ZONE}.rgw.{self.extra_storage_class.lower()}.data"], deadline)

    # Helpers.

    def _ceph_args(self) -> list[str]:
        return ["--cluster", CLUSTER, "-c", str(self._conf)]

    def _env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("CEPH_")}
        env["CEPH_CONF"] = str(self._conf)
        return env

    def _log(self, name: str) -> Path:
        return self._logs / f"{name}.out"

    def _start_daemon(self, name: str, argv: list[str]) -> None:
        """Start a daemon in the foreground (-d: logging to stderr, i.e. to its .out log)."""
        self._processes[name] = start_process([*argv, *self._ceph_args(), "-d"], self._log(name),
                                              env=self._env(), cwd=self.directory)

    def _wait_for_port(self, name: str, port: int, deadline: float) -> None:
        try:
            wait_for_port(port, self._processes[name], self._remaining(deadline), self._log(name))
        except TimeoutError as error:
            raise TimeoutError(f"{name}: {error}\n{self._daemon_tails()}") from error

    def _run(self, argv: list[str], deadline: float) -> str:
        """Run a CLI call to completion before the deadline; return its stdout."""
        try:
            result = subprocess.run(argv, capture_output=True, text=True, check=False, env=self._env(),
                                    cwd=self.directory, timeout=self._remaining(deadline))
        except subprocess.TimeoutExpired as error:
            raise TimeoutError(f"{argv} did not finish in time\n{self._daemon_tails()}") from error
        if result.returncode != 0:
            raise RuntimeError(f"{argv} failed with code {result.returncode}:\n"
                               f"{result.stdout}{result.stderr}\n{self._daemon_tails()}")
        return result.stdout

    def _check_alive(self, name: str, deadline: float) -> None:
        process = self._processes[name]
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with code {process.returncode}\n{_tail(self._log(name))}")
        self._remaining(deadline)

    def _remaining(self, deadline: float) -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"Ceph did not start within {self.start_timeout} s\n{self._daemon_tails()}")
        return remaining

    def _daemon_tails(self) -> str:
        return "\n".join(f"--- {name}:\n{_tail(self._log(name), 20)}" for name in self._processes)
