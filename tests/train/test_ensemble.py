"""The vmapped/scanned ensemble trainer: members train as if alone, per-member learning rates, NaN isolation,
on-device window sampling, Orbax checkpoint resume and the epoch schedule."""

import dataclasses
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asd_jax import distributed
from asd_jax.config import get_config
from asd_jax.methods import inference, registry
from asd_jax.rundir import RunDir
from asd_jax.train import ensemble
from asd_jax.train.ensemble import TrainConfig

pytestmark = pytest.mark.usefixtures("jax_compile_cache")

NUM_CLIPS, NUM_FRAMES, MELS = 5, 12, 8
# 5 clips x 4 windows / batch 8 -> 3 steps, run as 2 calls of 2 steps: 4 steps per epoch
CONFIG = TrainConfig(epochs=2, batch_size=8, windows_per_clip=4, steps_per_call=2)


def tiny_model(method: str = "lstm") -> ensemble.WindowModel:
    config = get_config()
    config.lstm.hidden_size, config.lstm.frames = 8, 3
    config.dense_ae.hidden_size, config.dense_ae.bottleneck, config.dense_ae.frames = 8, 2, 3
    return registry.get(method).window_model(config)


def Member(seed: int, learning_rate: float, **values) -> ensemble.Member:
    return ensemble.Member.create(seed, f"seed{seed}_lr{learning_rate:g}", learning_rate=learning_rate, **values)


@pytest.fixture(scope="module")
def features() -> jax.Array:
    rng = np.random.default_rng(0)
    return jnp.asarray(rng.standard_normal((NUM_CLIPS, NUM_FRAMES, MELS)).astype(np.float32))


def member(states: ensemble.MemberState, index: int):
    return jax.tree.map(lambda leaf: np.asarray(leaf[index]), states)


def assert_trees(actual, expected, exact: bool = False, rtol: float = 1e-4, atol: float = 1e-5):
    leaves_a, tree_a = jax.tree.flatten(actual)
    leaves_e, tree_e = jax.tree.flatten(expected)
    assert tree_a == tree_e
    for a, e in zip(leaves_a, leaves_e):
        a, e = np.asarray(a), np.asarray(e)
        assert a.shape == e.shape and a.dtype == e.dtype
        if exact:
            assert np.array_equal(a, e)
        else:
            np.testing.assert_allclose(a, e, rtol=rtol, atol=atol)


def train(model, members, features, config=CONFIG, workdir=None, **kwargs):
    run = RunDir(str(workdir)) if workdir is not None else None
    result = ensemble.train_ensemble(model, members, features, config, run, progress=False, **kwargs)
    assert result.compiles <= 1  # every member in one compiled program (none when nothing was left to train)
    return result.states, result.history


# ----------------------------------------------------------------------------------------------------------------------
# Members train as if alone.


@pytest.mark.parametrize("method", ["lstm", pytest.param("dense_ae", marks=pytest.mark.slow)])  # dense_ae: BatchNorm
def test_vmapped_members_equal_separate_single_member_runs(method, features):
    model = tiny_model(method)
    members = [Member(0, 1e-3), Member(1, 3e-3), Member(2, 1e-3)]
    config = dataclasses.replace(CONFIG, member_map="vmap")  # auto maps a single member (see the next test)
    states, history = train(model, members, features, config)
    assert [r["epoch"] for r in history] == [1, 2]
    assert np.asarray(states.step).tolist() == [8, 8, 8]
    score_fn = inference.make_score_fn(model, 1, NUM_FRAMES)
    for index, one in enumerate(members):
        single, single_history = train(model, [one], features, config)
        if method == "lstm":
            assert_trees(member(states, index), member(single, 0))
        else:  # the dense AE through its scores, as in the next test: a Dense bias right before BatchNorm has no
            # true gradient, so Adam steps it by the sign of float rounding noise, which differs between programs
            np.testing.assert_allclose(inference.score_clips(score_fn, states, features)[index],
                                       inference.score_clips(score_fn, single, features)[0], rtol=1e-3)
        for record, single_record in zip(history, single_history):
            np.testing.assert_allclose(record["loss"][index], single_record["loss"][0], rtol=1e-4, atol=1e-5)
    # different seeds give different initialisations and different window draws
    first, last = (jax.tree.leaves(member(states, i).params)[0] for i in (0, 2))
    assert not np.allclose(first, last)


