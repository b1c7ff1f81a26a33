"""Train E ensemble members in one compiled program: the members' training state, the step and the loop.

Every parameter and optimiser leaf carries a leading member axis. One training step is ``jax.vmap`` of a member's
step; ``lax.scan`` runs ``steps_per_call`` of them per dispatch. The normalised training features live on the device
and each step draws its (clip, start) window indices with ``jax.random`` inside the compiled function, from a key
folded with the member's seed and the global step: no batch crosses from host to device, and a resumed run draws
exactly the windows the uninterrupted run would have drawn.

A member whose loss or gradients stop being finite is frozen (its last finite parameters are kept) and reported;
the others train on.

How the members spread over the devices (and processes) is :class:`asd_jax.distributed.Layout`; scoring clips with
trained states, and restoring them from a run, is :mod:`asd_jax.methods.inference`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from asd_jax import distributed
from asd_jax.progress import bar as progress_bar
from asd_jax.progress import resolve_mode as progress_mode
from asd_jax.progress import write as write_line
from asd_jax.rundir import CurveWriter, RunDir
from asd_jax.train import optim
from asd_jax.train.checkpoints import Checkpoints

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class WindowModel:
    """A model trained on fixed-length windows of frames, as the trainer sees it.

    ``init(key, mels)`` returns Flax variables (``params`` and, for BatchNorm, ``batch_stats``);
    ``errors(variables, batch, train)`` returns (per-window error [B], new batch_stats or None), where ``batch`` is
    ``{"windows": [B, window_length, mels]}`` plus each window's clip data when the training data has some
    (``"labels": [B]``, the clip's class; more entries for a dict, see :func:`clip_inputs`). The loss is the mean
    error; a clip's score is the mean error over its windows.
    """

    name: str
    window_length: int
    init: Callable[[jax.Array, int], dict]
    errors: Callable[[dict, dict, bool], tuple[jax.Array, Any]]
    cpu_member_map: str = "map"  # what member_map="auto" means on one CPU device (see distributed.Layout)


class MemberState(struct.PyTreeNode):
    """One member's training state (stacked: a leading member axis on every leaf). As flax's ``TrainState``, it
    carries its optimiser: the static structure in ``optimizer`` and the member's own values in ``hparams``."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    hparams: dict  # the member's shape-free optimiser values (optim.HYPERPARAMETERS)
    finite: jax.Array  # False once the member hit a NaN/inf loss or gradient; it is frozen from then on
    data_key: jax.Array
    optimizer: optim.Optimizer = struct.field(pytree_node=False, default=optim.Optimizer())

    def apply_gradients(self, grads, batch_stats):
        """The state after one optimiser step (``batch_stats`` from the forward pass, or None)."""
        updates, opt_state = self.optimizer.update(grads, self.opt_state, self.params, self.hparams)
        return self.replace(step=self.step + 1, params=optax.apply_updates(self.params, updates),
                            batch_stats=batch_stats, opt_state=opt_state)


@dataclasses.dataclass(frozen=True)
class Member:
    """One ensemble member: a unique name, its seed and its shape-free optimiser values."""

    name: str
    seed: int
    hparams: tuple[tuple[str, float], ...]

    @classmethod
    def create(cls, seed: int, name: str | None = None, **values: float) -> "Member":
        """A member with ``values`` over the defaults (learning rate 1e-3, everything else 0)."""
        unknown = sorted(set(values) - set(optim.HYPERPARAMETERS))
        if unknown:
            raise ValueError(f"unknown member hyper-parameters {unknown}; choose from {optim.HYPERPARAMETERS}")
        merged = {**dict.fromkeys(optim.HYPERPARAMETERS, 0.0), "learning_rate": 1e-3, **values}
        return cls(name or f"seed{seed}", int(seed), tuple((k, float(merged[k])) for k in optim.HYPERPARAMETERS))

    @property
    def values(self) -> dict[str, float]:
        return dict(self.hparams)


def _init_program(model: WindowModel, members: Sequence[Member], mels: int, optimizer: optim.Optimizer):
    """(the vmapped initialiser, its arguments): one member's state from its seed and optimiser values, mapped
    over the members."""

    def init_one(seed, hparams):
        init_key, data_key = jax.random.split(jax.random.PRNGKey(seed))
        variables = model.init(init_key, mels)
        params = variables["params"]
        return MemberState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=variables.get("batch_stats"),
                           opt_state=optimizer.init(params, hparams), hparams=hparams, finite=jnp.ones((), bool),
                           data_key=data_key, optimizer=optimizer)

    seeds = jnp.asarray([m.seed for m in members], jnp.uint32)
    hparams = {name: jnp.asarray([m.values[name] for m in members], jnp.float32) for name in optim.HYPERPARAMETERS}
    return jax.vmap(init_one), (seeds, hparams)


