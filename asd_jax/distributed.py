"""Where the ensemble's arrays live: the members over the devices (:class:`Layout`), and ``--distributed``, one run
over several processes (hosts) with JAX's own machinery.

Sharding: :func:`plan_layout` spreads the member axis of :mod:`asd_jax.train.ensemble`'s states over the devices
(or, with fewer members than devices, each member's batch), padding it with masked members where the count does
not divide; :func:`place` puts states and features there, :func:`unpad` and :func:`gathered` take the real members
back. On one device all of it is the identity.

Several processes: every process runs the same program (``launch.py ... --distributed``): it calls
``jax.distributed.initialize`` (coordinator address, process count and id from the flags, or from the cluster's
environment where JAX detects one: SLURM, Open MPI, TPU pods), reads the same clips and extracts the same features
(same seeds, same split; a shared feature cache is built by one process while the others wait for it), and takes
part in every compiled program: the member axis spans ``jax.devices()``, every process's devices. Arrays that span
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
import dataclasses
import logging
import os
import sys
import traceback
import zlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from asd_jax.runlock import RunLock

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------------------
# The processes: start-up, which one writes, and arrays between the host and every process's devices.


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
    sharding = getattr(reference, "sharding", None)
    if not isinstance(sharding, NamedSharding) or not sharding.mesh.is_multi_process:
        return tree
    return to_global(tree, NamedSharding(sharding.mesh, PartitionSpec()))


# ----------------------------------------------------------------------------------------------------------------------
# The members over the devices.


@dataclasses.dataclass(frozen=True)
class Layout:
    """How the members of one program spread over the devices, and how a program maps over them. The devices are
    this process's (``jax.local_devices()``), or every process's (``jax.devices()``) in a multi-process run, where
    each process holds its devices' part of the sharded arrays.

    * ``members`` >= devices: the member axis is sharded over all devices (``Mesh`` + ``NamedSharding`` on a
      'members' axis, features replicated); when the count does not divide, the axis is padded with masked members
      (copies of member 0 whose results are dropped) up to ``padded``, never falling back to one device.
    * ``members`` < devices: members are replicated and every member's batch is split over the devices instead
      ('batch' axis; XLA all-reduces the gradients), when the batch size divides; else padding as above.
    * ``member_map``: ``vmap`` batches the members into each matmul; ``map`` runs them one after another inside
      the program (``lax.map``), which on a CPU is faster than vmapping for the recurrent and convolutional
      models (XLA CPU does not turn their batched matmuls into larger GEMMs); the dense AE's large matmuls vmap
      well. ``auto`` takes the model's own choice on one CPU (``WindowModel.cpu_member_map`` of
      :mod:`asd_jax.train.ensemble`), vmap elsewhere.
    """

    members: int
    padded: int
    mesh: Mesh | None = None  # None on one device
    batch_axis: bool = False
    member_map: str = "vmap"

    @property
    def member_sharding(self) -> NamedSharding | None:
        if self.mesh is None:
            return None
        return NamedSharding(self.mesh, PartitionSpec() if self.batch_axis else PartitionSpec("members"))

    @property
    def replicated(self) -> NamedSharding | None:
        return None if self.mesh is None else NamedSharding(self.mesh, PartitionSpec())

    @property
    def window_sharding(self) -> NamedSharding | None:
        """The sharding of one member's window batch [B, L, mels] (split over 'batch'), or None."""
        return NamedSharding(self.mesh, PartitionSpec("batch")) if self.batch_axis else None


MEMBER_MAPS = ("auto", "vmap", "map")