@pytest.mark.parametrize("method", ["lstm", pytest.param("dense_ae", marks=pytest.mark.slow)])
def test_mapping_members_in_sequence_equals_vmapping_them(method, features):
    """lax.map (the CPU default) and vmap train the same members to the same scores, to float tolerance. (The dense
    AE's parameters are compared through its scores: the bias of a Dense layer followed by BatchNorm has no true
    gradient, so Adam steps it by the sign of float rounding noise, which differs between programs; BatchNorm
    removes it again, so it changes no output.)"""
    model = tiny_model(method)
    members = [Member(0, 1e-3), Member(1, 3e-3)]
    mapped, _ = train(model, members, features, dataclasses.replace(CONFIG, member_map="map"))
    vmapped, _ = train(model, members, features, dataclasses.replace(CONFIG, member_map="vmap"))
    score_fn = inference.make_score_fn(model, 1, NUM_FRAMES)
    np.testing.assert_allclose(inference.score_clips(score_fn, mapped, features),
                               inference.score_clips(score_fn, vmapped, features), rtol=1e-3)
    if method == "lstm":
        assert_trees(mapped, vmapped)
    with pytest.raises(ValueError, match="member_map"):
        distributed.plan_layout(2, 8, "pmap")


def test_member_values_default_and_refuse_unknown_names():
    member = ensemble.Member.create(3, learning_rate=1e-2, weight_decay=1e-4)
    assert member.name == "seed3" and member.seed == 3
    assert member.values == {"learning_rate": 1e-2, "weight_decay": 1e-4, "grad_clip_norm": 0.0, "momentum": 0.0,
                             "warmup_epochs": 0.0}
    with pytest.raises(ValueError, match="unknown member hyper-parameters"):
        ensemble.Member.create(0, learnig_rate=1e-3)


def test_each_member_uses_its_own_learning_rate(features):
    model = tiny_model()
    members = [Member(0, 0.0), Member(0, 1e-2)]  # same seed: same initial parameters
    initial = ensemble.init_states(model, members, MELS)
    assert_trees(member(initial, 0).params, member(initial, 1).params, exact=True)
    np.testing.assert_allclose(np.asarray(initial.hparams["learning_rate"]), [0.0, 1e-2])
    states, _ = train(model, members, features)
    assert_trees(member(states, 0).params, member(initial, 0).params, exact=True)
    for name, leaf in jax.tree_util.tree_leaves_with_path(member(states, 1).params):
        start = jax.tree_util.tree_leaves_with_path(member(initial, 1).params)
        assert not np.array_equal(leaf, dict(start)[name]), jax.tree_util.keystr(name)
    assert np.asarray(states.finite).tolist() == [True, True]


def test_a_diverging_member_is_frozen_and_the_others_train_on(features):
    model = tiny_model()
    good = Member(0, 1e-3)
    states, history = train(model, [good, Member(0, 1e30)], features)
    assert np.asarray(states.finite).tolist() == [True, False]
    assert history[-1]["finite"] == [True, False]
    bad = member(states, 1)
    for leaf in jax.tree.leaves((bad.params, bad.opt_state)):
        assert np.all(np.isfinite(leaf))  # the last finite parameters are kept
    initial = member(ensemble.init_states(model, [good], MELS), 0)
    assert not np.array_equal(bad.params["head"]["kernel"], initial.params["head"]["kernel"])  # it did move first
    alone, alone_history = train(model, [good], features)
    assert_trees(member(states, 0), member(alone, 0))
    for record, alone_record in zip(history, alone_history):
        np.testing.assert_allclose(record["loss"][0], alone_record["loss"][0], rtol=1e-4, atol=1e-5)
        assert not math.isfinite(record["loss"][1]) or record["epoch"] == 1


# ----------------------------------------------------------------------------------------------------------------------
# Window sampling.