def init_states(model: WindowModel, members: Sequence[Member], mels: int,
                optimizer: optim.Optimizer = optim.Optimizer()) -> MemberState:
    """Stacked initial states, member axis first."""
    init, args = _init_program(model, members, mels, optimizer)
    return jax.jit(init)(*args)


def abstract_states(model: WindowModel, members: Sequence[Member], mels: int,
                    optimizer: optim.Optimizer = optim.Optimizer()) -> MemberState:
    """What :func:`init_states` returns, as shapes and dtypes only (placed as its result is: where its arguments
    lie, the default device), found by tracing without compiling or running it: the target of a checkpoint restore
    that will overwrite every value anyway. Compiling the initialiser of a large network takes seconds."""
    init, args = _init_program(model, members, mels, optimizer)
    placement = args[0].sharding
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=placement),
                        jax.eval_shape(init, *args))


def clip_inputs(clip_data, index: jax.Array) -> dict:
    """The per-clip data of the clips ``index`` as batch entries: ``clip_data`` is None, an array [N, ...] (each
    clip's label: ``{"labels": ...}``) or a dict of such arrays (e.g. ``{"labels": [N], "spectra": [N, S]}``)."""
    if clip_data is None:
        return {}
    if not isinstance(clip_data, dict):
        clip_data = {"labels": clip_data}
    return {name: values[index] for name, values in clip_data.items()}


def sample_windows(key: jax.Array, features: jax.Array, batch_size: int, window_length: int,
                   labels=None) -> dict:
    """A batch of random windows gathered on the device from features [N, T, mels]:
    ``{"windows": [B, window_length, mels], "key": a PRNG key}``, plus each window's clip data when ``labels`` is
    given (:func:`clip_inputs`: ``"labels": [B]`` for an array [N], every entry of a dict). ``key`` is the step's own
    key for augmentation inside the model's error (mixup, masking); it does not change which windows are drawn."""
    clip_key, start_key = jax.random.split(key)
    num_clips, num_frames, mels = features.shape
    clips = jax.random.randint(clip_key, (batch_size,), 0, num_clips)
    starts = jax.random.randint(start_key, (batch_size,), 0, num_frames - window_length + 1)
    slice_one = lambda c, s: jax.lax.dynamic_slice(features, (c, s, 0), (1, window_length, mels))[0]
    return {"windows": jax.vmap(slice_one)(clips, starts), "key": jax.random.fold_in(key, 1),
            **clip_inputs(labels, clips)}


def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


def member_variables(state: MemberState) -> dict:
    variables = {"params": state.params}
    if state.batch_stats is not None:
        variables["batch_stats"] = state.batch_stats
    return variables


def make_train_fn(model: WindowModel, batch_size: int, steps_per_call: int,
                  layout: distributed.Layout | None = None):
    """``train(states, features, labels) -> (states, losses [steps_per_call, E])``: jitted, mapped over the members
    (``layout.member_map``), scanned over steps. ``labels`` is None for data without clip labels. The optimiser is
    the one the states carry."""
    layout = layout or distributed.Layout(0, 0)

    def member_step(state: MemberState, features: jax.Array, labels):
        batch = sample_windows(jax.random.fold_in(state.data_key, state.step), features, batch_size,
                               model.window_length, labels)
        if layout.window_sharding is not None:  # fewer members than devices: split each batch over the devices
            batch["windows"] = jax.lax.with_sharding_constraint(batch["windows"], layout.window_sharding)

        def loss_fn(params):
            errors, batch_stats = model.errors(member_variables(state.replace(params=params)), batch, True)
            return jnp.mean(errors), batch_stats

        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        stepped = state.apply_gradients(grads, batch_stats)
        ok = state.finite & jnp.isfinite(loss) & _all_finite(grads)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)
        new_state = stepped.replace(params=keep(stepped.params, state.params),
                                    batch_stats=keep(stepped.batch_stats, state.batch_stats),
                                    opt_state=keep(stepped.opt_state, state.opt_state), finite=ok)
        return new_state, loss

    def train_steps(states: MemberState, features: jax.Array, labels):
        if layout.member_map == "map":  # member by member, each running all its steps: its state stays in cache
            def member_steps(one: MemberState):
                return jax.lax.scan(lambda s, _: member_step(s, features, labels), one, None, length=steps_per_call)

            states, losses = jax.lax.map(member_steps, states)  # losses [E, steps]
            return states, losses.T
        step_all = jax.vmap(member_step, in_axes=(0, None, None))
        return jax.lax.scan(lambda s, _: step_all(s, features, labels), states, None, length=steps_per_call)

    return jax.jit(train_steps, donate_argnums=0)


