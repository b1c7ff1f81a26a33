"""Orbax checkpoints that are verified on restore and fall back past a damaged newest one.

A run killed or a disk filled mid-training can leave the newest checkpoint damaged while the one before it is intact.
:class:`Checkpoints` restores the newest checkpoint that passes verification, skips (with one warning line each)
the newer ones that do not, and moves those aside so the resumed run can save their steps again.

Layout: the standard single-item Orbax layout (``<directory>/<step>/default/...``) that a plain
``ocp.CheckpointManager`` with ``StandardSave``/``StandardRestore`` reads too. Each step also carries a manifest in
its ``_CHECKPOINT_METADATA`` (Orbax's ``custom_metadata``, committed atomically with the step): every leaf's path,
shape, dtype and the CRC32 of its bytes, plus a CRC32 of the manifest itself.

What Orbax 0.12.8 / TensorStore detect by themselves (tested): a truncated, emptied or deleted data file (OCDBT
reports a bad byte range or a broken zstd stream), a deleted or garbled ``default/_METADATA`` or
``default/manifest.ocdbt``, a step folder without its ``default`` item (empty or half-copied), a shape that differs
from the requested one. What they do NOT detect: bytes overwritten inside a data file where they decompress to
other values (restored silently as garbage), and a dtype that differs from the requested one (silently cast).
What this module adds: a manifest of every file's size and CRC32, written after Orbax commits the step
(``asd_jax_files.json``) and checked before Orbax reads it, so a truncated, changed or missing file is reported in
one line without TensorStore ever touching it; the CRC32 check of every restored leaf (catches the silent garbage), a dtype, shape and
tree-structure check against ``like`` before reading any data (a settings mismatch raises
:class:`CheckpointMismatchError` at once instead of falling back or casting), and a step without a valid manifest
(``_CHECKPOINT_METADATA`` deleted or garbled, or a checkpoint written by plain Orbax) counts as damaged. Not
detected: damage that leaves the bytes Orbax reads unchanged (e.g. in ``_sharding`` or ``array_metadatas``, which
Orbax does not need to restore), and a deliberate edit that rewrites data and manifest consistently.

A save killed mid-way leaves ``<step>.orbax-checkpoint-tmp*`` folders; Orbax never lists them as steps and removes
them when the manager opens (``cleanup_tmp_directories``), which assumes one writer per directory (see
:mod:`asd_jax.runlock`).

Damaged steps are moved, not deleted, to ``<directory>/corrupt/<step>-<UTC time>/`` (with a ``reason.txt``) once an
older step has restored: deleting could destroy a checkpoint that failed only transiently (a network filesystem
hiccup) and the evidence of what went wrong; leaving it in place would make Orbax refuse to save that step again,
and ``max_to_keep`` would count it. When no step restores nothing is moved.

Over several processes (:mod:`asd_jax.distributed`) every process calls :meth:`Checkpoints.save` and
:meth:`Checkpoints.restore_latest`: Orbax's multi-host mode writes each process's shards and process 0 finalises the
step; after a barrier process 0 writes the file manifest, and a second barrier keeps every process from going on
before the step is sealed. Every process verifies what it restores, and a step counts as restored only when it does
on every process (one damaged view skips the step everywhere, so no process trains from another step); process 0
alone moves damaged steps aside. The leaf checksums gather arrays spread over processes
(``multihost_utils.process_allgather``), so they are the same on every process count.

A failed Orbax restore leaves echoes behind (page-long "Exception ignored in coroutine" reports and "Event loop is
closed" errors from TensorStore threads, at unpredictable later times); the first restore installs a process-wide
``sys.unraisablehook`` that drops exactly those and passes every other unraisable error on.
"""

from __future__ import annotations

import datetime
import gc
import json
import logging
import os
import re
import sys
import zlib
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
import tensorstore as ts

from asd_jax import distributed, fileio

log = logging.getLogger(__name__)

_MANIFEST_KEY = "asd_jax_checksums"
_FILE_MANIFEST = "asd_jax_files.json"
_CORRUPT_DIR = "corrupt"
_echo_filter_installed = False
_STATUS = re.compile(r"\b(?:DATA_LOSS|OUT_OF_RANGE|NOT_FOUND|INVALID_ARGUMENT|FAILED_PRECONDITION|INTERNAL|UNKNOWN|"
                     r"UNAVAILABLE|PERMISSION_DENIED|RESOURCE_EXHAUSTED|ABORTED):.*")


