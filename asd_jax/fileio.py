"""The file mechanisms every writer shares: files replaced whole or not at all, blocking exclusive locks, and the
on-disk caches (their root folder, their keys, and their entries: data files plus an index written last, with a
checksum and a build lock).

Pure Python and NumPy, no JAX: the data layer uses it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any, ClassVar, TypeVar

import numpy as np

try:
    import fcntl
except ImportError:  # no file locks on this platform (Windows): file_lock is a no-op
    fcntl = None

log = logging.getLogger(__name__)

CACHE_DIR_ENV = "ASD_JAX_CACHE_DIR"

T = TypeVar("T")


# ----------------------------------------------------------------------------------------------------------------------
# Atomic writes.


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = ".tmp") -> Iterator[str]:
    """The temporary path ``path + suffix`` (same folder) to write in the block; renamed over ``path`` when the block
    ends, removed when it raises. Readers, and a kill at any moment, see the old ``path`` or the new one, never half
    of one. For writers that want a path (``np.memmap``, ``soundfile.write``); :func:`atomic_open` gives a handle."""
    temporary = path + suffix
    try:
        yield temporary
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise
    os.replace(temporary, path)


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w", suffix: str = ".tmp", **kwargs) -> Iterator[IO]:
    """``open(path, mode, **kwargs)`` through :func:`atomic_path`: the handle writes the temporary file, which
    replaces ``path`` once the block ends and the handle is closed (and is removed when the block raises)."""
    if not mode.startswith("w"):
        raise ValueError(f"atomic_open({path!r}, mode={mode!r}): a file is replaced whole, so give a write mode "
                         "('w' or 'wb')")
    with atomic_path(path, suffix) as temporary, open(temporary, mode, **kwargs) as handle:
        yield handle


def atomic_write_json(path: str, payload: Any, suffix: str = ".tmp", **json_kwargs) -> None:
    """``json.dump(payload, ..., **json_kwargs)`` into ``path`` through :func:`atomic_open`."""
    with atomic_open(path, "w", suffix) as handle:
        json.dump(payload, handle, **json_kwargs)


# ----------------------------------------------------------------------------------------------------------------------
# Locks.


@contextlib.contextmanager
def file_lock(path: str) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if missing, never deleted) for the block: another process, or
    another thread of this one, that asks for it waits until the block ends. It runs unguarded where there are no
    file locks (no ``fcntl``) and, with a warning, on a filesystem that refuses them.

    For work done once by whoever comes first (building a cache entry); a run's own lock on its work directory,
    which refuses a second holder instead of waiting, is :class:`asd_jax.runlock.RunLock`."""
    if fcntl is None:
        yield
        return
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError as error:  # e.g. a network filesystem without locks: go on unguarded
            log.warning("no file lock on %s (%s): going on without it", path, error)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(handle, fcntl.LOCK_UN)


# ----------------------------------------------------------------------------------------------------------------------
# On-disk caches.


def cache_root(cache_dir: str | None = None) -> str:
    """The root of the on-disk caches: ``cache_dir``, else ``$ASD_JAX_CACHE_DIR``, else ``~/.cache/asd_jax``."""
    return cache_dir or os.environ.get(CACHE_DIR_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "asd_jax")


def cache_key(paths: Sequence[str], settings: dict) -> str:
    """Hash of the clip list (path, size, mtime) and the extraction ``settings``: a change of either is a new key."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for path in paths:
        stat = os.stat(path) if os.path.exists(path) else None
        digest.update(f"{os.path.abspath(path)}|{stat and stat.st_size}|{stat and stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def sample_rows(num_rows: int) -> list[int]:
    """Rows whose checksum guards against corruption: up to 64 spread over the array, first and last included."""
    return sorted(set(np.linspace(0, num_rows - 1, num=min(num_rows, 64)).astype(int).tolist())) if num_rows else []


def sampled_checksum(array: np.ndarray) -> int:
    """CRC32 of the :func:`sample_rows` of ``array`` (rows along its first axis): cheap on a memory map, and with the
    file size it catches truncation and most damage."""
    crc = 0
    for row in sample_rows(len(array)):
        crc = zlib.crc32(np.ascontiguousarray(array[row]).tobytes(), crc)
    return crc


@dataclasses.dataclass(frozen=True)
class CacheEntry:
    """One entry of an on-disk cache: the folder ``<root>/<kind>/<key>`` holding data files and a JSON index.

    A build removes the index first (:meth:`clear`), writes the data, and writes the index last, atomically
    (:meth:`write_index`), with the key and, by convention, ``"checksum"``: the :func:`sampled_checksum` of the
    data. A reader takes the entry only when the index names the key (:meth:`read_index`) and the checksum matches
    (:meth:`intact`), so a half-written, truncated or damaged entry is rebuilt, never read. One process builds an
    entry at a time (:meth:`load_or_build`, a :func:`file_lock` on ``<folder>.lock``): a concurrent caller waits,
    then reads what the first one built.
    """

    directory: str
    key: str
    INDEX: ClassVar[str] = "index.json"

    @classmethod
    def under(cls, root: str, kind: str, key: str) -> CacheEntry:
        return cls(os.path.join(root, kind, key), key)

    def file(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def read_index(self) -> dict | None:
        """The index when it exists, parses and names this entry's key; else None."""
        try:
            with open(self.file(self.INDEX)) as handle:
                index = json.load(handle)
        except (OSError, ValueError):
            return None
        return index if isinstance(index, dict) and index.get("key") == self.key else None

    @staticmethod
    def intact(index: dict, data: np.ndarray) -> bool:
        """Whether ``data`` has the checksum the index recorded for it."""
        return index.get("checksum") == sampled_checksum(data)

    def clear(self, *names: str) -> None:
        """Remove the index, then the data files ``names``: the entry is invalid until :meth:`write_index`."""
        for name in (self.INDEX, *names):
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.file(name))

    def write_index(self, fields: dict) -> None:
        """Write the index ``{"key": ..., **fields}`` atomically, after the data: the entry becomes valid."""
        atomic_write_json(self.file(self.INDEX), {"key": self.key, **fields})

    def load_or_build(self, load: Callable[[], T | None], build: Callable[[], T]) -> T:
        """``load()`` when it finds a valid entry, else ``build()`` under the entry's build lock, after a second
        ``load()`` (another process may have built the entry while this one waited for the lock)."""
        if (found := load()) is not None:
            return found
        os.makedirs(self.directory, exist_ok=True)
        with file_lock(self.directory + ".lock"):
            if (found := load()) is not None:
                return found
            return build()