@dataclasses.dataclass
class TrainConfig:
    """The epoch schedule and the optimiser's static structure of one group of members."""

    epochs: int
    batch_size: int
    windows_per_clip: int
    steps_per_call: int = 10
    checkpoint_every_epochs: int = 1
    validate_every_epochs: int = 1
    optimizer: str = "adam"
    schedule: str = "constant"
    member_map: str = "auto"  # see distributed.Layout

    @classmethod
    def from_section(cls, train) -> "TrainConfig":
        """From a method's ``train`` config section (see ``registry.train_section``)."""
        optim.check(train)
        return cls(int(train.epochs), int(train.batch_size), int(train.windows_per_clip), int(train.steps_per_call),
                   int(train.checkpoint_every_epochs), int(train.validate_every_epochs), train.optimizer,
                   train.schedule, train.member_map)

    def schedule_steps(self, num_clips: int) -> tuple[int, int]:
        """(steps per call, steps per epoch): an epoch is a whole number of calls covering
        ``windows_per_clip * num_clips`` windows (rounded up)."""
        steps = max(1, math.ceil(num_clips * self.windows_per_clip / self.batch_size))
        per_call = max(1, min(self.steps_per_call, steps))
        return per_call, per_call * math.ceil(steps / per_call)

    def make_optimizer(self, num_clips: int) -> optim.Optimizer:
        steps_per_epoch = self.schedule_steps(num_clips)[1]
        return optim.Optimizer(self.optimizer, self.schedule, steps_per_epoch, steps_per_epoch * self.epochs)


@dataclasses.dataclass
class TrainResult:
    states: MemberState
    history: list[dict]
    compiles: int  # training programs compiled for this call (1: every member in one program)
    diverged: list[str]  # members whose loss went non-finite or ran away (see diverged_members)


def train_ensemble(
    model: WindowModel,
    members: Sequence[Member],
    features: jax.Array,
    config: TrainConfig,
    run: RunDir | None = None,
    progress: bool = True,
    stop_after_epoch: int | None = None,
    labels=None,
    validate: Callable[[MemberState], np.ndarray] | None = None,
) -> TrainResult:
    """Train all members on device-resident normalised features [N, T, mels] (and per-clip data: labels [N] for
    methods that learn them, or a dict of per-clip arrays, :func:`clip_inputs`); resume from ``run``'s checkpoints
    if there are any.

    ``validate(states) -> [E]`` (e.g. each member's mean error on held-out normal clips) runs every
    ``validate_every_epochs`` epochs and after the last; its values go into the curve. Checkpoints (Orbax) go to
    ``run``'s checkpoint folder every ``checkpoint_every_epochs`` epochs and at the end; the curve goes to its
    ``train_curve.jsonl`` and TensorBoard events, one folder per member.

    Over several processes (:mod:`asd_jax.distributed`) every process calls this with the same arguments; the
    members spread over every process's devices, every process takes part in the checkpoints, and only process 0
    writes the curve and the events.
    """
    num_clips, _, mels = features.shape
    steps_per_call, steps_per_epoch = config.schedule_steps(num_clips)
    optimizer = config.make_optimizer(num_clips)
    states = init_states(model, members, mels, optimizer)
    layout = distributed.plan_layout(len(members), config.batch_size, config.member_map,
                                     cpu_member_map=model.cpu_member_map)
    several = layout.mesh is not None and layout.mesh.is_multi_process
    primary = distributed.is_primary()
    if several:  # restored straight onto every process's devices; labels replicated as the features
        states = distributed.to_global(states, layout.replicated)
        labels = None if labels is None else distributed.to_global(labels, layout.replicated)
    checkpoints = Checkpoints(run.checkpoints_dir) if run else None
    first_epoch, history = 0, []
    if checkpoints is not None:
        restored_epoch, restored = checkpoints.restore_latest(states)
        if restored_epoch is not None:
            if restored_epoch > config.epochs:
                checkpoints.close()
                raise ValueError(f"{run} holds a run trained for {restored_epoch} epochs, more than the {config.epochs} "
                                 "asked for: pass another --workdir to train fewer")
            first_epoch, states = restored_epoch, restored
            log.info("resumed %s from the checkpoint of epoch %d in %s", model.name, first_epoch, run)
        # epochs after the checkpoint (or all, without one) were lost: process 0 drops them, then the others read
        history = run.read_curve(first_epoch) if primary else []
        distributed.barrier("asd_jax: training curve read")
        if not primary:
            history = [record for record in run.read_curve() if record["epoch"] <= first_epoch]
    states, features = distributed.place(states, features, layout)
    train_fn = make_train_fn(model, config.batch_size, steps_per_call, layout)
    calls = steps_per_epoch // steps_per_call
    real = len(members)  # padded (masked) members, if any, come after the real ones and are dropped
    was_finite = distributed.to_host(states.finite)[:real]
    names = [m.name for m in members]
    writer = CurveWriter(run.tensorboard_dir, names, first_epoch) if run and primary else None

    for epoch in range(first_epoch + 1, config.epochs + 1):
        started = time.perf_counter()
        # a live bar on a terminal; in a log the epoch's summary line below says it all
        bar = progress_bar(total=calls, desc=f"{model.name} epoch {epoch}/{config.epochs}", unit="call",
                           enabled=progress and progress_mode() == "bars")
        pending, loss_sum, first_step = None, np.zeros(len(members)), None
        for call in range(calls):
            states, losses = train_fn(states, features, labels)
            losses = losses[:, :real]
            if pending is not None:  # fetched one call late: the device never waits on the host
                loss_sum += _finish(pending, bar)
            if epoch == 1 and call == 0:
                first_step = losses[0]  # every member's loss before its first update: the divergence reference
            pending = losses
        loss_sum += _finish(pending, bar)
        bar.close()
        finite = distributed.to_host(states.finite)[:real]
        record = {"epoch": epoch, "step": epoch * steps_per_epoch, "seconds": round(time.perf_counter() - started, 3),
                  "loss": [float(v) for v in loss_sum / calls], "finite": finite.tolist(), "members": names}
        if first_step is not None:
            record["first_step_loss"] = [float(v) for v in distributed.to_host(first_step)]
        if validate is not None and (epoch % config.validate_every_epochs == 0 or epoch == config.epochs):
            record["validation_error"] = [float(v) for v in distributed.to_host(validate(states))[:real]]
        history.append(record)
        for index in np.flatnonzero(was_finite & ~finite):
            log.warning("member %s hit a non-finite loss in epoch %d: frozen at its last finite parameters",
                        members[index].name, epoch)
        was_finite = finite
        if progress:
            write_line(f"{model.name} epoch {epoch}/{config.epochs}: loss {_describe(record['loss'], finite)}"
                       + (f", held-out error {_describe(record['validation_error'], finite)}"
                          if "validation_error" in record else "") + f" ({record['seconds']:.1f} s)")
        if run is not None:
            if primary:
                run.append_curve(record)
                writer.write(record)
            if epoch % config.checkpoint_every_epochs == 0 or epoch == config.epochs:
                # the real members only: any device (or process) count resumes
                checkpoints.save(epoch, distributed.gathered(states, layout, keep_shards=True))
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            break
    if checkpoints is not None:
        checkpoints.close()
    if writer is not None:
        writer.close()
    return TrainResult(distributed.gathered(states, layout), history, train_fn._cache_size(), diverged_members(history))