def test_sample_windows_draws_in_range_windows_as_manual_slicing():
    num_clips, num_frames, mels, length, batch = 3, 9, 2, 7, 256
    # every value encodes (clip, frame, mel), so a window says where it came from
    features = (np.arange(num_clips)[:, None, None] * 1000 + np.arange(num_frames)[None, :, None] * 10
                + np.arange(mels)[None, None, :]).astype(np.float32)
    key = jax.random.PRNGKey(42)
    windows = np.asarray(jax.jit(ensemble.sample_windows, static_argnums=(2, 3))(
        key, jnp.asarray(features), batch, length)["windows"])
    assert windows.shape == (batch, length, mels)
    clip_key, start_key = jax.random.split(key)
    clips = np.asarray(jax.random.randint(clip_key, (batch,), 0, num_clips))
    starts = np.asarray(jax.random.randint(start_key, (batch,), 0, num_frames - length + 1))
    expected = np.stack([features[c, s:s + length] for c, s in zip(clips, starts)])
    assert np.array_equal(windows, expected)
    # decode each window: a contiguous run of frames of one clip, starting in [0, frames - length]
    decoded_clips, decoded_starts = windows[:, 0, 0] // 1000, (windows[:, 0, 0] % 1000) // 10
    assert set(decoded_clips.tolist()) == set(range(num_clips))
    assert set(decoded_starts.tolist()) == set(range(num_frames - length + 1))  # both ends are reachable
    for window, c, s in zip(windows, decoded_clips.astype(int), decoded_starts.astype(int)):
        assert np.array_equal(window, features[c, s:s + length])
    # another key draws other windows
    other = np.asarray(ensemble.sample_windows(jax.random.PRNGKey(43), jnp.asarray(features), batch, length)["windows"])
    # with clip labels, each window carries its clip's label
    labels = np.array([7, 8, 9], np.int32)
    labelled = ensemble.sample_windows(key, jnp.asarray(features), batch, length, jnp.asarray(labels))
    assert np.array_equal(np.asarray(labelled["windows"]), windows)
    assert np.array_equal(np.asarray(labelled["labels"]), labels[clips])
    assert not np.array_equal(other, windows)


# ----------------------------------------------------------------------------------------------------------------------
# Scoring.


def test_score_clips_is_each_clips_mean_window_error(features):
    model = tiny_model()
    states = ensemble.init_states(model, [Member(0, 1e-3), Member(1, 1e-3)], MELS)
    hop = 2
    score_fn = inference.make_score_fn(model, hop, NUM_FRAMES)
    host = np.asarray(features) * 3.0 + 1.0
    normalizer = lambda x: (x - 1.0) / 3.0
    scores = inference.score_clips(score_fn, states, host, normalizer, chunk=2)  # 5 clips: the last chunk is padded
    on_device = inference.score_clips(score_fn, states, features, chunk=2)  # already normalised, on the device
    np.testing.assert_allclose(on_device, scores, rtol=1e-5)
    assert scores.shape == (2, NUM_CLIPS)
    starts = range(0, NUM_FRAMES - model.window_length + 1, hop)
    for index in range(2):
        variables = {"params": member(states, index).params}
        for clip in range(NUM_CLIPS):
            windows = jnp.stack([features[clip, s:s + model.window_length] for s in starts])
            errors, _ = model.errors(variables, {"windows": windows}, False)
            np.testing.assert_allclose(scores[index, clip], np.mean(errors), rtol=1e-5)


# ----------------------------------------------------------------------------------------------------------------------
# Checkpoints.


def _curve(workdir):
    with open(os.path.join(workdir, "train_curve.jsonl")) as handle:
        return [json.loads(line) for line in handle]


@pytest.mark.parametrize("every, stop", [(1, 2), (2, 3)])  # (2, 3): epoch 3 is lost with the "crash" and redone
def test_resume_from_a_checkpoint_ends_bitwise_equal_to_an_uninterrupted_run(tmp_path, features, every, stop):
    model = tiny_model()
    members = [Member(0, 1e-3), Member(1, 1e-3)]
    config = TrainConfig(epochs=4, batch_size=8, windows_per_clip=4, steps_per_call=2, checkpoint_every_epochs=every)
    reference, reference_history = train(model, members, features, config, workdir=str(tmp_path / "straight"))
    assert [r["epoch"] for r in _curve(tmp_path / "straight")] == [1, 2, 3, 4]

    workdir = str(tmp_path / "resumed")
    _, first = train(model, members, features, config, workdir=workdir, stop_after_epoch=stop)
    assert [r["epoch"] for r in first] == list(range(1, stop + 1))
    assert [r["epoch"] for r in _curve(workdir)] == list(range(1, stop + 1))
    checkpointed = stop - stop % every
    assert sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())[-1] == checkpointed

    states, history = train(model, members, features, config, workdir=workdir)
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    curve = _curve(workdir)
    assert [r["epoch"] for r in curve] == [1, 2, 3, 4]  # one line per epoch, none repeated
    assert curve[:checkpointed] == first[:checkpointed]  # kept from the first call, not retrained
    assert np.asarray(states.step).tolist() == [4 * 4, 4 * 4]
    assert_trees(states, reference, exact=True)
    assert [r["loss"] for r in history] == [r["loss"] for r in reference_history]

    # a finished run resumes to the same states without training, and restore_states reads them for scoring
    again, again_history = train(model, members, features, config, workdir=workdir)
    assert_trees(again, reference, exact=True)
    assert len(again_history) == 4 and len(_curve(workdir)) == 4
    optimizer = config.make_optimizer(NUM_CLIPS)
    assert_trees(inference.restore_states(RunDir(workdir), model, members, MELS, optimizer), reference, exact=True)
    # TensorBoard events: one folder per member, written by tensorboardX
    assert sorted(os.listdir(os.path.join(workdir, "tensorboard"))) == sorted(m.name for m in members)


