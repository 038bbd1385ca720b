"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Write to a temporary file in the same directory, fsync, then `os.replace` (atomic on
POSIX). A process killed mid-write leaves only a stray `.tmp-*` file, which is removed the
next time the same path is written. `mkstemp` creates the temporary file with mode 0600;
it is changed to what `open()` would have given (0666 minus the umask, e.g. 0644 under
umask 022) so model files, bitstreams and images stay readable to a group or a web server.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-{os.getpid()}-")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _umask() -> int:
    """The process umask (reading it means setting it; it is restored at once)."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def _remove_stale_temps(path: Path) -> None:
    """Delete temp files of `path` left by writers that no longer run (killed mid-write)."""
    prefix = f".{path.name}.tmp-"
    for temp in path.parent.glob(prefix + "*"):
        pid = temp.name[len(prefix):].split("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            temp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
