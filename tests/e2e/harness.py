"""Real processes for end-to-end tests: a private PostgreSQL cluster that a test may stop
and start, and Passerelle server processes (uvicorn) that a test may SIGKILL."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[2]
PG_BIN = Path(os.environ.get("PASSERELLE_PG_BIN", "/usr/lib/postgresql/15/bin"))


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateCluster:
    """A throwaway PostgreSQL cluster (initdb) on its own port, owned by this test run.

    As root, the server runs as the ``postgres`` system user (PostgreSQL refuses root).
    PostGIS comes from the system's extension directory, as for the main server.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="passerelle-pg-"))
        self.data = self.dir / "data"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(
            PG_BIN / "initdb",
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
        )

    def _run(self, *cmd: str | Path) -> None:
        args = [str(c) for c in cmd]
        if self._as_postgres:
            args = ["runuser", "-u", "postgres", "--", *args]
        subprocess.run(args, check=True, capture_output=True, cwd=self.dir)

    @property
    def url(self) -> str:
        """SQLAlchemy URL of database ``passerelle`` on this cluster."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/passerelle"

    @property
    def conninfo(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/passerelle"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        self._run(
            PG_BIN / "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.dir / "log"),
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (clean, disconnects clients) or ``immediate`` (crash)."""
        self._run(PG_BIN / "pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    def scalar(self, query: str, *params: object) -> object:
        with psycopg.connect(self.conninfo, connect_timeout=5) as conn:
            row = conn.execute(query, params).fetchone()  # type: ignore[arg-type]
            return row[0] if row else None


class Server:
    """A Passerelle server process (``passerelle serve``)."""

    def __init__(
        self,
        database_url: str,
        data_dir: Path,
        *,
        port: int | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.port = port or free_port()
        self.data_dir = data_dir
        #: When set, the process's stdout and stderr (its logs) are appended there.
        self.log_path = log_path
        self.env = {
            **os.environ,
            "PASSERELLE_DATABASE_URL": database_url,
            "PASSERELLE_DATA_DIR": str(data_dir),
            "PASSERELLE_BASE_URL": "https://go.example.com",
            "PASSERELLE_RATE_LIMIT_ENABLED": "false",
            "PASSERELLE_CACHE_RECONCILE_INTERVAL_S": "30",
            "PASSERELLE_REQUEST_READ_TIMEOUT_S": "2",
        }
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, wait_ready: bool = True, timeout: float = 30) -> None:
        # The real `passerelle serve`, without its migration step (the test migrated).
        log = open(self.log_path, "ab") if self.log_path else None
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "api.cli",
                "serve",
                "--no-migrate",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            cwd=ROOT,
            env=self.env,
            start_new_session=True,
            stdout=log or subprocess.DEVNULL,
            stderr=log,
        )
        if log is not None:
            log.close()  # the child holds its own descriptor
        path = "/health/ready" if wait_ready else "/health/live"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited during start-up")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.base_url + path, timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"server not up on {path} after {timeout} s")

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM (graceful: the scan writer drains), SIGKILL after 20 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.kill()
