"""VGGish weights from TensorFlow into Flax params for :class:`asd_jax.models.vggish.VGGish`.

Two sources, both matched by the variable names of the original model (``vggish/conv3/conv3_1/weights`` ...):

* a TF SavedModel, e.g. the TF-Hub ``google/vggish/1`` model (already loaded, or a folder to load);
* the original TF1 checkpoint ``vggish_model.ckpt`` of tensorflow/models, read with ``tf.train.load_checkpoint``.

TensorFlow and Flax store kernels alike (HWIO convolutions, [in, out] dense), so arrays copy unchanged. TensorFlow
is imported only inside the functions that read TensorFlow files.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from asd_jax.models.vggish import CONV_BLOCKS, DENSE_LAYERS, NUM_BANDS, PATCH_FRAMES

# Flax layer name -> variable scope in the original model (slim.repeat nests conv3_1 under conv3, fc1_1 under fc1).
TF_SCOPES = {
    "conv1": "vggish/conv1",
    "conv2": "vggish/conv2",
    "conv3_1": "vggish/conv3/conv3_1",
    "conv3_2": "vggish/conv3/conv3_2",
    "conv4_1": "vggish/conv4/conv4_1",
    "conv4_2": "vggish/conv4/conv4_2",
    "fc1_1": "vggish/fc1/fc1_1",
    "fc1_2": "vggish/fc1/fc1_2",
    "fc2": "vggish/fc2",
}
_FLAX_TO_TF_LEAF = {"kernel": "weights", "bias": "biases"}


class ConversionError(ValueError):
    """The TensorFlow weights do not fit VGGish: variables missing or of the wrong shape."""


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Original variable name -> shape, for every VGGish variable (18 in all)."""
    shapes, channels = {}, 1
    for block in CONV_BLOCKS:
        for name, width in block:
            shapes[f"{TF_SCOPES[name]}/weights"] = (3, 3, channels, width)
            shapes[f"{TF_SCOPES[name]}/biases"] = (width,)
            channels = width
    features = (PATCH_FRAMES // 2 ** len(CONV_BLOCKS)) * (NUM_BANDS // 2 ** len(CONV_BLOCKS)) * channels
    for name, width in DENSE_LAYERS:
        shapes[f"{TF_SCOPES[name]}/weights"] = (features, width)
        shapes[f"{TF_SCOPES[name]}/biases"] = (width,)
        features = width
    return shapes


def _clean(name: str) -> str:
    """'vggish/conv1/weights:0' -> 'vggish/conv1/weights'."""
    return name.split(":")[0]


def _lookup(arrays: Mapping[str, Any], name: str) -> tuple[str | None, str | None]:
    """(key in ``arrays`` for ``name``, or None; ambiguity note). Exact name first, else a unique '.../name' suffix."""
    if name in arrays:
        return name, None
    suffixed = [key for key in arrays if key.endswith("/" + name)]
    if len(suffixed) == 1:
        return suffixed[0], None
    return None, (f"{name} matches several variables: {sorted(suffixed)}" if suffixed else None)


def params_from_arrays(
    arrays: Mapping[str, Any], source: str = "the given weights", available: Iterable[str] | None = None
) -> dict:
    """Flax params from {original variable name: array}; names may carry ':0' or an outer scope prefix.

    Every VGGish variable must be present with its exact shape; all problems are reported in one
    :class:`ConversionError`. Variables that are not VGGish's (optimizer slots, global_step) are ignored.
    ``available`` lists every variable of the source, for the error message, when ``arrays`` holds only some.
    """
    arrays = {_clean(name): value for name, value in arrays.items()}
    params: dict[str, dict[str, np.ndarray]] = {}
    missing, mismatched, ambiguous = [], [], []
    for flax_name, scope in TF_SCOPES.items():
        for flax_leaf, tf_leaf in _FLAX_TO_TF_LEAF.items():
            name = f"{scope}/{tf_leaf}"
            key, note = _lookup(arrays, name)
            if key is None:
                if note:
                    ambiguous.append(note)
                else:
                    missing.append(name)
                continue
            value = np.asarray(arrays[key], np.float32)
            if value.shape != expected_shapes()[name]:
                mismatched.append(f"{key}: shape {value.shape}, expected {expected_shapes()[name]}")
                continue
            params.setdefault(flax_name, {})[flax_leaf] = value
    if missing or mismatched or ambiguous:
        problems = ([f"missing: {', '.join(missing)}"] if missing else []) + mismatched + ambiguous
        names = sorted({_clean(name) for name in available} if available is not None else arrays)
        found = ", ".join(names[:12]) + (" ..." if len(names) > 12 else "")
        raise ConversionError(f"{source} is not a VGGish model: {'; '.join(problems)} (found: {found or 'none'})")
    return params


def arrays_from_params(params: Mapping[str, Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """The inverse of :func:`params_from_arrays`: {original variable name: float32 array}."""
    return {f"{TF_SCOPES[flax_name]}/{_FLAX_TO_TF_LEAF[leaf]}": np.asarray(value, np.float32)
            for flax_name, leaves in params.items() for leaf, value in leaves.items()}


def tf_variables(model: Any) -> dict[str, Any]:
    """{variable name: tf.Variable} of every variable reachable from a loaded SavedModel (or any trackable)."""
    import tensorflow as tf

    variables = {}
    for trackable in tf.train.TrackableView(model).descendants():
        if isinstance(trackable, tf.Variable):
            variables.setdefault(_clean(trackable.name), trackable)
    return variables


def params_from_saved_model(model: Any) -> dict:
    """Flax params from a loaded TF SavedModel / TF-Hub model, or from the path of a SavedModel folder."""
    import tensorflow as tf

    source = f"the SavedModel at {model}" if isinstance(model, str) else "the loaded TensorFlow model"
    if isinstance(model, str):
        model = tf.saved_model.load(model)
    return params_from_arrays({name: variable.numpy() for name, variable in tf_variables(model).items()}, source)


def params_from_checkpoint(path: str) -> dict:
    """Flax params from the original TF1 checkpoint (``vggish_model.ckpt``, V1 or V2 format)."""
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(path)
    except (tf.errors.OpError, ValueError) as error:
        raise ConversionError(f"cannot read a TensorFlow checkpoint at {path}: {error}") from error
    names = reader.get_variable_to_shape_map()
    wanted = {name for name in names if any(name == n or name.endswith("/" + n) for n in expected_shapes())}
    return params_from_arrays({name: reader.get_tensor(name) for name in wanted}, f"the checkpoint {path}", names)
