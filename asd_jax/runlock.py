"""One process per work directory: an OS file lock on ``<directory>/.lock``.

Two runs writing the same checkpoints and curves interleave them into a state neither run produced. :class:`RunLock`
takes ``fcntl.flock`` (exclusive, non-blocking) on the lock file and keeps it for the life of the lock; the kernel
drops it when the process ends, however it ends, so a crashed or SIGKILLed run never blocks a later one. The file
holds JSON ``{pid, host, started, argv}`` of the holder, only to say who holds it (or held it: a holder that died
without releasing leaves its details, and the next run logs that it took over a stale lock).

On network filesystems Linux implements ``flock`` with NFS byte-range locks, so the lock also holds across hosts
when the filesystem supports locking. Where it does not (``flock`` fails with ENOLCK/EOPNOTSUPP), acquiring logs a
warning and falls back to the holder details: a live PID on this host is refused, a holder on another host cannot be
checked and is taken over with a warning.

The lock file is never deleted: a process could still hold the old file's lock while a new run locks a new file of
the same name. Releasing empties it and unlocks. Acquiring a directory this process already holds (through any
RunLock) raises :class:`LockHeldError`: a nested run on the same directory is a bug, not something to allow
silently. Processes forked while the lock is held (e.g. data-loader workers) share it until they exit.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import logging
import os
import socket
import sys
import threading
import time

log = logging.getLogger(__name__)

_held_here: set[str] = set()  # real paths of the lock files this process holds
_held_guard = threading.Lock()
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class LockHeldError(Exception):
    """Another live run holds the work directory; the message names it (PID, host, start, command) and the fix."""


class RunLock:
    """Exclusive lock on a work directory for the life of a run; a context manager (``with RunLock(workdir):``)."""

    def __init__(self, directory: str, name: str = ".lock"):
        self.directory = os.path.abspath(directory)
        self.path = os.path.join(self.directory, name)
        self._fd: int | None = None
        self._key: str | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> RunLock:
        """Take the lock (creating the directory if needed) or raise LockHeldError at once."""
        os.makedirs(self.directory, exist_ok=True)
        key = os.path.realpath(self.path)
        with _held_guard:
            if self._fd is not None or key in _held_here:
                raise LockHeldError(f"{self.directory} is already locked by this process (PID {os.getpid()}): "
                                    f"release that RunLock first, or use another --workdir")
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                previous = self._lock(fd)
                if previous:
                    log.warning("stale lock of %s taken over (%s)", _describe(previous), self.path)
                _write(fd, {"pid": os.getpid(), "host": socket.gethostname(),
                            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                            "argv": list(sys.argv)})
            except BaseException:
                os.close(fd)
                raise
            self._fd, self._key = fd, key
            _held_here.add(key)
        return self

    def release(self) -> None:
        """Empty the holder details and unlock; a no-op when not held."""
        with _held_guard:
            if self._fd is None:
                return
            try:
                os.ftruncate(self._fd, 0)
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                _held_here.discard(self._key)
                self._fd = self._key = None

    def _lock(self, fd: int) -> dict | None:
        """flock ``fd``; return the details a dead holder left behind (None when the file was empty)."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeldError(self._held_message(_read_holder(fd, wait_s=1.0))) from None
        except OSError as error:
            if error.errno not in _UNSUPPORTED:
                raise
            return self._without_flock(fd, error)
        return _read_holder(fd)

    def _without_flock(self, fd: int, error: OSError) -> dict | None:
        log.warning("file locks are not supported for %s (%s): relying on the holder details only", self.path,
                    os.strerror(error.errno))
        holder = _read_holder(fd)
        if holder and holder.get("host") == socket.gethostname() and _alive(holder.get("pid")):
            raise LockHeldError(self._held_message(holder))
        return holder

    def _held_message(self, holder: dict | None) -> str:
        here = socket.gethostname()
        if not holder:
            who = "another process (it has not written its details yet)"
            stop = ""
        else:
            who = _describe(holder)
            stop = (f"stop it (kill {holder.get('pid')}" + ("" if holder.get("host") == here else
                                                           f" on host {holder.get('host')}") + "), ")
        return (f"work directory {self.directory} is in use by {who}. Wait for that run to finish, {stop}or use "
                f"another --workdir. Lock file: {self.path}")


def _describe(holder: dict) -> str:
    argv = holder.get("argv")
    command = " ".join(map(str, argv)) if isinstance(argv, list) else "?"
    return (f"PID {holder.get('pid', '?')} on host {holder.get('host', '?')} (started {holder.get('started', '?')}, "
            f"command: {command})")


def _read_holder(fd: int, wait_s: float = 0.0) -> dict | None:
    """The JSON holder details in the lock file; None when empty. A new holder writes them just after locking,
    so a reader that lost the race waits up to ``wait_s`` for them to appear."""
    deadline = time.monotonic() + wait_s
    while True:
        raw = os.pread(fd, 1 << 16, 0)
        if raw.strip():
            try:
                holder = json.loads(raw)
                if isinstance(holder, dict):
                    return holder
            except ValueError:
                pass
        if time.monotonic() >= deadline:
            return {"pid": "?", "host": "?", "started": "?", "argv": [f"<unreadable lock file: {raw[:80]!r}>"]} \
                if raw.strip() else None
        time.sleep(0.05)


def _write(fd: int, holder: dict) -> None:
    data = (json.dumps(holder) + "\n").encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