def plan_layout(num_members: int, batch_size: int, member_map: str = "auto", devices=None,
                cpu_member_map: str = "map") -> Layout:
    """The :class:`Layout` of ``num_members`` members with batches of ``batch_size`` on ``devices`` (default: all
    local devices; every process's devices when there are several processes). ``member_map="auto"`` is
    ``cpu_member_map`` on one CPU device (the model's faster way there) and ``vmap`` elsewhere."""
    if member_map not in MEMBER_MAPS:
        raise ValueError(f"member_map={member_map!r}: choose one of {', '.join(MEMBER_MAPS)}")
    if devices is None:
        devices = jax.devices() if jax.process_count() > 1 else jax.local_devices()
    devices = list(devices)
    if member_map == "auto":
        on_one_cpu = devices[0].platform == "cpu" and len(devices) == 1
        # one member: map (a loop of one, batch-free matmuls); vmap over one member made the dense AE 1.6x slower
        member_map = ("map" if num_members == 1 else cpu_member_map) if on_one_cpu else "vmap"
    if len(devices) < 2:
        return Layout(num_members, num_members, member_map=member_map)
    if num_members < len(devices) and batch_size % len(devices) == 0:
        return Layout(num_members, num_members, Mesh(np.array(devices), ("batch",)), True, member_map)
    padded = -(-num_members // len(devices)) * len(devices)
    return Layout(num_members, padded, Mesh(np.array(devices), ("members",)), False, member_map)


def place(states: Any, features: jax.Array, layout: Layout | None = None) -> tuple[Any, jax.Array]:
    """Pad the member axis of ``states`` (a pytree whose every leaf leads with it) to ``layout.padded`` with masked
    copies of member 0, spread it over the devices and replicate ``features`` (a no-op on one device). Over several
    processes every process passes the same full ``states`` and ``features`` and each device gets its part
    (:func:`to_global`)."""
    num_members = int(jax.tree.leaves(states)[0].shape[0])
    layout = layout or plan_layout(num_members, 1, "vmap")
    extra = layout.padded - num_members
    if extra:
        states = jax.tree.map(lambda x: jnp.concatenate([x, jnp.repeat(x[:1], extra, axis=0)]), states)
    if layout.mesh is None:
        return states, features
    if layout.mesh.is_multi_process:
        return to_global(states, layout.member_sharding), to_global(features, layout.replicated)
    return jax.device_put(states, layout.member_sharding), jax.device_put(features, layout.replicated)


def unpad(tree: Any, layout: Layout) -> Any:
    """The real members of a padded member-axis pytree (states, or losses [steps, E] via ``axis``)."""
    if layout.padded == layout.members:
        return tree
    return jax.tree.map(lambda x: x[: layout.members], tree)


def gathered(states: Any, layout: Layout, keep_shards: bool = False) -> Any:
    """The real members' states (:func:`unpad`). Over several processes they are also replicated on every device,
    so that each process holds them whole (for the host and for scoring), unless ``keep_shards`` and no member was
    padded: then they stay spread over the processes as they are (for a checkpoint: Orbax writes each process's
    shards)."""
    if layout.mesh is None or not layout.mesh.is_multi_process:
        return unpad(states, layout)
    if keep_shards and layout.padded == layout.members:
        return states
    return jax.jit(lambda tree: unpad(tree, layout), out_shardings=layout.replicated)(states)


# ----------------------------------------------------------------------------------------------------------------------
# Several processes: barriers, checks, the run lock and failing together.


def barrier(name: str) -> None:
    """Wait until every process got here (``multihost_utils.sync_global_devices``); a no-op on one process."""
    if multiprocess():
        multihost_utils.sync_global_devices(name)


def check_same(text: str, what: str) -> None:
    """Raise ValueError on every process when the processes hold different ``text`` (e.g. their settings:
    processes that ran different programs would wait for each other's collectives for ever)."""
    if not multiprocess():
        return
    checksums = multihost_utils.process_allgather(np.asarray(zlib.crc32(text.encode()), np.uint32)).tolist()
    if len(set(checksums)) > 1:
        differ = [index for index, value in enumerate(checksums) if value != checksums[0]]
        raise ValueError(f"the processes of this --distributed run were given different {what} (process 0 and "
                         f"process(es) {', '.join(map(str, differ))} differ): give every process the same flags")


def all_agree(flag: bool) -> bool:
    """Whether ``flag`` is true on every process (a collective on several processes; ``flag`` on one)."""
    if not multiprocess():
        return bool(flag)
    return bool(np.all(multihost_utils.process_allgather(np.asarray(bool(flag), np.int32))))


@contextlib.contextmanager
def primary_lock(directory: str):
    """The run lock of ``directory`` (:class:`asd_jax.runlock.RunLock`), taken by process 0 only; every process
    waits until it holds it, so no process works on a directory another run holds."""
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
