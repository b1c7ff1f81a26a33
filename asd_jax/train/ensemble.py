"""Train E ensemble members in one compiled program.

Every parameter and optimiser leaf carries a leading member axis. One training step is ``jax.vmap`` of a member's
step; ``lax.scan`` runs ``steps_per_call`` of them per dispatch. The normalised training features live on the device
and each step draws its (clip, start) window indices with ``jax.random`` inside the compiled function, from a key
folded with the member's seed and the global step: no batch crosses from host to device, and a resumed run draws
exactly the windows the uninterrupted run would have drawn.

A member whose loss or gradients stop being finite is frozen (its last finite parameters are kept) and reported;
the others train on.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class WindowModel:
    """A model trained on fixed-length windows of frames, as the trainer sees it.

    ``init(key, window_length, mels)`` returns Flax variables (``params`` and, for BatchNorm, ``batch_stats``);
    ``errors(variables, windows [B, window_length, mels], train)`` returns (per-window error [B], new batch_stats or
    None). The loss is the mean error; a clip's score is the mean error over its windows.
    """

    name: str
    window_length: int
    init: Callable[[jax.Array, int, int], dict]
    errors: Callable[[dict, jax.Array, bool], tuple[jax.Array, Any]]


class MemberState(struct.PyTreeNode):
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    finite: jax.Array  # False once the member hit a NaN/inf loss or gradient; it is frozen from then on
    data_key: jax.Array


@dataclasses.dataclass(frozen=True)
class Member:
    """One ensemble member: its seed and its (shape-free) hyper-parameters."""

    seed: int
    learning_rate: float

    @property
    def name(self) -> str:
        return f"seed{self.seed}_lr{self.learning_rate:g}"


def members_grid(seeds: Sequence[int], learning_rates: Sequence[float]) -> list[Member]:
    """Every (seed, learning rate) pair: a seed sweep, a learning-rate sweep, or both."""
    return [Member(seed, lr) for lr in learning_rates for seed in seeds]


def make_optimizer(learning_rate, grad_clip_norm: float = 0.0) -> optax.GradientTransformation:
    """Adam with an injectable learning rate (one per member), optionally after global-norm clipping."""

    def adam(learning_rate):
        steps = [optax.clip_by_global_norm(grad_clip_norm)] if grad_clip_norm > 0 else []
        return optax.chain(*steps, optax.adam(learning_rate))

    return optax.inject_hyperparams(adam)(learning_rate=learning_rate)


def init_states(model: WindowModel, members: Sequence[Member], mels: int, grad_clip_norm: float = 0.0) -> MemberState:
    """Stacked initial states, member axis first."""

    def init_one(seed, learning_rate):
        init_key, data_key = jax.random.split(jax.random.PRNGKey(seed))
        variables = model.init(init_key, model.window_length, mels)
        params = variables["params"]
        opt_state = make_optimizer(learning_rate, grad_clip_norm).init(params)
        return MemberState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=variables.get("batch_stats"),
                           opt_state=opt_state, finite=jnp.ones((), bool), data_key=data_key)

    seeds = jnp.asarray([m.seed for m in members], jnp.uint32)
    rates = jnp.asarray([m.learning_rate for m in members], jnp.float32)
    return jax.jit(jax.vmap(init_one))(seeds, rates)


def member_sharding(num_members: int):
    """(sharding of member-axis leaves, sharding of shared arrays): members spread over all local devices when
    their count divides evenly, else everything on the default device (None, None)."""
    devices = jax.local_devices()
    if len(devices) < 2 or num_members % len(devices):
        return None, None
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.array(devices), ("members",))
    return NamedSharding(mesh, PartitionSpec("members")), NamedSharding(mesh, PartitionSpec())


def place(states: MemberState, features: jax.Array) -> tuple[MemberState, jax.Array]:
    """Spread the member axis of ``states`` across devices and replicate ``features`` (a no-op on one device)."""
    members, shared = member_sharding(int(states.step.shape[0]))
    if members is None:
        return states, features
    return jax.device_put(states, members), jax.device_put(features, shared)


def sample_windows(key: jax.Array, features: jax.Array, batch_size: int, window_length: int) -> jax.Array:
    """A batch of random windows [B, window_length, mels] gathered on the device from features [N, T, mels]."""
    clip_key, start_key = jax.random.split(key)
    num_clips, num_frames, mels = features.shape
    clips = jax.random.randint(clip_key, (batch_size,), 0, num_clips)
    starts = jax.random.randint(start_key, (batch_size,), 0, num_frames - window_length + 1)
    slice_one = lambda c, s: jax.lax.dynamic_slice(features, (c, s, 0), (1, window_length, mels))[0]
    return jax.vmap(slice_one)(clips, starts)


def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


def make_train_fn(model: WindowModel, batch_size: int, steps_per_call: int, grad_clip_norm: float = 0.0):
    """``train(states, features) -> (states, losses [steps_per_call, E])``: jitted, vmapped, scanned."""
    optimizer = make_optimizer(1e-3, grad_clip_norm)  # the rate in each member's opt_state is the one used

    def member_step(state: MemberState, features: jax.Array):
        windows = sample_windows(jax.random.fold_in(state.data_key, state.step), features, batch_size,
                                 model.window_length)

        def loss_fn(params):
            variables = {"params": params}
            if state.batch_stats is not None:
                variables["batch_stats"] = state.batch_stats
            errors, batch_stats = model.errors(variables, windows, True)
            return jnp.mean(errors), batch_stats

        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ok = state.finite & jnp.isfinite(loss) & _all_finite(grads)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)
        new_state = state.replace(step=state.step + 1, params=keep(params, state.params),
                                  batch_stats=keep(batch_stats, state.batch_stats),
                                  opt_state=keep(opt_state, state.opt_state), finite=ok)
        return new_state, loss

    def train(states: MemberState, features: jax.Array):
        step_all = jax.vmap(member_step, in_axes=(0, None))
        return jax.lax.scan(lambda s, _: step_all(s, features), states, None, length=steps_per_call)

    return jax.jit(train, donate_argnums=0)


def make_score_fn(model: WindowModel, hop: int, num_frames: int):
    """``score(states, clips [n, T, mels]) -> [E, n]``: each clip's mean window error, for every member."""
    length = model.window_length
    starts = jnp.arange(0, num_frames - length + 1, hop)
    offsets = jnp.arange(length)

    def member_scores(state: MemberState, clips: jax.Array):
        variables = {"params": state.params}
        if state.batch_stats is not None:
            variables["batch_stats"] = state.batch_stats
        windows = clips[:, starts[:, None] + offsets]  # [n, S, length, mels]
        flat = windows.reshape(-1, length, clips.shape[-1])
        errors, _ = model.errors(variables, flat, False)
        return errors.reshape(clips.shape[0], -1).mean(axis=1)

    return jax.jit(jax.vmap(member_scores, in_axes=(0, None)))


