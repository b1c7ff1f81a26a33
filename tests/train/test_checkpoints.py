"""Checkpoints: a damaged newest step is skipped (one warning) for the intact one before it; mismatches are errors."""

import logging
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import struct

from asd_jax.train.checkpoints import CheckpointError, CheckpointMismatchError, Checkpoints

LOGGER = "asd_jax.train.checkpoints"


class State(struct.PyTreeNode):
    step: jax.Array
    params: dict
    data_key: jax.Array


def make_state(seed: int, width: int = 4096, dtype=jnp.float32) -> State:
    """Two members; ``params["w"]`` is random (incompressible), so its data file is the biggest one."""
    key = jax.random.PRNGKey(seed)
    return State(step=jnp.full((2,), seed, jnp.int32),
                 params={"w": jax.random.normal(key, (2, width), dtype), "b": jnp.full((2, 3), seed, dtype)},
                 data_key=jax.random.split(key, 2))


def assert_same(a, b) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def files_of(folder: str) -> list[str]:
    return [os.path.join(root, name) for root, _, names in os.walk(folder) for name in names]


def biggest_file(folder: str) -> str:
    return max(files_of(folder), key=os.path.getsize)


def truncate_biggest(folder):
    path = biggest_file(folder)
    os.truncate(path, os.path.getsize(path) // 2)


def empty_biggest(folder):
    os.truncate(biggest_file(folder), 0)


def flip_middle_of_biggest(folder):
    path = biggest_file(folder)
    middle = os.path.getsize(path) // 2
    with open(path, "r+b") as handle:
        handle.seek(middle)
        data = handle.read(16)
        handle.seek(middle)
        handle.write(bytes(b ^ 0xFF for b in data))


def delete_biggest(folder):
    os.remove(biggest_file(folder))


def delete_array_metadata(folder):
    os.remove(os.path.join(folder, "default", "_METADATA"))


def garble_array_metadata(folder):
    path = os.path.join(folder, "default", "_METADATA")
    os.truncate(path, os.path.getsize(path) // 2)


def delete_step_metadata(folder):
    os.remove(os.path.join(folder, "_CHECKPOINT_METADATA"))


def delete_ocdbt_manifest(folder):
    os.remove(os.path.join(folder, "default", "manifest.ocdbt"))


def empty_step_folder(folder):
    shutil.rmtree(folder)
    os.makedirs(folder)


CORRUPTIONS = [truncate_biggest, empty_biggest, flip_middle_of_biggest, delete_biggest, delete_array_metadata,
               garble_array_metadata, delete_step_metadata, delete_ocdbt_manifest, empty_step_folder]


@pytest.fixture
def saved(tmp_path) -> str:
    """A directory with steps 1 and 2 of ``make_state(1)`` / ``make_state(2)``."""
    directory = str(tmp_path / "checkpoints")
    with Checkpoints(directory) as checkpoints:
        checkpoints.save(1, make_state(1))
        checkpoints.save(2, make_state(2))
        assert checkpoints.steps() == [1, 2]
    return directory


def test_round_trip_restores_the_latest_exactly(saved):
    with Checkpoints(saved) as checkpoints:
        step, state = checkpoints.restore_latest(make_state(0))
    assert step == 2
    assert isinstance(state, State)
    assert_same(state, make_state(2))


def test_empty_directory_has_no_checkpoint(tmp_path):
    with Checkpoints(str(tmp_path / "none")) as checkpoints:
        assert checkpoints.steps() == []
        assert checkpoints.restore_latest(make_state(0)) == (None, None)


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__)
def test_damaged_latest_falls_back_to_the_previous(saved, corrupt, caplog):
    step2 = os.path.join(saved, "2")
    corrupt(step2)
    with caplog.at_level(logging.WARNING, logger=LOGGER), Checkpoints(saved) as checkpoints:
        step, state = checkpoints.restore_latest(make_state(0))
        assert step == 1
        assert_same(state, make_state(1))
        skips = [r.getMessage() for r in caplog.records if r.name == LOGGER and "skipping" in r.getMessage()]
        assert len(skips) == 1 and step2 in skips[0]
        assert "\n" not in skips[0] and len(skips[0]) < 500
        # The damaged step was moved aside with its reason, so the resumed run can save step 2 (and on) again.
        assert checkpoints.steps() == [1]
        [moved] = os.listdir(os.path.join(saved, "corrupt"))
        assert moved.startswith("2-")
        assert open(os.path.join(saved, "corrupt", moved, "reason.txt")).read().strip()
        checkpoints.save(2, make_state(12))
        checkpoints.save(3, make_state(13))
        assert checkpoints.steps() == [2, 3]  # max_to_keep=2 still prunes; the moved folder does not count
        assert checkpoints.restore_latest(make_state(0))[0] == 3


def test_flipped_bytes_that_orbax_reads_silently_are_caught_by_the_checksum(saved, caplog):
    flip_middle_of_biggest(os.path.join(saved, "2"))
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), make_state(0))
    plain = ocp.CheckpointManager(saved, options=ocp.CheckpointManagerOptions(enable_async_checkpointing=False))
    garbage = plain.restore(2, args=ocp.args.StandardRestore(abstract))
    plain.close()
    assert not np.array_equal(np.asarray(garbage.params["w"]), np.asarray(make_state(2).params["w"]))
    with caplog.at_level(logging.WARNING, logger=LOGGER), Checkpoints(saved) as checkpoints:
        assert checkpoints.restore_latest(make_state(0))[0] == 1
    assert "was changed after the save (checksum mismatch)" in caplog.text  # the file manifest, before Orbax


