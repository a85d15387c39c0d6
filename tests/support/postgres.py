"""A real PostgreSQL server on loopback for tests and benchmarks.

``TRIAGE_TEST_POSTGRES_URL`` points the tests at an existing server. Otherwise Debian's
``postgresql`` package is found (or installed with apt-get when we are root), a throw-away cluster
is initialised in a temporary directory, started on a free port on 127.0.0.1 as the ``postgres``
user (the server refuses to run as root), and stopped at the end of the session.

If the server genuinely cannot be had, tests that need it are skipped with a loud reason
(printed to the terminal and raised as a warning), never silently.

Each test gets its own PostgreSQL schema (``search_path`` set through the URL's ``options``),
so tests never see each other's tables and an external server is left as it was found.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

ENV_URL = "TRIAGE_TEST_POSTGRES_URL"
INSTALL_TIMEOUT_S = 900


class PostgresUnavailable(RuntimeError):
    """No server could be found, installed or started; the message says why."""


def _run(cmd: list[str], timeout: float = 120, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, **kw)  # type: ignore[call-overload]


def find_pg_bin() -> Path | None:
    """Directory of pg_ctl/initdb/postgres: Debian keeps them in /usr/lib/postgresql/N/bin."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                        key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("pg_ctl")
    if found and Path(found).resolve().parent.joinpath("initdb").exists():
        return Path(found).resolve().parent
    return None


def install_postgres() -> None:
    """``apt-get install -y postgresql`` (running ``apt-get update`` first if the lists are stale)."""
    if os.geteuid() != 0:
        raise PostgresUnavailable("PostgreSQL is not installed and we are not root, so apt-get cannot install it")
    if not shutil.which("apt-get"):
        raise PostgresUnavailable("PostgreSQL is not installed and there is no apt-get to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "postgresql"]
    print("\n[triage tests] installing PostgreSQL with apt-get (first run on this machine)...",
          file=sys.__stderr__, flush=True)
    res = _run(cmd, timeout=INSTALL_TIMEOUT_S, env=env)
    if res.returncode != 0:
        upd = _run(["apt-get", "update", "-q"], timeout=INSTALL_TIMEOUT_S, env=env)
        res = _run(cmd, timeout=INSTALL_TIMEOUT_S, env=env)
        if res.returncode != 0:
            tail = (res.stderr or upd.stderr or res.stdout).strip().splitlines()[-3:]
            raise PostgresUnavailable("apt-get install postgresql failed: " + " | ".join(tail))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class TemporaryPostgres:
    """A throw-away cluster: ``start()`` returns the URL of a fresh database, ``stop()`` removes it all."""

    install: bool = True
    root: Path | None = None
    port: int | None = None
    bin_dir: Path | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/triage_test"

    def _as_postgres(self, cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            cmd = [runuser, "-u", "postgres", "--", *cmd] if runuser else ["su", "postgres", "-s", "/bin/sh", "-c",
                                                                          " ".join(map(_sh_quote, cmd))]
        return _run(cmd, timeout=timeout, cwd="/")

    def start(self) -> str:
        self.bin_dir = find_pg_bin()
        if self.bin_dir is None:
            if not self.install:
                raise PostgresUnavailable("PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin)")
            install_postgres()
            self.bin_dir = find_pg_bin()
            if self.bin_dir is None:
                raise PostgresUnavailable("apt-get installed postgresql but no pg_ctl was found")
        self.root = Path(tempfile.mkdtemp(prefix="triage-pg-"))
        data, sock = self.root / "data", self.root / "sock"
        sock.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(sock, "postgres", "postgres")
        os.chmod(self.root, 0o755)
        res = self._as_postgres([str(self.bin_dir / "initdb"), "-D", str(data), "-U", "postgres",
                                 "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"], timeout=180)
        if res.returncode != 0:
            raise PostgresUnavailable("initdb failed: " + _tail(res))
        last = ""
        for _ in range(3):  # the free port may be taken between probing and binding
            self.port = free_port()
            opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {sock} "
                    "-c max_connections=200 -c shared_buffers=128MB")
            res = self._as_postgres([str(self.bin_dir / "pg_ctl"), "-D", str(data), "-l", str(self.root / "log"),
                                     "-o", opts, "-w", "-t", "60", "start"], timeout=90)
            if res.returncode == 0:
                break
            last = _tail(res) + " " + _log_tail(self.root / "log")
        else:
            raise PostgresUnavailable("pg_ctl start failed: " + last)
        res = self._as_postgres([str(self.bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                                 "-U", "postgres", "triage_test"])
        if res.returncode != 0:
            self.stop()
            raise PostgresUnavailable("createdb failed: " + _tail(res))
        return self.url

    def stop(self) -> None:
        if self.root is None:
            return
        if self.bin_dir is not None and (self.root / "data" / "postmaster.pid").exists():
            self._as_postgres([str(self.bin_dir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "fast",
                               "-w", "stop"], timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None


def _sh_quote(s: str) -> str:
    return "'" + s.replace("'", "'\"'\"'") + "'"


def _tail(res: subprocess.CompletedProcess[str]) -> str:
    text = (res.stderr or res.stdout or "").strip().splitlines()
    return " | ".join(text[-3:]) or f"exit code {res.returncode}"


def _log_tail(path: Path) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-3:])
    except OSError:
        return ""


def with_search_path(url: str, schema: str) -> str:
    """``url`` whose sessions see ``schema`` first (libpq ``options=-c search_path=...``)."""
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options={quote(f'-c search_path={schema}')}"


def _redact(url: str) -> str:
    from triage.router.ledger.store import redact_url

    return redact_url(url)


def loud_skip(reason: str) -> None:
    msg = f"PostgreSQL tests SKIPPED: {reason}"
    print(f"\n{'!' * 78}\n!! {msg}\n{'!' * 78}", file=sys.__stderr__, flush=True)
    warnings.warn(msg, stacklevel=2)
    pytest.skip(msg)


# --- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str | PostgresUnavailable]:
    """URL of a server database for the session, or the reason there is none."""
    url = os.environ.get(ENV_URL)
    if url:
        yield url
        return
    server = TemporaryPostgres(install=True)
    try:
        url = server.start()
    except (PostgresUnavailable, OSError, subprocess.SubprocessError) as exc:
        server.stop()
        yield PostgresUnavailable(str(exc))
        return
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: str | PostgresUnavailable) -> Iterator[str]:
    """A URL whose tables live in a fresh schema, dropped after the test."""
    if isinstance(postgres_server, PostgresUnavailable):
        loud_skip(str(postgres_server))
    import psycopg

    schema = f"triage_t_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(str(postgres_server), autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
    except psycopg.Error as exc:
        loud_skip(f"cannot reach PostgreSQL at {_redact(str(postgres_server))}: {exc}")
    yield with_search_path(str(postgres_server), schema)
    try:
        with psycopg.connect(str(postgres_server), autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    except psycopg.Error:
        pass