class CheckpointError(Exception):
    """No checkpoint in the directory can be used; the message names the folder and the fix."""


class CheckpointMismatchError(CheckpointError, ValueError):
    """The newest intact checkpoint holds a different tree, shapes or dtypes than requested: other settings."""


class _Unrestorable(Exception):
    """One step failed verification or reading; the message is a one-line reason."""


class _Unfinished(_Unrestorable):
    """A step Orbax committed but this module never sealed with its file manifest: the process was killed between
    the two. It holds no more than a save that never happened, so it is set aside, not reported as damage."""


class Checkpoints:
    """Synchronous Orbax checkpoints of one pytree state in ``directory``, keeping the newest ``max_to_keep``.

    ``read_only=True`` (for scoring from a finished run) never saves and never moves damaged steps aside.
    """

    def __init__(self, directory: str, max_to_keep: int = 2, read_only: bool = False):
        self.directory = os.path.abspath(directory)
        self.read_only = read_only
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=not read_only,
                                               enable_async_checkpointing=False,
                                               cleanup_tmp_directories=not read_only, read_only=read_only)
        self._manager = ocp.CheckpointManager(self.directory, options=options,
                                              item_handlers=ocp.StandardCheckpointHandler())

    def __enter__(self) -> Checkpoints:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._manager.close()

    def step_dir(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def steps(self) -> list[int]:
        """The saved steps on disk, ascending (damaged ones included until :meth:`restore_latest` moves them)."""
        self._manager.reload()
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any) -> None:
        """Save ``state`` (a pytree of arrays) as ``step`` and wait until it is committed."""
        if self.read_only:
            raise CheckpointError(f"{self.directory} was opened read-only: cannot save step {step}")
        if os.path.exists(self.step_dir(step)):
            raise CheckpointError(f"checkpoint {self.step_dir(step)} already exists: a run resumed from an older "
                                  f"step must not overwrite a newer one; delete that folder or use another --workdir")
        manifest = _manifest(state)
        saved = self._manager.save(step, args=ocp.args.StandardSave(state),
                                   custom_metadata={_MANIFEST_KEY: manifest}, force=True)
        self._manager.wait_until_finished()
        if not saved:
            raise CheckpointError(f"Orbax declined to save step {step} in {self.directory}")
        distributed.barrier(f"asd_jax: checkpoint {step} committed")  # every process's shards are in place
        if distributed.is_primary():
            _write_file_manifest(self.step_dir(step))
        distributed.barrier(f"asd_jax: checkpoint {step} sealed")

    def restore_latest(self, like: Any) -> tuple[int | None, Any]:
        """(step, state) of the newest checkpoint that restores and verifies; (None, None) when there is none.

        ``like`` is a pytree of arrays (or of ``jax.ShapeDtypeStruct``: nothing need be computed for a target whose
        every value the restore replaces) with the expected structure, shapes, dtypes and shardings. Each newer step
        that fails is skipped with one warning line naming its folder and the reason, and moved aside once an older
        one restores. Raises :class:`CheckpointMismatchError` when the newest intact step was saved with other
        shapes or dtypes, and :class:`CheckpointError` when steps exist but none restores.
        """
        steps = self.steps()
        if not steps:
            return None, None
        expected = _describe(like)
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), like)
        skipped: list[tuple[int, str, bool]] = []
        for step in reversed(steps):
            try:
                state, error = self._restore(step, expected, abstract), None
            except _Unrestorable as caught:
                error = caught
            if not distributed.all_agree(error is None) and error is None:  # several processes: all or none
                error = _Unrestorable("another process could not restore it (see that process's log)")
            if error is not None:
                log.warning("skipping checkpoint %s: %s", self.step_dir(step), error)
                skipped.append((step, str(error), isinstance(error, _Unfinished)))
                continue
            for bad_step, reason, _ in skipped:
                self._move_aside(bad_step, reason)
            if skipped:
                distributed.barrier("asd_jax: damaged checkpoints moved aside")
                self._manager.reload()
            return step, state
        if all(unfinished for _, _, unfinished in skipped):  # only saves killed before they were sealed
            for bad_step, reason, _ in skipped:
                self._move_aside(bad_step, reason)
            distributed.barrier("asd_jax: unfinished checkpoints moved aside")
            self._manager.reload()
            return None, None
        details = "; ".join(f"step {s}: {reason}" for s, reason, _ in skipped)
        raise CheckpointError(f"no checkpoint in {self.directory} restores ({details}). Delete {self.directory} to "
                              f"train from scratch, or use another --workdir")

    def _restore(self, step: int, expected: list[dict], abstract: Any) -> Any:
        _check_file_manifest(self.step_dir(step))  # before Orbax reads a byte: damaged files never reach TensorStore
        manifest = self._read_manifest(step)
        _check_matches(manifest, expected, self.step_dir(step))
        try:
            _filter_failed_read_echoes()
            state = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except Exception as error:  # Orbax and TensorStore raise many types for damaged files
            gc.collect()  # report the abandoned reads' echoes (to the filter) now rather than at some later time
            raise _Unrestorable(_reason(error)) from error
        checksums = {entry["path"]: entry["crc32"] for entry in manifest}
        for path, leaf in jax.tree.leaves_with_path(state):
            if _crc32(leaf) != checksums[jax.tree_util.keystr(path)]:
                raise _Unrestorable(f"checksum mismatch in {jax.tree_util.keystr(path)}: the data is damaged")
        return state

    def _read_manifest(self, step: int) -> list[dict]:
        try:
            custom = self._manager.metadata(step).custom_metadata or {}
        except Exception as error:
            raise _Unrestorable(f"unreadable step metadata ({_reason(error)})") from error
        manifest = custom.get(_MANIFEST_KEY)
        if not isinstance(manifest, dict) or "leaves" not in manifest:
            raise _Unrestorable("no checksum manifest (_CHECKPOINT_METADATA missing or garbled, a save that never "
                                "finished, or a checkpoint not written by asd_jax.train.checkpoints)")
        if manifest.get("crc32") != _json_crc32(manifest["leaves"]):
            raise _Unrestorable("the checksum manifest itself is damaged")
        return manifest["leaves"]

    def _move_aside(self, step: int, reason: str) -> None:
        if self.read_only or not distributed.is_primary():
            return
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        target = os.path.join(self.directory, _CORRUPT_DIR, f"{step}-{stamp}")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.rename(self.step_dir(step), target)
        with open(os.path.join(target, "reason.txt"), "w") as handle:
            handle.write(reason + "\n")
        log.warning("moved damaged checkpoint %s to %s", self.step_dir(step), target)