def test_damage_behind_a_consistent_file_manifest_is_caught_by_the_leaf_checksums(saved, caplog):
    """Second line of defence: files rewritten together with their manifest still restore the wrong numbers."""
    from asd_jax.train import checkpoints as checkpoints_module

    flip_middle_of_biggest(os.path.join(saved, "2"))
    checkpoints_module._write_file_manifest(os.path.join(saved, "2"))
    with caplog.at_level(logging.WARNING, logger=LOGGER), Checkpoints(saved) as checkpoints:
        assert checkpoints.restore_latest(make_state(0))[0] == 1
    assert "checksum mismatch in .params['w']" in caplog.text


@pytest.mark.parametrize("corrupt", [truncate_biggest, delete_step_metadata], ids=lambda f: f.__name__)
def test_all_damaged_raises_with_the_folder_and_the_fix(saved, corrupt):
    corrupt(os.path.join(saved, "1"))
    corrupt(os.path.join(saved, "2"))
    with Checkpoints(saved) as checkpoints, pytest.raises(CheckpointError) as raised:
        checkpoints.restore_latest(make_state(0))
    message = str(raised.value)
    assert saved in message and "step 1" in message and "step 2" in message
    assert "Delete" in message and "--workdir" in message
    assert sorted(os.listdir(saved)) == ["1", "2"]  # nothing moved when nothing restores


@pytest.mark.parametrize("like", [make_state(0, width=2048), make_state(0, dtype=jnp.bfloat16)],
                         ids=["shape", "dtype"])
def test_settings_mismatch_is_an_error_not_a_fallback(saved, like):
    with Checkpoints(saved) as checkpoints, pytest.raises(CheckpointMismatchError) as raised:
        checkpoints.restore_latest(like)
    message = str(raised.value)
    assert os.path.join(saved, "2") in message and ".params['w']" in message and "--workdir" in message
    assert "float32(2, 4096)" in message
    assert sorted(os.listdir(saved)) == ["1", "2"]


def test_tree_mismatch_is_an_error(saved):
    like = {"params": make_state(0).params}
    with Checkpoints(saved) as checkpoints, pytest.raises(CheckpointMismatchError, match="saved .* expected nothing"):
        checkpoints.restore_latest(like)


def test_leftover_of_a_killed_save_is_ignored_and_cleaned(saved):
    """A save killed mid-way (SIGKILL) leaves Orbax's uncommitted ``<step>.orbax-checkpoint-tmp`` folder."""
    leftover = os.path.join(saved, "3.orbax-checkpoint-tmp")
    shutil.copytree(os.path.join(saved, "2"), leftover)
    truncate_biggest(leftover)
    with Checkpoints(saved) as checkpoints:
        assert checkpoints.steps() == [1, 2]
        assert checkpoints.restore_latest(make_state(0))[0] == 2
        checkpoints.save(3, make_state(3))
        assert not os.path.exists(leftover)
        step, state = checkpoints.restore_latest(make_state(0))
    assert step == 3
    assert_same(state, make_state(3))


def test_saving_an_existing_step_is_refused(saved):
    with Checkpoints(saved) as checkpoints, pytest.raises(CheckpointError, match="already exists"):
        checkpoints.save(2, make_state(5))


def test_a_save_killed_before_it_was_sealed_is_set_aside_not_trusted(tmp_path, caplog):
    """Orbax committed the step but the process died before the file manifest was written (or another program
    wrote it): never restored, set aside with a warning, and the run starts as if the save had not happened."""
    directory = str(tmp_path / "checkpoints")
    plain = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(enable_async_checkpointing=False))
    plain.save(1, args=ocp.args.StandardSave(make_state(1)))
    plain.close()
    with caplog.at_level(logging.WARNING, logger=LOGGER), Checkpoints(directory) as checkpoints:
        assert checkpoints.restore_latest(make_state(0)) == (None, None)
        assert checkpoints.steps() == []
        checkpoints.save(1, make_state(2))  # the step can be saved again
        assert checkpoints.restore_latest(make_state(0))[0] == 1
    assert "unfinished save" in caplog.text


def test_an_unfinished_newest_save_falls_back_to_the_sealed_one(saved):
    os.remove(os.path.join(saved, "2", "asd_jax_files.json"))
    with Checkpoints(saved) as checkpoints:
        step, state = checkpoints.restore_latest(make_state(0))
    assert step == 1 and np.array_equal(np.asarray(state.params["w"]), np.asarray(make_state(1).params["w"]))


def test_read_only_skips_without_moving(saved):
    truncate_biggest(os.path.join(saved, "2"))
    with Checkpoints(saved, read_only=True) as checkpoints:
        assert checkpoints.restore_latest(make_state(0))[0] == 1
        with pytest.raises(CheckpointError, match="read-only"):
            checkpoints.save(3, make_state(3))
    assert sorted(os.listdir(saved)) == ["1", "2"]
