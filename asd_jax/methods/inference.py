"""Scoring clips with trained ensemble states, and the states restored from a run's checkpoints: what the sequence
detector (:mod:`asd_jax.methods.sequence`) and its subclasses score with, after training or in ``--mode=score``."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from asd_jax import distributed
from asd_jax.progress import bar as progress_bar
from asd_jax.rundir import RunDir
from asd_jax.train import optim
from asd_jax.train.checkpoints import Checkpoints
from asd_jax.train.ensemble import (Member, MemberState, WindowModel, abstract_states, clip_inputs,
                                   member_variables)


def make_score_fn(model: WindowModel, hop: int, num_frames: int):
    """``score(states, clips [n, T, mels], labels) -> [E, n]``: each clip's mean window error, for every member.
    ``labels``: None, each clip's label [n], or a dict of per-clip arrays (:func:`~asd_jax.train.ensemble.clip_inputs`)
    that every window of the clip carries."""
    length = model.window_length
    starts = jnp.arange(0, num_frames - length + 1, hop)
    offsets = jnp.arange(length)

    def member_scores(state: MemberState, clips: jax.Array, labels):
        windows = clips[:, starts[:, None] + offsets]  # [n, S, length, mels]
        batch = {"windows": windows.reshape(-1, length, clips.shape[-1]),
                 **clip_inputs(labels, jnp.repeat(jnp.arange(clips.shape[0]), len(starts)))}
        errors, _ = model.errors(member_variables(state), batch, False)
        return errors.reshape(clips.shape[0], -1).mean(axis=1)

    return jax.jit(jax.vmap(member_scores, in_axes=(0, None, None)))


def score_clips(score_fn, states: MemberState, features, normalizer=None, labels=None,
                chunk: int = 8, progress: bool = False, description: str = "scoring") -> np.ndarray:
    """Scores [E, N] of features [N, T, mels] (host arrays, normalised here with ``normalizer`` one chunk at a time,
    or already normalised device arrays with ``normalizer=None``); ``labels``: None, per-clip labels [N] or a dict of
    per-clip host arrays, chunked beside the features. Chunks are padded to ``chunk`` clips so one
    compiled program scores them all. States spread over several processes score every chunk together (each process
    passes the same chunk) and every process gets all the scores."""
    num_clips = len(features)
    outputs = []
    for start in progress_bar(range(0, num_clips, chunk), desc=description, unit="chunk", enabled=progress):
        block = features[start:start + chunk]
        block = normalizer(np.asarray(block)) if normalizer is not None else block
        count = len(block)
        if count < chunk:
            block = jnp.concatenate([jnp.asarray(block), jnp.zeros((chunk - count, *block.shape[1:]), block.dtype)])
        block_labels = jax.tree.map(lambda values: _padded(values[start:start + count], chunk), labels)
        inputs = distributed.like((jnp.asarray(block), block_labels), states.step)
        outputs.append(distributed.to_host(score_fn(states, *inputs))[:, :count])
    if not outputs:
        return np.zeros((jax.tree.leaves(states.step)[0].shape[0], 0), np.float32)
    return np.concatenate(outputs, axis=1)


def _padded(values, size: int) -> np.ndarray:
    """Host rows padded with zeros to ``size`` rows."""
    values = np.asarray(values)
    out = np.zeros((size, *values.shape[1:]), values.dtype)
    out[:len(values)] = values
    return out


def restore_states(run: RunDir, model: WindowModel, members: Sequence[Member], mels: int,
                   optimizer: optim.Optimizer = optim.Optimizer()) -> MemberState:
    """The newest intact checkpointed states of a run, for scoring new clips (a damaged newer checkpoint is skipped
    with a warning, as in training)."""
    if not run.has_checkpoints:
        raise FileNotFoundError(f"no checkpoint in {run.checkpoints_dir}: train a run there first "
                                f"(python launch.py --method={model.name} --workdir={run})")
    with Checkpoints(run.checkpoints_dir, read_only=True) as checkpoints:
        step, states = checkpoints.restore_latest(abstract_states(model, members, mels, optimizer))
    if step is None:
        raise FileNotFoundError(f"no finished checkpoint in {run.checkpoints_dir}: finish the run first "
                                f"(run the same command again, it resumes)")
    layout = distributed.plan_layout(len(members), 1, "vmap")
    return distributed.place(states, jnp.zeros(()), layout)[0] \
        if layout.padded == len(members) and not layout.batch_axis else states