def _step_files(step_dir: str) -> list[str]:
    """Every file of a step folder (relative paths, sorted), the file manifest itself excepted."""
    files = []
    for root, _, names in os.walk(step_dir):
        for name in names:
            relative = os.path.relpath(os.path.join(root, name), step_dir)
            if relative != _FILE_MANIFEST:
                files.append(relative)
    return sorted(files)


def _file_crc32(path: str) -> int:
    crc = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            crc = zlib.crc32(chunk, crc)
    return crc


def _write_file_manifest(step_dir: str) -> None:
    """Size and CRC32 of every file Orbax wrote for a step, written last (atomically): a step without it was never
    finished by this module."""
    files = {name: [os.path.getsize(os.path.join(step_dir, name)), _file_crc32(os.path.join(step_dir, name))]
             for name in _step_files(step_dir)}
    fileio.atomic_write_json(os.path.join(step_dir, _FILE_MANIFEST), {"files": files})


def _check_file_manifest(step_dir: str) -> None:
    """Raise :class:`_Unrestorable` naming the first file that is missing, truncated or changed since the save.

    Checked before Orbax opens the step, because TensorStore's failed reads of a damaged file echo tracebacks from
    its threads long after the error (and, at interpreter exit, past any filter)."""
    path = os.path.join(step_dir, _FILE_MANIFEST)
    try:
        with open(path) as handle:
            files = json.load(handle)["files"]
    except FileNotFoundError:
        raise _Unfinished(f"an unfinished save (no {_FILE_MANIFEST}: killed before it was sealed, or written by "
                          "another program)") from None
    except (OSError, ValueError, KeyError, TypeError):
        raise _Unrestorable(f"its {_FILE_MANIFEST} is damaged") from None
    for name, (size, crc) in files.items():
        file_path = os.path.join(step_dir, name)
        if not os.path.isfile(file_path):
            raise _Unrestorable(f"{name} is missing")
        if os.path.getsize(file_path) != size:
            raise _Unrestorable(f"{name} has {os.path.getsize(file_path)} bytes instead of {size} (truncated)")
        if _file_crc32(file_path) != crc:
            raise _Unrestorable(f"{name} was changed after the save (checksum mismatch)")


