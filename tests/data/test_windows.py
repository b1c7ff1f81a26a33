import numpy as np
import pytest

from asd_jax.data import windows as W


def _features(clips=3, frames=20, mels=4):
    return np.arange(clips * frames * mels, dtype=np.float32).reshape(clips, frames, mels)


def test_counts_and_index():
    assert W.num_windows(313, 11) == 303 and W.num_windows(313, 32, hop=16) == 18
    index = W.window_index(2, 10, 4, hop=3)
    np.testing.assert_array_equal(index, [[0, 0], [0, 3], [0, 6], [1, 0], [1, 3], [1, 6]])
    with pytest.raises(ValueError, match="does not fit"):
        W.num_windows(5, 6)


def test_sliding_windows_are_views_not_copies():
    features = _features()
    view = W.sliding_windows(features[1], 5, hop=2)
    assert view.shape == (8, 5, 4) and np.shares_memory(view, features)
    np.testing.assert_array_equal(view[3], features[1, 6:11])
    inputs, targets = W.next_frame_windows(features[0], context=10)
    assert inputs.shape == (10, 10, 4) and targets.shape == (10, 4) and np.shares_memory(inputs, features)
    np.testing.assert_array_equal(inputs[2], features[0, 2:12])
    np.testing.assert_array_equal(targets[2], features[0, 12])


def test_gather_materialises_only_the_batch():
    features = _features()
    index = np.array([[2, 5], [0, 0], [1, 15]])
    batch = W.gather(features, index, 5)
    assert batch.shape == (3, 5, 4)
    for row, (clip, start) in enumerate(index):
        np.testing.assert_array_equal(batch[row], features[clip, start:start + 5])
