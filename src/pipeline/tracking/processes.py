"""Which process a run belongs to, and whether that process still lives: how runs of killed processes are found.

A run records ``host/boot/pid namespace/pid/start`` of the process that trains it (tag
``pipeline.process``): the boot id and the process's start time (in clock ticks since boot,
from ``/proc``) tell a reused process id from the original, and the pid namespace tells two
containers that share a host name apart. Only processes of this host, boot and namespace can
be checked; a run of anywhere else is never judged from here.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _stat_fields(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat from the 3rd (the state) on; [] where unknown."""
    # the command name (field 2) may hold spaces and parentheses: the fields after it follow its last ')'
    return _read(f"/proc/{pid}/stat").rpartition(")")[2].split()


def _start_ticks(fields: list[str]) -> str:
    """The process's start time in clock ticks after boot (field 22 of its stat); '' where unknown."""
    return fields[19] if len(fields) > 19 else ""


def _where() -> str:
    """``host/boot id/pid namespace`` of this process: where a process id means one process."""
    try:
        namespace = os.readlink("/proc/self/ns/pid").replace("/", "_")
    except OSError:
        namespace = ""
    return f"{socket.gethostname()}/{_read('/proc/sys/kernel/random/boot_id')}/{namespace}"


def process_identity(pid: int | None = None) -> str:
    """``host/boot id/pid namespace/pid/start ticks`` of a process of this namespace (this one by default)."""
    pid = os.getpid() if pid is None else pid
    return f"{_where()}/{pid}/{_start_ticks(_stat_fields(pid))}"


def is_local(identity: str) -> bool:
    """Whether the process ran on this host, since its last boot, in this pid namespace (only then can it be
    checked)."""
    return identity.rsplit("/", 2)[0] == _where()


def is_alive(identity: str) -> bool:
    """Whether the local process named by ``identity`` still runs (and is the same process, not a reused pid)."""
    parts = identity.split("/")
    if len(parts) != 5 or not parts[3].isdigit():
        return True  # unknown form: never declare it dead
    pid, started = int(parts[3]), parts[4]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    fields = _stat_fields(pid)
    if fields and fields[0] in ("Z", "X"):  # a zombie (killed, not yet reaped by its parent) or dead
        return False
    return not started or _start_ticks(fields) in ("", started)