def test_abstract_states_are_the_initial_states_shapes_dtypes_and_placement():
    """The restore target for scoring is traced, not compiled: it must describe exactly what init_states returns."""
    model, members = tiny_model(), [Member(0, 1e-3), Member(1, 3e-3)]
    optimizer = TrainConfig(epochs=1, batch_size=4, windows_per_clip=1).make_optimizer(NUM_CLIPS)
    real = ensemble.init_states(model, members, MELS, optimizer)
    abstract = ensemble.abstract_states(model, members, MELS, optimizer)
    assert jax.tree.structure(abstract) == jax.tree.structure(real)
    for got, want in zip(jax.tree.leaves(abstract), jax.tree.leaves(real)):
        assert isinstance(got, jax.ShapeDtypeStruct)
        assert (got.shape, got.dtype, got.sharding) == (want.shape, want.dtype, want.sharding)


def test_restore_states_without_a_checkpoint_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        inference.restore_states(RunDir(str(tmp_path)), tiny_model(), [Member(0, 1e-3)], MELS)


# ----------------------------------------------------------------------------------------------------------------------
# Schedule.


@pytest.mark.parametrize("num_clips, windows_per_clip, batch_size, steps_per_call, expected", [
    (5, 4, 8, 2, (2, 4)),  # 20 windows -> 3 steps -> 2 calls of 2
    (5, 3, 4, 10, (4, 4)),  # 15 windows -> 4 steps, fewer than steps_per_call: one call of 4
    (3, 7, 1, 10, (10, 30)),  # 21 steps -> 3 calls of 10
    (10, 32, 256, 10, (2, 2)),  # 320 windows -> 2 steps
    (64, 32, 64, 10, (10, 40)),  # exactly 32 steps -> 4 calls of 10
    (100, 1, 100, 5, (1, 1)),
    (0, 4, 8, 10, (1, 1)),  # never zero steps
])
def test_schedule(num_clips, windows_per_clip, batch_size, steps_per_call, expected):
    config = TrainConfig(epochs=1, batch_size=batch_size, windows_per_clip=windows_per_clip,
                         steps_per_call=steps_per_call)
    per_call, per_epoch = config.schedule_steps(num_clips)
    assert (per_call, per_epoch) == expected
    needed = max(1, math.ceil(num_clips * windows_per_clip / batch_size))
    assert per_epoch % per_call == 0 and needed <= per_epoch < needed + per_call and per_call <= steps_per_call


def test_auto_member_map_is_the_models_choice_on_one_cpu_and_vmap_elsewhere():
    from types import SimpleNamespace

    cpu = jax.devices("cpu")[:1]
    assert distributed.plan_layout(8, 64, "auto", cpu).member_map == "map"
    assert distributed.plan_layout(8, 64, "auto", cpu, cpu_member_map="vmap").member_map == "vmap"
    assert distributed.plan_layout(8, 64, "map", cpu, cpu_member_map="vmap").member_map == "map"  # asked for: kept
    assert distributed.plan_layout(1, 64, "auto", cpu, cpu_member_map="vmap").member_map == "map"  # one member
    gpu = [SimpleNamespace(platform="gpu")]
    assert distributed.plan_layout(8, 64, "auto", gpu, cpu_member_map="map").member_map == "vmap"
    config = get_config()
    registry.get("id_classifier").resolve_config(config)  # its whole-clip frames=0 -> the clip's 313 frames
    assert registry.get("dense_ae").window_model(config).cpu_member_map == "vmap"
    assert {registry.get(m).window_model(config).cpu_member_map for m in ("lstm", "gru_ae", "id_classifier")} == {"map"}
