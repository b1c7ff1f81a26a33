"""VGGish: Flax frontend and body against the TensorFlow fixture model, weight conversion, model loading, errors,
pooling and the clip-vector cache. All offline: the model is the random-weight fixture of conftest.py."""

import os
import shutil
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from asd_jax.embeddings import convert, testing
from asd_jax.embeddings import vggish as V
from asd_jax.models import vggish as M
from tests.conftest import write_wav

UNREACHABLE = "https://tfhub.invalid/google/vggish/1"  # .invalid never resolves (RFC 2606)


def test_heavy_modules_do_not_import_tensorflow():
    code = ("import sys\n"
            "import asd_jax.methods.ocsvm, asd_jax.models.vggish\n"
            "import asd_jax.embeddings.vggish, asd_jax.embeddings.convert\n"
            "from asd_jax.embeddings.vggish import VGGishUnavailableError, load_tf_vggish\n"
            "try:\n    load_tf_vggish('/nonexistent/vggish')\nexcept VGGishUnavailableError:\n    pass\n"
            "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("samples, patches", [
    (160_000, 10), (M.MIN_SAMPLES, 1), (M.MIN_SAMPLES - 1, 0), (40_000, 2), (8_000, 0), (100, 0)])
def test_patch_counts_match_tf_model(tf_model, samples, patches):
    wave = np.zeros(samples, np.float32)
    assert M.num_patches(samples) == patches
    assert M.log_mel_patches(wave).shape == (patches, 96, 64)
    if patches:  # TF's CPU conv2d mishandles an empty batch, so the TF graph cannot run below one patch
        assert tuple(tf_model(wave).shape) == (patches, 128)


def test_mel_matrix_matches_tf():
    import tensorflow as tf

    reference = tf.signal.linear_to_mel_weight_matrix(64, 257, 16_000, 125.0, 7500.0).numpy()
    ours = M.mel_matrix()
    assert ours.shape == (257, 64) and np.all(ours[0] == 0)
    assert np.max(np.abs(ours - reference)) < 1e-5


def test_frontend_matches_tf(waveforms):
    import tensorflow as tf

    for wave in waveforms:
        reference = testing.tf_log_mel_patches(tf.constant(wave)).numpy()
        ours = np.asarray(M.log_mel_patches(wave))
        assert ours.shape == reference.shape
        assert np.max(np.abs(ours - reference)) < 1e-3
    batched = np.asarray(M.log_mel_patches(np.stack(waveforms[:2])))
    assert batched.shape == (2, 10, 96, 64)
    np.testing.assert_allclose(batched[1], M.log_mel_patches(waveforms[1]), atol=1e-5)


def test_tf_model_shapes_and_live_activations(tf_model, waveforms):
    ten_seconds = tf_model(waveforms[0]).numpy()
    assert ten_seconds.shape == (10, 128) and ten_seconds.dtype == np.float32
    assert np.all(np.isfinite(ten_seconds)) and ten_seconds.std() > 0.1
    assert tf_model(waveforms[2]).shape == (2, 128)


def test_flax_embeddings_match_tf(tf_extractor, flax_extractor, waveforms):
    reference = tf_extractor.embed_clips(waveforms)
    ours = flax_extractor.embed_clips(waveforms)
    assert [e.shape for e in ours] == [(10, 128), (10, 128), (2, 128)]
    for mine, theirs in zip(ours, reference):
        assert mine.shape == theirs.shape
        assert np.max(np.abs(mine - theirs)) < 1e-3


def test_embed_is_batched_and_jitted(flax_extractor, waveforms):
    batch = np.stack(waveforms[:2])
    together = np.asarray(M.embed(flax_extractor.params, batch))
    alone = np.asarray(M.embed(flax_extractor.params, batch[1:]))
    assert together.shape == (2, 10, 128)
    np.testing.assert_allclose(together[1], alone[0], atol=1e-4)


def test_short_clips_are_padded_to_one_patch(tf_model, tf_extractor, flax_extractor, monkeypatch):
    short = (0.1 * np.random.default_rng(1).standard_normal(8_000)).astype(np.float32)
    (embedding,) = flax_extractor.embed_clips([short])
    padded = np.pad(short, (0, M.MIN_SAMPLES - short.size))
    assert embedding.shape == (1, 128)
    assert np.max(np.abs(embedding - tf_model(padded).numpy())) < 1e-3
    for extractor in (tf_extractor, flax_extractor):  # unpadded, like the TF-Hub model: no full patch, no row
        monkeypatch.setattr(extractor, "pad_short", False)
        assert extractor.embed_clips([short])[0].shape == (0, 128)


