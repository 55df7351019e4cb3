"""A MongoDB wire-protocol server on a loopback port, for running store tests over the real driver.

Uses `nx-27017` (MongoDB's protocol over SQLite, a test dependency): no
MongoDB to install, yet every call goes through PyMongo, BSON and a socket.
The server runs in its own process (known by PID), with in-memory databases,
and is stopped by `stop()`; `start()` gives up after a bounded wait.

Deviations of nx-27017 0.8 from MongoDB that the store suite meets:

- an equality match on an ObjectId in a field other than `_id`
  (`{"campaign_id": ObjectId(...)}`) finds nothing (`$in` does);
- `$set` of a boolean on an existing document stores it as an integer
  (`True` reads back as `1`); a document inserted by an upsert keeps it;
- a unique index treats `null` values as distinct (SQL semantics): two
  documents whose keys differ only by a null are both accepted (the store
  upserts by key, so the suite does not meet this one).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cluster import free_ports

DEVIATIONS = {
    "objectid-equality": "nx-27017 finds nothing on {field: ObjectId} outside _id",
    "bool-set": "nx-27017 stores a boolean $set on an existing document as an integer",
}


class WireMongo:
    """nx-27017 serving in-memory databases on a free loopback port."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="cc-nx27017-")
        self.port = free_ports(1)[0]
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> "WireMongo":
        """Start the server and wait until it answers a ping; RuntimeError (with its log) if it does not."""
        import pymongo

        log = Path(self.dir, "server.log")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nx_27017.nx_27017", "--host", "127.0.0.1", "--port", str(self.port),
             "--data-dir", "memory", "--log-file", str(log), "--pid-file", str(Path(self.dir, "nx.pid"))],
            cwd=self.dir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(Path(self.dir, "stderr.log"), "w"),
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                break
            client = pymongo.MongoClient(self.url, serverSelectionTimeoutMS=300)
            try:
                client.admin.command("ping")
                return self
            except pymongo.errors.PyMongoError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            finally:
                client.close()
        text = Path(self.dir, "stderr.log").read_text(errors="replace")[-2000:]
        self.stop()
        raise RuntimeError(f"nx-27017 did not start on port {self.port}: {text}")

    def stop(self) -> None:
        """Stop the server process (SIGTERM, then SIGKILL after 5 s) and remove its files."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)