DIVERGENCE_FACTOR = 10.0


def diverged_members(history: Sequence[dict], factor: float = DIVERGENCE_FACTOR) -> list[str]:
    """Names of the members that diverged: non-finite (frozen), or whose last-epoch loss is ``factor`` times the
    loss they started from (their first step, before any update) and, when there are other healthy members,
    also ``factor`` times the median of those members' last-epoch losses.

    Training lowers the loss from where it started; a loss grown tenfold is not training but running away (a
    learning rate of 1e3 takes the LSTM from ~1 to ~1e5 while staying finite). The second condition keeps a member
    whose loss merely wanders when the whole ensemble does the same (e.g. the data make every loss rise), so only a
    member that is out of line with its own start and with its peers is dropped.
    """
    if not history:
        return []
    last = history[-1]
    names, losses = last["members"], np.asarray(last["loss"], dtype=float)
    finite = np.asarray(last["finite"], bool) & np.isfinite(losses)
    start = next((np.asarray(r["first_step_loss"], float) for r in history if "first_step_loss" in r), None)
    grown = np.zeros(len(names), bool) if start is None else losses > factor * np.abs(start)
    diverged = ~finite
    for index in np.flatnonzero(grown & finite):
        peers = [losses[j] for j in range(len(names)) if j != index and finite[j] and not grown[j]]
        if not peers or losses[index] > factor * float(np.median(peers)):
            diverged[index] = True
    return [name for name, bad in zip(names, diverged) if bad]


def _finish(losses: jax.Array, bar) -> np.ndarray:
    values = distributed.to_host(losses)
    bar.update()
    bar.set_postfix(loss=f"{np.nanmean(values[-1]):.4f}")
    return np.mean(values, axis=0)


def _describe(values: Sequence[float], finite: np.ndarray) -> str:
    values = np.asarray(values)
    if len(values) == 1:
        return f"{values[0]:.5f}" + ("" if finite[0] else " (non-finite: frozen)")
    alive = values[finite]
    text = f"mean {np.mean(alive):.5f} (min {np.min(alive):.5f}, max {np.max(alive):.5f})" if len(alive) else "n/a"
    return text + (f", {int((~finite).sum())} member(s) frozen" if (~finite).any() else "")
