"""A VGGish-shaped TensorFlow model with random weights, for tests and benchmarks where the real one cannot be had.

It is built the way ``vggish_export_tfhub.py`` (tensorflow/models) builds the TF-Hub model: a TF1-style graph whose
variables carry the original checkpoint's names (``vggish/conv3/conv3_1/weights`` ...), wrapped by
``tf.compat.v1.wrap_function`` in a ``tf.Module`` whose ``__call__(waveform [samples]) -> [patches, 128]``, so
``hub.load(folder)(waveform)`` behaves as with the real model. The frontend is written in ``tf.signal`` ops as in
the real graph, independently of the JAX one in :mod:`asd_jax.models.vggish`: comparing them is a real check.

Weights are He-uniform (biases small and random) so that activations neither die nor explode through the ten layers;
the real model's weights are of course different. TensorFlow is imported inside the functions.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from asd_jax.embeddings.convert import expected_shapes
from asd_jax.models import vggish

FIXTURE_NOTE = "VGGish-shaped model with random weights (asd_jax.embeddings.testing), not the real VGGish"


def random_vggish_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """{original variable name: float32 array}: He-uniform weights (variance 2 / fan-in), U(-0.1, 0.1) biases."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, shape in expected_shapes().items():
        limit = np.sqrt(6.0 / np.prod(shape[:-1])) if name.endswith("/weights") else 0.1
        arrays[name] = (rng.random(shape, dtype=np.float32) * 2.0 - 1.0) * np.float32(limit)
    return arrays


def tf_log_mel_patches(waveform: Any) -> Any:
    """[samples] float32 tf.Tensor -> [patches, 96, 64] log-mel patches, in TensorFlow ops as the TF-Hub graph."""
    import tensorflow as tf

    magnitude = tf.abs(tf.signal.stft(waveform, frame_length=vggish.STFT_WINDOW, frame_step=vggish.STFT_HOP,
                                      fft_length=vggish.FFT_LENGTH))  # periodic Hann, no end padding
    weights = tf.signal.linear_to_mel_weight_matrix(
        num_mel_bins=vggish.NUM_BANDS, num_spectrogram_bins=vggish.FFT_LENGTH // 2 + 1,
        sample_rate=vggish.SAMPLE_RATE, lower_edge_hertz=vggish.MEL_MIN_HZ, upper_edge_hertz=vggish.MEL_MAX_HZ)
    log_mel = tf.math.log(tf.matmul(magnitude, weights) + vggish.LOG_OFFSET)
    return tf.signal.frame(log_mel, vggish.PATCH_FRAMES, vggish.PATCH_FRAMES, axis=-2)


def _tf1_body(features: Any) -> Any:
    """[patches, 96, 64] -> [patches, 128]: the VGGish layers as TF1 variables under the original scopes."""
    import tensorflow as tf

    v1 = tf.compat.v1

    def layer(net, scope, shape, conv):
        with v1.variable_scope(scope):
            weights = v1.get_variable("weights", shape=shape, trainable=False)
            biases = v1.get_variable("biases", shape=shape[-1:], trainable=False)
        if conv:
            return tf.nn.conv2d(net, weights, strides=1, padding="SAME") + biases
        return tf.matmul(net, weights) + biases

    def pool(net):
        return tf.nn.max_pool2d(net, ksize=2, strides=2, padding="SAME")

    shapes = expected_shapes()
    with v1.variable_scope("vggish"):
        net = tf.reshape(features, [-1, vggish.PATCH_FRAMES, vggish.NUM_BANDS, 1])
        net = pool(tf.nn.relu(layer(net, "conv1", shapes["vggish/conv1/weights"], True)))
        net = pool(tf.nn.relu(layer(net, "conv2", shapes["vggish/conv2/weights"], True)))
        for block in ("conv3", "conv4"):
            with v1.variable_scope(block):
                for index in (1, 2):
                    scope = f"{block}_{index}"
                    net = tf.nn.relu(layer(net, scope, shapes[f"vggish/{block}/{scope}/weights"], True))
            net = pool(net)
        net = tf.reshape(net, [tf.shape(net)[0], -1])
        with v1.variable_scope("fc1"):
            for scope in ("fc1_1", "fc1_2"):
                net = tf.nn.relu(layer(net, scope, shapes[f"vggish/fc1/{scope}/weights"], False))
        net = layer(net, "fc2", shapes["vggish/fc2/weights"], False)
    return tf.identity(net, name="embedding")


def build_tf_vggish(arrays: dict[str, np.ndarray]) -> Any:
    """A ``tf.Module`` computing VGGish embeddings of a 1-D waveform with the given weights, like the TF-Hub model."""
    import tensorflow as tf

    class RandomVGGish(tf.Module):
        def __init__(self):
            super().__init__()
            self._variables = []

            def take_initial_value(next_creator, **kwargs):
                kwargs["initial_value"] = arrays[kwargs["name"]]
                variable = next_creator(**kwargs)
                self._variables.append(variable)
                return variable

            def define(waveform):
                with tf.variable_creator_scope(take_initial_value):
                    return _tf1_body(tf_log_mel_patches(waveform))

            self._vggish_fn = tf.compat.v1.wrap_function(define, signature=(tf.TensorSpec([None], tf.float32),))

        @tf.function(input_signature=(tf.TensorSpec([None], tf.float32),))
        def __call__(self, waveform):
            return self._vggish_fn(waveform)

    return RandomVGGish()


def save_random_vggish(directory: str, seed: int = 0, arrays: dict[str, np.ndarray] | None = None) -> str:
    """Save a random-weight VGGish SavedModel into ``directory`` (a TF-Hub-style model folder); returns it."""
    import tensorflow as tf

    module = build_tf_vggish(arrays if arrays is not None else random_vggish_arrays(seed))
    tf.saved_model.save(module, directory)
    return directory


def save_tf1_checkpoint(arrays: dict[str, np.ndarray], path: str) -> str:
    """Write ``arrays`` under their names as a single-file V1 Saver checkpoint, the format of ``vggish_model.ckpt``.

    Returns the path to pass to ``tf.train.load_checkpoint``. Values are fed in, not baked into the graph.
    """
    import tensorflow as tf

    v1 = tf.compat.v1
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with tf.Graph().as_default(), v1.Session() as session:
        assignments, feeds = [], {}
        for name, value in arrays.items():
            variable = v1.get_variable(name, shape=value.shape, dtype=tf.float32, initializer=v1.zeros_initializer())
            placeholder = v1.placeholder(tf.float32, value.shape)
            assignments.append(variable.assign(placeholder))
            feeds[placeholder] = value
        session.run(assignments, feed_dict=feeds)
        saver = v1.train.Saver(v1.global_variables(), write_version=v1.train.SaverDef.V1)
        return saver.save(session, path, write_meta_graph=False, write_state=False)