def test_clip_vectors():
    clips = [np.random.default_rng(0).standard_normal((2, 128)), np.ones((3, 128))]
    mean = V.clip_vectors(clips, "mean")
    assert mean.shape == (2, 128) and mean.dtype == np.float32
    np.testing.assert_allclose(mean[0], clips[0].mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(mean[1], 1.0)
    both = V.VGGishExtractor.clip_vectors(clips, "mean_std")
    assert both.shape == (2, 256)
    np.testing.assert_allclose(both[:, :128], mean)
    np.testing.assert_allclose(both[1, 128:], 0.0)
    assert V.clip_vectors([], "mean").shape == (0, 128)
    with pytest.raises(ValueError, match="at least one 0.96 s patch"):
        V.clip_vectors([np.zeros((0, 128))])
    with pytest.raises(ValueError, match="pooling"):
        V.clip_vectors(clips, "max")


def test_tf1_checkpoint_round_trip(tf_model, vggish_checkpoint, vggish_arrays):
    from_saved_model = convert.params_from_saved_model(tf_model)
    from_checkpoint = convert.params_from_checkpoint(vggish_checkpoint)
    assert jax.tree.structure(from_saved_model) == jax.tree.structure(M.init_params(jax.random.key(0)))
    assert jax.tree.all(jax.tree.map(np.array_equal, from_saved_model, from_checkpoint))
    arrays = convert.arrays_from_params(from_checkpoint)
    assert sorted(arrays) == sorted(vggish_arrays)
    assert all(np.array_equal(arrays[name], vggish_arrays[name]) for name in arrays)


def test_flax_backend_runs_from_checkpoint(vggish_checkpoint, flax_extractor, waveforms):
    extractor = V.VGGishExtractor(vggish_checkpoint, backend="flax", batch_size=2, progress=False)
    np.testing.assert_array_equal(extractor.embed_clips(waveforms[:1])[0], flax_extractor.embed_clips(waveforms[:1])[0])
    with pytest.raises(V.VGGishUnavailableError, match="only the Flax backend"):
        V.VGGishExtractor(vggish_checkpoint, backend="tf")


def test_conversion_errors_name_the_problem(vggish_arrays):
    arrays = dict(vggish_arrays)
    del arrays["vggish/conv3/conv3_2/biases"]
    arrays["vggish/fc2/weights"] = np.zeros((4096, 64), np.float32)
    with pytest.raises(convert.ConversionError) as error:
        convert.params_from_arrays(arrays)
    assert "missing: vggish/conv3/conv3_2/biases" in str(error.value)
    assert "vggish/fc2/weights: shape (4096, 64), expected (4096, 128)" in str(error.value)
    prefixed = {f"outer/{name}:0": value for name, value in vggish_arrays.items()}
    assert convert.params_from_arrays(prefixed)["fc2"]["kernel"].shape == (4096, 128)


def test_load_from_tfhub_cache_dir_offline(vggish_dir, tf_model, waveforms, tmp_path, monkeypatch):
    """A model placed where tensorflow_hub caches the default handle loads with no network."""
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "hub"))
    from tensorflow_hub import compressed_module_resolver

    cached = V.hub_cache_path(V.DEFAULT_HANDLE)
    assert cached == compressed_module_resolver._module_dir(V.DEFAULT_HANDLE)  # tensorflow_hub's own layout
    shutil.copytree(vggish_dir, cached, copy_function=os.link)  # a real folder, files hard-linked to save space
    with open(cached + ".descriptor.txt", "w") as handle:
        handle.write(f"Module: {V.DEFAULT_HANDLE}\n")
    try:
        assert V.resolve_source(V.DEFAULT_HANDLE).kind == "hub_cache"
        model = V.load_tf_vggish(V.DEFAULT_HANDLE)
        np.testing.assert_array_equal(model(waveforms[0]).numpy(), tf_model(waveforms[0]).numpy())
    finally:
        shutil.rmtree(cached)  # hard links would keep the 280 MB of weights alive in pytest's kept tmp dirs


def test_missing_local_model_fails_fast():
    start = time.monotonic()
    with pytest.raises(V.VGGishUnavailableError) as error:
        V.load_tf_vggish("/nonexistent/vggish")
    assert time.monotonic() - start < 2.0
    assert "--vggish_handle=" in str(error.value) and "does not exist" in str(error.value)