def score_clips(score_fn, states: MemberState, features: np.ndarray, normalizer, chunk: int = 8,
                progress: bool = False, description: str = "scoring") -> np.ndarray:
    """Scores [E, N] of host features [N, T, mels], normalised and sent to the device one chunk at a time."""
    from tqdm.auto import tqdm

    num_clips = len(features)
    outputs = []
    for start in tqdm(range(0, num_clips, chunk), desc=description, unit="chunk", disable=not progress, leave=False):
        block = normalizer(np.asarray(features[start:start + chunk]))
        padded = np.zeros((chunk, *block.shape[1:]), np.float32)
        padded[: len(block)] = block
        outputs.append(np.asarray(score_fn(states, jnp.asarray(padded)))[:, : len(block)])
    if not outputs:
        return np.zeros((jax.tree.leaves(states.step)[0].shape[0], 0), np.float32)
    return np.concatenate(outputs, axis=1)


@dataclasses.dataclass
class TrainConfig:
    epochs: int
    batch_size: int
    windows_per_clip: int
    steps_per_call: int = 10
    grad_clip_norm: float = 0.0
    checkpoint_every_epochs: int = 1

    def schedule(self, num_clips: int) -> tuple[int, int]:
        """(steps per call, steps per epoch): an epoch is a whole number of calls covering
        ``windows_per_clip * num_clips`` windows (rounded up)."""
        steps = max(1, math.ceil(num_clips * self.windows_per_clip / self.batch_size))
        per_call = max(1, min(self.steps_per_call, steps))
        return per_call, per_call * math.ceil(steps / per_call)