def _leaf_bytes(leaf: Any) -> np.ndarray:
    if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.random.key_data(leaf)
    return np.ascontiguousarray(distributed.to_host(leaf)).reshape(-1).view(np.uint8)


def _crc32(leaf: Any) -> int:
    return zlib.crc32(_leaf_bytes(leaf))


def _json_crc32(value: Any) -> int:
    return zlib.crc32(json.dumps(value, sort_keys=True, separators=(",", ":")).encode())


def _describe(tree: Any) -> list[dict]:
    return [{"path": jax.tree_util.keystr(path), "shape": list(np.shape(leaf)), "dtype": str(leaf.dtype)}
            for path, leaf in jax.tree.leaves_with_path(tree)]


def _manifest(state: Any) -> dict:
    leaves = [{**entry, "crc32": _crc32(leaf)} for entry, leaf in zip(_describe(state), jax.tree.leaves(state))]
    return {"version": 1, "leaves": leaves, "crc32": _json_crc32(leaves)}


def _check_matches(manifest: list[dict], expected: list[dict], folder: str) -> None:
    """Raise CheckpointMismatchError when the saved tree, shapes or dtypes differ from the requested ones."""
    saved = {entry["path"]: entry for entry in manifest}
    wanted = {entry["path"]: entry for entry in expected}
    differences = [f"{path}: saved {_spec(saved.get(path))}, expected {_spec(wanted.get(path))}"
                   for path in list(wanted) + [p for p in saved if p not in wanted]
                   if _spec(saved.get(path)) != _spec(wanted.get(path))]
    if differences:
        shown = "; ".join(differences[:3]) + (f"; and {len(differences) - 3} more" if len(differences) > 3 else "")
        raise CheckpointMismatchError(
            f"checkpoint {folder} was saved with other settings ({shown}). Resume with the settings it was trained "
            f"with, or use another --workdir (or delete {os.path.dirname(folder)})")


def _spec(entry: dict | None) -> str:
    return "nothing" if entry is None else f"{entry['dtype']}{tuple(entry['shape'])}"


def _reason(error: BaseException) -> str:
    """One line for a (possibly chained) Orbax/TensorStore error: its status line when it has one."""
    chain, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        chain.append(error)
        error = error.__cause__ or error.__context__
    for candidate in reversed(chain):  # the innermost error says what actually broke
        match = _STATUS.search(str(candidate))
        if match:
            return _shorten(match.group(0))
    first = str(chain[0]).strip().splitlines()
    return _shorten(f"{type(chain[0]).__name__}: {first[0] if first else ''}")


def _shorten(text: str, limit: int = 300) -> str:
    text = re.split(r" \[tensorstore_spec=| See full TensorStore details", text)[0].strip()
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _is_echo_of_a_failed_read(unraisable) -> bool:
    """Whether an unraisable error is a leftover of an Orbax restore that already failed (and was reported).

    When one array fails to read, Orbax raises that error, closes its event loop and abandons the other reads. Each
    abandoned read that fails too is reported at garbage collection ("Exception ignored in: <coroutine
    _read_array_index_and_device_put>", with the whole TensorStore spec), and each TensorStore read still in flight
    reports "Event loop is closed" from its own thread when it completes, at any later time.
    """
    error = unraisable.exc_value
    if "Encountered error while reading array index" in str(error):
        return True
    if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
        frame = unraisable.exc_traceback
        while frame is not None:
            args = frame.tb_frame.f_locals.get("args")
            if isinstance(args, tuple) and any(isinstance(arg, ts.Future) for arg in args):
                return True
            frame = frame.tb_next
    return False


def _filter_failed_read_echoes() -> None:
    """Install (once per process) an unraisable hook that drops only those echoes and passes on everything else.

    It stays installed because the echoes arrive at unpredictable times after the restore returned.
    """
    global _echo_filter_installed
    if _echo_filter_installed:
        return
    previous = sys.unraisablehook

    def hook(unraisable):
        if not _is_echo_of_a_failed_read(unraisable):
            previous(unraisable)

    sys.unraisablehook = hook
    _echo_filter_installed = True
