"""A real multi-node Ray cluster on this one machine, for tests and benchmarks: one ``ray start --block`` per node.

Why not ``ray.cluster_utils.Cluster``: it writes the machine-wide ``/tmp/ray/ray_current_cluster``, which a
plain ``ray.init()`` anywhere on the machine would then join, and ``ray stop`` ends every Ray on the machine.
Here every node has its own temp dir under a private root (nothing is written to ``/tmp/ray``), nodes are
started with ``--node-ip-address=127.0.0.1`` (Ray 2.x registers them under the machine's address, but the head
is dialled at 127.0.0.1), and :meth:`LocalCluster.stop` ends exactly the processes of this cluster's nodes.

Reads nothing; writes logs and Ray's sockets under the root (``/tmp/sc-ray-*``: short, since Unix socket paths
are limited to 107 bytes). Fails with :class:`ClusterError` (the node's log tail) when a node does not start.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

LOOPBACK = "127.0.0.1"
STARTED = "Ray runtime started."


class ClusterError(RuntimeError):
    """A node of the test cluster did not start."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def node_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """What every node's processes inherit: this process's environment plus ``extra`` (e.g. object-store
    credentials: Ray workers get their node's environment, not the driver's), one BLAS thread per worker (the
    pool is the parallelism), no usage reporting or metrics export, no auth token prompt."""
    env = {**os.environ, **(extra or {})}
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env.setdefault(var, "1")
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_enable_metrics_collection="0", RAY_DEDUP_LOGS="1")
    env.setdefault("RAY_AUTH_MODE", "disabled")
    env.pop("RAY_ADDRESS", None)
    return env


@dataclass
class Node:
    """One ``ray start --block`` process; its children are the node's raylet, GCS (head), agents and workers."""

    index: int
    cpus: int
    proc: subprocess.Popen
    log: Path
    temp_dir: Path
    tree: set[int] = field(default_factory=set)

    def processes(self) -> list[psutil.Process]:
        """The node's live processes (the block process and all its descendants, and any seen before that were
        re-parented: Ray's agents outlive their raylet for a while)."""
        found: dict[int, psutil.Process] = {}
        try:
            top = psutil.Process(self.proc.pid)
            found[top.pid] = top
            found.update({c.pid: c for c in top.children(recursive=True)})
        except psutil.NoSuchProcess:
            pass
        for pid in self.tree - found.keys():
            try:
                p = psutil.Process(pid)
                if self._ours(p):
                    found[pid] = p
            except psutil.NoSuchProcess:
                pass
        self.tree |= found.keys()
        return list(found.values())

    def _ours(self, p: psutil.Process) -> bool:
        """A pid seen earlier still belongs to this node (not reused by another program)."""
        try:
            return str(self.temp_dir) in " ".join(p.cmdline()) or any(
                str(self.temp_dir) in f.path for f in p.open_files())
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return False

    def kill(self) -> None:
        """SIGKILL every process of the node at once, as when its machine dies (no drain, no goodbye)."""
        procs = self.processes()
        for p in procs:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=10)
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the block process (Ray then ends the node's processes), then SIGKILL what is left."""
        procs = self.processes()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        _, alive = psutil.wait_procs(procs, timeout=timeout)
        for p in alive + [q for q in self.processes() if q.is_running()]:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(self.processes(), timeout=10)
        if self.proc.poll() is None:
            self.proc.wait(timeout=10)


class LocalCluster:
    """``LocalCluster([1, 1])``: a head with 1 CPU and one more node with 1 CPU; ``address`` is what
    ``ray.init(address=...)`` and ``songcorpus curate --address`` take. Use as a context manager."""

    def __init__(self, cpus_per_node: list[int], object_store_mb: int = 300, start_timeout_s: float = 180.0,
                 env: dict[str, str] | None = None) -> None:
        if not cpus_per_node:
            raise ValueError("a cluster needs at least a head node")
        self.cpus_per_node = cpus_per_node
        self.env = env or {}
        self.object_store_mb = object_store_mb
        self.start_timeout_s = start_timeout_s
        self.root = Path(tempfile.mkdtemp(prefix="sc-ray-", dir="/tmp"))
        self.port = free_port()
        self.nodes: list[Node] = []

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def __enter__(self) -> LocalCluster:
        try:
            for cpus in self.cpus_per_node:
                self.add_node(cpus)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add_node(self, cpus: int, attempts: int = 6) -> Node:
        """Start one node (the first one is the head) and wait until Ray says it runs. Ray gives a raylet a
        fixed 30 s to register, which a loaded machine can miss (measured at load ~20 on 2 cores): such a start
        is ended and tried again after a pause."""
        for attempt in range(attempts):
            try:
                node = self._start_node(len(self.nodes), cpus, attempt)
            except ClusterError:
                if attempt + 1 == attempts:
                    raise
                time.sleep(5.0 * (attempt + 1))
                continue
            self.nodes.append(node)
            return node
        raise AssertionError("unreachable")

    def _start_node(self, index: int, cpus: int, attempt: int) -> Node:
        temp_dir = self.root / f"n{index}.{attempt}"
        temp_dir.mkdir()
        log = self.root / f"node{index}.{attempt}.log"
        ray = str(Path(sys.executable).with_name("ray"))
        cmd = [ray, "start", "--block", f"--node-ip-address={LOOPBACK}", f"--num-cpus={cpus}", "--num-gpus=0",
               f"--object-store-memory={self.object_store_mb * 1024 * 1024}", f"--temp-dir={temp_dir}",
               "--disable-usage-stats"]
        if index == 0:
            cmd += ["--head", f"--port={self.port}", "--include-dashboard=false"]
        else:
            cmd += [f"--address={self.address}"]
        with open(log, "wb") as fh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=node_env(self.env),
                                    start_new_session=True)
        node = Node(index, cpus, proc, log, temp_dir)
        deadline = time.monotonic() + self.start_timeout_s
        while STARTED not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                node.stop()
                tail = log.read_text(errors="replace")[-3000:]
                raise ClusterError(f"Ray node {index} did not start (exit {proc.poll()}):\n{tail}")
            node.processes()
            time.sleep(0.2)
        node.processes()
        return node

    def kill_node(self, index: int) -> None:
        """Kill node ``index`` (not the head) at once, all its processes with SIGKILL."""
        if index == 0:
            raise ValueError("killing the head ends the cluster; kill a worker node")
        self.nodes[index].kill()

    def stop(self) -> None:
        """End this cluster's processes only (workers first, the head last) and remove its temp root."""
        for node in reversed(self.nodes):
            node.stop()
        shutil.rmtree(self.root, ignore_errors=True)
