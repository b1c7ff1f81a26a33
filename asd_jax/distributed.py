"""``--distributed``: one run over several processes (hosts), with JAX's own machinery.

Every process runs the same program (``launch.py ... --distributed``): it calls ``jax.distributed.initialize``
(coordinator address, process count and id from the flags, or from the cluster's environment where JAX detects one:
SLURM, Open MPI, TPU pods), reads the same clips and extracts the same features (same seeds, same split; a shared
feature cache is built by one process while the others wait for it), and takes part in every compiled program: the
member axis of :mod:`asd_jax.train.ensemble` spans ``jax.devices()``, every process's devices. Arrays that span
processes are built with ``jax.make_array_from_process_local_data`` from the copy every process holds; the few small
values the host needs (losses, finite flags, scores) come back with ``multihost_utils.process_allgather``.

Only process 0 (:func:`is_primary`) takes the run lock and writes run files (config, curve, TensorBoard events,
normaliser, results, scores, sweep and summary tables); every process takes part in the Orbax checkpoint saves and
restores (Orbax's multi-host mode), and process 0 seals each step with the file manifest after a barrier.

A process that fails ends at once with ``os._exit`` (:func:`fail_together`): a normal exit would run JAX's
``jax.distributed.shutdown`` at exit, a barrier that waits for the other processes while they wait in a collective
for this one. The others then fail in their next collective ("Connection closed by peer" from gloo) or, when the
coordinator (process 0) is gone, are ended by JAX's distributed service at once; a process that dies while another
waits in a key-value barrier is detected by the service's heartbeat timeout (JAX's default, 100 s).

Everything here is the identity (or a no-op) in a single-process run, which never calls
``jax.distributed.initialize``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
import zlib
from typing import Any

import jax
import numpy as np

log = logging.getLogger(__name__)


def initialize_args(coordinator_address: str | None = None, num_processes: int | None = None,
                    process_id: int | None = None) -> dict:
    """The keyword arguments of ``jax.distributed.initialize`` for these flags: only the ones given, so that JAX
    detects the rest from the cluster's environment (as a bare ``jax.distributed.initialize()`` does)."""
    if num_processes is not None and num_processes < 1:
        raise ValueError(f"--num_processes={num_processes}: give a positive count")
    if process_id is not None and (process_id < 0 or (num_processes is not None and process_id >= num_processes)):
        raise ValueError(f"--process_id={process_id}: give an id in 0 .. --num_processes - 1")
    if coordinator_address and ":" not in coordinator_address:
        raise ValueError(f"--coordinator_address={coordinator_address!r}: give host:port (e.g. 10.0.0.1:1234)")
    given = {"coordinator_address": coordinator_address or None, "num_processes": num_processes,
             "process_id": process_id}
    return {key: value for key, value in given.items() if value is not None}


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """``jax.distributed.initialize`` with :func:`initialize_args`; then every process starts its backend (the
    device exchange), so that a process failing later finds the others in a collective, not in the start-up."""
    jax.distributed.initialize(**initialize_args(coordinator_address, num_processes, process_id))
    devices = jax.devices()  # starts the backend: every process's devices are exchanged here
    log.info("process %d of %d: %d local of %d devices", jax.process_index(), jax.process_count(),
             jax.local_device_count(), len(devices))
    if jax.process_index() != 0:  # process 0 tells the run ("wrote results.json ..."); the others keep stderr
        print(f"process {jax.process_index()} of {jax.process_count()}: its standard output is dropped (process 0 "
              "prints the run); warnings and errors still come here", file=sys.stderr)
        sys.stdout = open(os.devnull, "w")


def multiprocess() -> bool:
    """Whether this run spans several processes (``jax.distributed`` initialised with more than one)."""
    return jax.distributed.is_initialized() and jax.process_count() > 1


def process_index() -> int:
    """This process's index (0 without ``jax.distributed``; never starts a backend by itself)."""
    return jax.process_index() if jax.distributed.is_initialized() else 0


def is_primary() -> bool:
    """Whether this process writes the run's files (process 0; always, in a single-process run)."""
    return process_index() == 0


