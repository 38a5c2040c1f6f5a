"""Which process a run belongs to, and whether that process still lives: how runs of killed processes are found.

A run records ``host/boot/pid/start`` of the process that trains it (tag ``pipeline.process``):
the boot id and the process's start time (in clock ticks since boot, from ``/proc``) tell a
reused process id from the original. Only processes of this host can be checked; a run of
another machine is never judged from here.
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


def _start_ticks(pid: int) -> str:
    """The process's start time in clock ticks after boot (field 22 of /proc/<pid>/stat); '' where unknown."""
    stat = _read(f"/proc/{pid}/stat")
    # the command name (field 2) may hold spaces and parentheses: fields after it follow its last ')'
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else ""


def process_identity(pid: int | None = None) -> str:
    """``host/boot id/pid/start ticks`` of a process (this one by default)."""
    pid = os.getpid() if pid is None else pid
    boot = _read("/proc/sys/kernel/random/boot_id")
    return f"{socket.gethostname()}/{boot}/{pid}/{_start_ticks(pid)}"


def is_local(identity: str) -> bool:
    """Whether the process was started on this host since its last boot (only then can it be checked)."""
    host, boot, *_ = (identity.split("/") + ["", ""])[:4]
    return host == socket.gethostname() and boot == _read("/proc/sys/kernel/random/boot_id")


def is_alive(identity: str) -> bool:
    """Whether the local process named by ``identity`` still runs (and is the same process, not a reused pid)."""
    parts = identity.split("/")
    if len(parts) != 4 or not parts[2].isdigit():
        return True  # unknown form: never declare it dead
    pid, started = int(parts[2]), parts[3]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    fields = _read(f"/proc/{pid}/stat").rpartition(")")[2].split()
    if fields and fields[0] in ("Z", "X"):  # a zombie (killed, not yet reaped by its parent) or dead
        return False
    return not started or _start_ticks(pid) in ("", started)