def train_ensemble(
    model: WindowModel,
    members: Sequence[Member],
    features: jax.Array,
    config: TrainConfig,
    workdir: str | None = None,
    progress: bool = True,
    stop_after_epoch: int | None = None,
) -> tuple[MemberState, list[dict]]:
    """Train all members on device-resident normalised features [N, T, mels]; resume from ``workdir`` if possible.

    Checkpoints (Orbax) go to ``workdir/checkpoints`` at the end of every ``checkpoint_every_epochs`` epochs and at
    the end; the curve goes to ``workdir/train_curve.jsonl``. Returns the final states and per-epoch records.
    """
    from tqdm.auto import tqdm

    num_clips, _, mels = features.shape
    steps_per_call, steps_per_epoch = config.schedule(num_clips)
    states = init_states(model, members, mels, config.grad_clip_norm)
    manager = _checkpoint_manager(workdir) if workdir else None
    first_epoch, history = 0, []
    if manager is not None and manager.latest_step() is not None:
        first_epoch = manager.latest_step()
        states = _restore(manager, first_epoch, states)
        history = _read_curve(workdir, first_epoch)
        log.info("resumed %s from the checkpoint of epoch %d in %s", model.name, first_epoch, workdir)
    states, features = place(states, features)
    train_fn = make_train_fn(model, config.batch_size, steps_per_call, config.grad_clip_norm)
    calls = steps_per_epoch // steps_per_call
    was_finite = np.asarray(states.finite)

    for epoch in range(first_epoch + 1, config.epochs + 1):
        started = time.perf_counter()
        bar = tqdm(total=calls, desc=f"{model.name} epoch {epoch}/{config.epochs}", unit="call",
                   disable=not progress, leave=False)
        pending, loss_sum = None, np.zeros(len(members))
        for _ in range(calls):
            states, losses = train_fn(states, features)
            if pending is not None:  # fetched one call late: the device never waits on the host
                loss_sum += _finish(pending, bar)
            pending = losses
        loss_sum += _finish(pending, bar)
        bar.close()
        finite = np.asarray(states.finite)
        record = {"epoch": epoch, "step": epoch * steps_per_epoch, "seconds": round(time.perf_counter() - started, 3),
                  "loss": [float(v) for v in loss_sum / calls], "finite": finite.tolist(),
                  "members": [m.name for m in members]}
        history.append(record)
        for index in np.flatnonzero(was_finite & ~finite):
            log.warning("member %s hit a non-finite loss in epoch %d: frozen at its last finite parameters",
                        members[index].name, epoch)
        was_finite = finite
        if progress:
            tqdm.write(f"{model.name} epoch {epoch}/{config.epochs}: loss {_describe(record['loss'], finite)} "
                       f"({record['seconds']:.1f} s)")
        if manager is not None:
            _append_curve(workdir, record)
            if epoch % config.checkpoint_every_epochs == 0 or epoch == config.epochs:
                manager.save(epoch, args=_save_args(states))
                manager.wait_until_finished()
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            break
    if manager is not None:
        manager.close()
    return states, history


def _finish(losses: jax.Array, bar) -> np.ndarray:
    values = np.asarray(losses)
    bar.update()
    bar.set_postfix(loss=f"{np.nanmean(values[-1]):.4f}")
    return np.mean(values, axis=0)


def _describe(losses: Sequence[float], finite: np.ndarray) -> str:
    values = np.asarray(losses)
    if len(values) == 1:
        return f"{values[0]:.5f}" + ("" if finite[0] else " (non-finite: frozen)")
    alive = values[finite]
    text = f"mean {np.mean(alive):.5f} (min {np.min(alive):.5f}, max {np.max(alive):.5f})" if len(alive) else "n/a"
    return text + (f", {int((~finite).sum())} member(s) frozen" if (~finite).any() else "")


# ----------------------------------------------------------------------------------------------------------------------
# Checkpoints (Orbax) and the training curve.


def _checkpoint_manager(workdir: str):
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=2, create=True, enable_async_checkpointing=False)
    return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")), options=options)


def _save_args(states: MemberState):
    import orbax.checkpoint as ocp

    return ocp.args.StandardSave(states)


def _restore(manager, epoch: int, like: MemberState) -> MemberState:
    import orbax.checkpoint as ocp

    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), like)
    return manager.restore(epoch, args=ocp.args.StandardRestore(abstract))


def restore_states(workdir: str, model: WindowModel, members: Sequence[Member], mels: int,
                   grad_clip_norm: float = 0.0) -> MemberState:
    """The latest checkpointed states of a run, for scoring new clips."""
    manager = _checkpoint_manager(workdir)
    if manager.latest_step() is None:
        raise FileNotFoundError(f"no checkpoint in {os.path.join(workdir, 'checkpoints')}: train a run there first "
                                f"(python launch.py --method={model.name} --workdir={workdir})")
    states = _restore(manager, manager.latest_step(), init_states(model, members, mels, grad_clip_norm))
    manager.close()
    return place(states, jnp.zeros(()))[0]


def _append_curve(workdir: str, record: dict) -> None:
    with open(os.path.join(workdir, "train_curve.jsonl"), "a") as handle:
        handle.write(json.dumps(record) + "\n")


def _read_curve(workdir: str, last_epoch: int) -> list[dict]:
    """Records up to the checkpointed epoch; later ones (lost with the crash) are dropped from the file too."""
    path = os.path.join(workdir, "train_curve.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    records = [r for r in records if r["epoch"] <= last_epoch]
    with open(path, "w") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in records)
    return records