def to_host(tree: Any) -> Any:
    """The full values of a pytree of arrays as numpy arrays, on every process: ``np.asarray`` where this process
    holds the whole array (one process, or a replicated array), ``multihost_utils.process_allgather`` where the
    array is spread over processes (a collective: every process must call it). Meant for small values."""
    from jax.experimental import multihost_utils

    def fetch(leaf):
        if isinstance(leaf, jax.Array) and not (leaf.is_fully_addressable or leaf.is_fully_replicated):
            return multihost_utils.process_allgather(leaf, tiled=True)
        return np.asarray(leaf)

    return jax.tree.map(fetch, tree)


def to_global(tree: Any, sharding) -> Any:
    """A pytree of arrays every process holds in full (same seeds, same data) as global arrays with ``sharding``:
    each device gets its part (``jax.make_array_from_process_local_data`` with the full global shape)."""

    def place(leaf):
        if isinstance(leaf, jax.Array) and leaf.sharding == sharding:
            return leaf
        host = to_host(leaf)
        return jax.make_array_from_process_local_data(sharding, host, host.shape)

    return jax.tree.map(place, tree)


def like(tree: Any, reference: jax.Array) -> Any:
    """``tree`` (host or local arrays) replicated over the devices of ``reference`` when that spans processes (to
    pass next to it into a compiled program); else ``tree`` unchanged."""
    from jax.sharding import NamedSharding, PartitionSpec

    sharding = getattr(reference, "sharding", None)
    if not isinstance(sharding, NamedSharding) or not sharding.mesh.is_multi_process:
        return tree
    return to_global(tree, NamedSharding(sharding.mesh, PartitionSpec()))


def barrier(name: str) -> None:
    """Wait until every process got here (``multihost_utils.sync_global_devices``); a no-op on one process."""
    if multiprocess():
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def check_same(text: str, what: str) -> None:
    """Raise ValueError on every process when the processes hold different ``text`` (e.g. their settings:
    processes that ran different programs would wait for each other's collectives for ever)."""
    if not multiprocess():
        return
    from jax.experimental import multihost_utils

    checksums = multihost_utils.process_allgather(np.asarray(zlib.crc32(text.encode()), np.uint32)).tolist()
    if len(set(checksums)) > 1:
        differ = [index for index, value in enumerate(checksums) if value != checksums[0]]
        raise ValueError(f"the processes of this --distributed run were given different {what} (process 0 and "
                         f"process(es) {', '.join(map(str, differ))} differ): give every process the same flags")


def all_agree(flag: bool) -> bool:
    """Whether ``flag`` is true on every process (a collective on several processes; ``flag`` on one)."""
    if not multiprocess():
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(np.all(multihost_utils.process_allgather(np.asarray(bool(flag), np.int32))))


@contextlib.contextmanager
def primary_lock(directory: str):
    """The run lock of ``directory`` (:class:`asd_jax.runlock.RunLock`), taken by process 0 only; every process
    waits until it holds it, so no process works on a directory another run holds."""
    from asd_jax.runlock import RunLock

    with RunLock(directory) if is_primary() else contextlib.nullcontext():
        barrier("asd_jax: run directory locked")
        yield


@contextlib.contextmanager
def fail_together():
    """Around a process's work in a multi-process run: any error (or ``sys.exit`` with a message) is reported with
    this process's index and ends the process at once with ``os._exit(1)``, skipping JAX's shutdown barrier, so that
    the other processes fail in their next collective instead of waiting for this one (see the module docstring)."""
    try:
        yield
    except SystemExit as stop:
        if stop.code in (None, 0):
            raise
        _abort(stop.code if isinstance(stop.code, str) else f"exit status {stop.code}",
               stop.code if isinstance(stop.code, int) else 1)
    except BaseException:  # noqa: BLE001 - every failure must end this process, or the others wait for it
        traceback.print_exc()
        _abort("failed (traceback above)", 1)


def _abort(message: str, code: int) -> None:
    if jax.distributed.is_initialized():
        where = f"process {process_index()} of {jax.process_count()}"
        message = f"{where}: {message}\n{where}: ending now, so that the other processes stop too"
    print(message, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code or 1)