def test_unreachable_handle_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "empty_cache"))
    start = time.monotonic()
    with pytest.raises(V.VGGishUnavailableError) as error:
        V.VGGishExtractor(UNREACHABLE, backend="flax")
    assert time.monotonic() - start < 15.0
    message = str(error.value)
    assert "--vggish_handle=" in message and V.hub_cache_path(UNREACHABLE) in message and "TFHUB_CACHE_DIR" in message


def test_reachability_probe_gives_up_on_time(monkeypatch):
    def stalled(*args, **kwargs):
        time.sleep(3.0)
        raise OSError("stalled")

    monkeypatch.setattr(socket, "create_connection", stalled)
    start = time.monotonic()
    reason = V._reachable("https://tfhub.dev/google/vggish/1", timeout_s=0.3)
    assert time.monotonic() - start < 1.5 and "no answer" in reason


def test_folder_without_model_is_reported(tmp_path):
    with pytest.raises(V.VGGishUnavailableError, match="without saved_model.pb"):
        V.resolve_source(str(tmp_path))


def test_clip_vectors_are_cached(vggish_dir, flax_extractor, tmp_path, monkeypatch):
    paths = [str(tmp_path / f"clip_{i}.wav") for i in range(3)]
    for index, path in enumerate(paths):
        write_wav(path, seconds=2.0, seed=index)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not a wav file")
    clips = paths + [str(broken)]
    cache_root = str(tmp_path / "cache")

    first = V.clip_embeddings(clips, pooling="mean_std", cache_root=cache_root, duration_s=2.0,
                              extractor=flax_extractor, progress=False)
    assert not first.cache_hit and first.vectors.shape == (3, 256) and first.paths == paths
    assert [entry["file"] for entry in first.skipped] == [str(broken)]

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded despite a valid cache")

    monkeypatch.setattr(V, "VGGishExtractor", no_model)
    second = V.clip_embeddings(clips, handle=vggish_dir, backend="flax", pooling="mean_std", cache_root=cache_root,
                               duration_s=2.0, progress=False)
    assert second.cache_hit and second.paths == paths and second.skipped == first.skipped
    np.testing.assert_array_equal(second.vectors, first.vectors)
    with pytest.raises(AssertionError, match="despite a valid cache"):  # another pooling is another key
        V.clip_embeddings(clips, handle=vggish_dir, backend="flax", pooling="mean", cache_root=cache_root,
                          duration_s=2.0, progress=False)


@pytest.mark.parametrize("damage", ["vectors", "truncated", "index"])
def test_damaged_clip_vector_cache_is_detected_and_rebuilt(flax_extractor, tmp_path, damage):
    paths = [str(tmp_path / f"clip_{i}.wav") for i in range(2)]
    for index, path in enumerate(paths):
        write_wav(path, seconds=1.0, seed=index)
    cache_root = str(tmp_path / "cache")
    embed = lambda: V.clip_embeddings(paths, cache_root=cache_root, duration_s=1.0, extractor=flax_extractor,
                                      progress=False)
    built = embed()
    assert os.path.isfile(built.cache_dir + ".lock")  # built under the cache entry's lock, as the features
    vectors_path = os.path.join(built.cache_dir, "vectors.npy")
    if damage == "vectors":  # same size, other bytes: only the checksum tells
        with open(vectors_path, "r+b") as handle:
            handle.seek(os.path.getsize(vectors_path) - 4)
            handle.write(np.float32(1e6).tobytes())
    elif damage == "truncated":
        os.truncate(vectors_path, os.path.getsize(vectors_path) - 100)
    else:
        with open(os.path.join(built.cache_dir, "index.json"), "w") as handle:
            handle.write('{"key": ')
    rebuilt = embed()
    assert not rebuilt.cache_hit
    np.testing.assert_array_equal(rebuilt.vectors, built.vectors)
    assert embed().cache_hit


def test_flax_matches_tf_on_real_clips(realdata, tf_extractor, flax_extractor):
    from asd_jax.data.audio import load_audio

    folder = os.path.join(realdata, "dcase2020t2_dev_mamisoa", "slider")
    names = sorted(os.listdir(folder))
    clips = [load_audio(os.path.join(folder, name)) for name in (names[0], names[-1])]
    for mine, theirs in zip(flax_extractor.embed_clips(clips), tf_extractor.embed_clips(clips)):
        assert mine.shape == theirs.shape == (10, 128)
        assert np.max(np.abs(mine - theirs)) < 1e-3
