"""Throwaway servers on loopback for the tracking tests: a free port, and a PostgreSQL cluster of its own."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no output)"


SERVER_START_TIMEOUT = 120  # seconds; a cold start (imports, schema migration, a model load) takes 5-25 s on 2 cores


@contextlib.contextmanager
def serving(command: list[str], url: str, logs: Path, env: dict[str, str], ready: str = "/health") -> Iterator[str]:
    """Run a server (``mlflow server``, ``mlflow models serve``) in its own process group; yield ``url`` once
    ``url + ready`` answers 200; stop the group after (they run uvicorn as a child)."""
    logs.mkdir(parents=True, exist_ok=True)
    stdout, stderr = logs / "server.out", logs / "server.err"
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        process = subprocess.Popen(
            command, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, cwd=logs, start_new_session=True
        )
    try:
        _wait_until_ready(process, url + ready, stderr)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _wait_until_ready(process: subprocess.Popen, url: str, stderr: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while True:
        if process.poll() is not None:
            command = " ".join(map(str, process.args[:4]))
            pytest.fail(f"{command} exited with code {process.returncode} before answering {url}:\n{tail(stderr)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"no answer from {url} within {SERVER_START_TIMEOUT} s; the server's stderr:\n{tail(stderr)}")
        time.sleep(0.25)


def postgres_bindir() -> Path | None:
    """The folder with initdb, pg_ctl and postgres: pg_config's, Debian's /usr/lib/postgresql/<v>/bin, or PATH."""
    candidates = []
    if shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            result = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True)
            candidates.append(Path(result.stdout.strip()))
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
    )
    candidates += [Path(p) for p in reversed(versions)]
    if shutil.which("initdb"):
        candidates.append(Path(shutil.which("initdb")).resolve().parent)
    for folder in candidates:
        if all((folder / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return folder
    return None


def unprivileged_user() -> pwd.struct_passwd | None:
    """PostgreSQL refuses to run as root: the account to run it as then ('postgres', else 'nobody')."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    pytest.fail("running as root, and neither a 'postgres' nor a 'nobody' account exists to run PostgreSQL as")


@contextlib.contextmanager
def postgres_cluster() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 with an empty database; yields its SQLAlchemy URI."""
    bindir = postgres_bindir()
    if bindir is None:
        pytest.skip(
            "no PostgreSQL server binaries (initdb, pg_ctl, postgres) found via pg_config, "
            "/usr/lib/postgresql/*/bin or PATH; on Debian: apt-get install postgresql"
        )
    user = unprivileged_user()
    # Not under pytest's tmp_path: as root that sits in a 0700 folder the postgres account can't enter.
    root = Path(tempfile.mkdtemp(prefix="mlflow-postgres-"))
    as_user = {}
    if user is not None:
        os.chown(root, user.pw_uid, user.pw_gid)
        as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}

    def run(*command: str) -> None:
        result = subprocess.run(command, capture_output=True, text=True, cwd=root, timeout=120, **as_user)
        if result.returncode != 0:
            pytest.fail(
                f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}\n"
                f"server log:\n{tail(root / 'postgres.log')}"
            )

    data, sockets, port = root / "data", root / "sockets", free_port()
    run(str(bindir / "initdb"), "-D", str(data), "-U", "mlflow", "--auth=trust", "-E", "UTF8", "--no-sync")
    run("mkdir", str(sockets))
    options = f"-h 127.0.0.1 -p {port} -k {sockets} -F"  # loopback only, its own socket folder, no fsync
    run(
        str(bindir / "pg_ctl"),
        "-D",
        str(data),
        "-l",
        str(root / "postgres.log"),
        "-o",
        options,
        "-w",
        "-t",
        "60",
        "start",
    )
    try:
        run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "mlflow", "mlflow")
        yield f"postgresql+psycopg://mlflow@127.0.0.1:{port}/mlflow"  # psycopg 3, the dev extra's driver
    finally:
        subprocess.run(
            [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            cwd=root,
            timeout=60,
            **as_user,
        )
        shutil.rmtree(root, ignore_errors=True)
