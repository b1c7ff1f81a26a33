"""VGGish clip vectors for the OC-SVM method: find the model, embed clips (TensorFlow or Flax), pool, cache.

The model is the TF-Hub VGGish (``waveform [samples] -> [patches, 128]`` raw ``fc2`` embeddings, one per 0.96 s).
``handle`` names it: the TF-Hub URL (:data:`DEFAULT_HANDLE`; used offline when tensorflow_hub's cache already holds
it), a local SavedModel folder, or, for the Flax backend only, the original TF1 checkpoint ``vggish_model.ckpt``.
No model means :class:`VGGishUnavailableError`, raised before TensorFlow is even imported: never a silent fallback.

Backends: ``"tf"`` runs the TensorFlow model itself, one clip per call; ``"flax"`` converts its weights once and runs
:func:`asd_jax.models.vggish.embed`, batched and jitted. TensorFlow is imported only when a model is loaded, with
accelerators hidden from it so that JAX owns them.

Short clips: like the TF-Hub model, only full 0.96 s patches are embedded, so a clip shorter than 0.975 s has no
patch (and TensorFlow 2.21's CPU kernels mishandle the resulting empty batch: conv2d returns the wrong depth and
the graph fails). The extractor zero-pads such clips to exactly one patch by default (``pad_short``, what YAMNet's
``pad_waveform`` does) so that every clip gets a vector; with ``pad_short=False`` they give [0, 128] with either
backend (never handed to TensorFlow) and pooling them fails with a message naming the clip.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import socket
import tempfile
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from asd_jax import fileio
from asd_jax.data.audio import AudioError, load_audio
from asd_jax.models import vggish as vggish_model
from asd_jax.progress import bar as progress_bar

log = logging.getLogger(__name__)

DEFAULT_HANDLE = "https://tfhub.dev/google/vggish/1"
HANDLE_FLAG = "--vggish_handle"
CHECKPOINT_URL = "https://storage.googleapis.com/audioset/vggish_model.ckpt"
BACKENDS = ("tf", "flax")
POOLINGS = ("mean", "mean_std")


class VGGishUnavailableError(RuntimeError):
    """No VGGish model can be loaded from the given handle; the message says where to put one."""


# ----------------------------------------------------------------------------------------------------------------------
# Finding the model.


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """Where a handle's model is: ``kind`` is "saved_model", "checkpoint", "hub_cache" or "remote"."""

    kind: str
    location: str


def tfhub_cache_dir() -> str:
    """tensorflow_hub's cache folder: ``$TFHUB_CACHE_DIR``, else ``<system temp>/tfhub_modules`` (its default)."""
    return os.environ.get("TFHUB_CACHE_DIR") or os.path.join(tempfile.gettempdir(), "tfhub_modules")


def hub_cache_path(handle: str) -> str:
    """The folder tensorflow_hub caches ``handle`` in: ``<cache dir>/<sha1 hex of the handle string>``."""
    return os.path.join(tfhub_cache_dir(), hashlib.sha1(handle.encode("utf8")).hexdigest())


def _is_url(handle: str) -> bool:
    return handle.startswith(("http://", "https://", "gs://"))


def _is_saved_model(path: str) -> bool:
    return os.path.isdir(path) and any(
        os.path.isfile(os.path.join(path, name)) for name in ("saved_model.pb", "saved_model.pbtxt"))


def _is_checkpoint(path: str) -> bool:
    """A TF1 checkpoint: a V2 prefix with its ``.index`` file, or a single V1 file named like ``vggish_model.ckpt``."""
    return os.path.isfile(path + ".index") or (os.path.isfile(path) and ".ckpt" in os.path.basename(path))


def _reachable(url: str, timeout_s: float) -> str | None:
    """None when a TCP connection to the URL's host (or its proxy) opens within ``timeout_s``, else the reason.

    Runs in a daemon thread so that a slow DNS lookup cannot hold the caller past the timeout.
    """
    parsed = urllib.parse.urlparse(url)
    host, port = parsed.hostname or "", parsed.port or (443 if parsed.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parsed.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxy_url = urllib.parse.urlparse(proxy if "://" in proxy else "http://" + proxy)
        host, port = proxy_url.hostname or "", proxy_url.port or 80
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
            outcome.append(None)
        except OSError as error:
            outcome.append(f"cannot connect to {host}:{port} ({type(error).__name__}: {error})")

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout_s)
    return outcome[0] if outcome else f"no answer from {host}:{port} within {timeout_s:g} s"


def unavailable_message(handle: str, reason: str) -> str:
    """What went wrong and every way to provide the model."""
    cache_hint = (f"\n  * or put that folder at {hub_cache_path(handle)} (tensorflow_hub's cache layout: "
                  f"$TFHUB_CACHE_DIR/<sha1 hex of the handle URL>; TFHUB_CACHE_DIR is now {tfhub_cache_dir()}) "
                  f"and keep {HANDLE_FLAG}={handle};") if _is_url(handle) else ""
    return (
        f"VGGish model not available from {handle!r}: {reason}.\n"
        f"The VGGish methods (vggish_ocsvm, vggish_knn) need the pretrained VGGish; nothing is substituted for it. "
        f"To provide it:\n"
        f"  * download the TF-Hub model {DEFAULT_HANDLE} on a machine with network access (a .tar.gz with "
        f"?tf-hub-format=compressed), unpack it into a folder holding saved_model.pb and variables/, and pass "
        f"{HANDLE_FLAG}=/path/to/that/folder;"
        f"{cache_hint}\n"
        f"  * or, with the Flax backend (--config.vggish.backend=flax), pass the original TF1 checkpoint "
        f"({CHECKPOINT_URL}) as {HANDLE_FLAG}=/path/to/vggish_model.ckpt;\n"
        f"  * or run --method=logmel_ocsvm or logmel_knn, which need no pretrained weights.")


def resolve_source(handle: str = DEFAULT_HANDLE, probe_timeout_s: float = 5.0) -> ModelSource:
    """Where the model for ``handle`` is, checked without TensorFlow; raises :class:`VGGishUnavailableError` fast.

    A URL counts as available when tensorflow_hub's cache holds it or its host answers within ``probe_timeout_s``.
    """
    handle = str(handle)
    if not _is_url(handle):
        path = os.path.abspath(os.path.expanduser(handle))
        if _is_saved_model(path):
            return ModelSource("saved_model", path)
        if _is_checkpoint(path):
            return ModelSource("checkpoint", path)
        if os.path.isdir(path):
            reason = f"{path} is a folder without saved_model.pb"
        elif os.path.isfile(path):
            reason = f"{path} is neither a SavedModel folder nor a TF1 checkpoint (*.ckpt); unpack an archive first"
        else:
            reason = f"{path} does not exist"
        raise VGGishUnavailableError(unavailable_message(handle, reason))
    cached = hub_cache_path(handle)
    if os.path.isdir(cached) and os.listdir(cached):
        return ModelSource("hub_cache", cached)
    if handle.startswith("gs://"):
        return ModelSource("remote", handle)
    reason = _reachable(handle, probe_timeout_s)
    if reason is not None:
        raise VGGishUnavailableError(unavailable_message(handle, f"no network ({reason}) and not in the cache"))
    return ModelSource("remote", handle)


def import_tensorflow() -> Any:
    """``import tensorflow`` with every GPU hidden from it (before it touches them), so that JAX owns them."""
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TensorFlow was initialised earlier in this process
        if tf.config.get_visible_devices("GPU"):
            log.warning("TensorFlow was initialised before asd_jax could hide the GPUs from it; it may hold GPU memory")
    return tf


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """A default socket timeout while tensorflow_hub downloads (it sets none), so a stalled transfer fails."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def load_tf_vggish(handle: str = DEFAULT_HANDLE, probe_timeout_s: float = 5.0, download_timeout_s: float = 60.0):
    """The TF-Hub VGGish as loaded by ``tensorflow_hub.load``: callable on a 1-D float32 waveform -> [patches, 128].

    ``handle``: the TF-Hub URL (downloaded, or taken from ``$TFHUB_CACHE_DIR`` offline) or a local SavedModel folder.
    Raises :class:`VGGishUnavailableError` when there is no model, before importing TensorFlow when that is known.
    """
    source = resolve_source(handle, probe_timeout_s)
    if source.kind == "checkpoint":
        raise VGGishUnavailableError(unavailable_message(
            handle, "it is a TF1 checkpoint, which only the Flax backend can use; the TF backend needs a SavedModel"))
    import_tensorflow()
    import tensorflow_hub as hub

    target = source.location if source.kind == "saved_model" else handle
    try:
        with _socket_timeout(download_timeout_s):
            return hub.load(target)
    except Exception as error:  # noqa: BLE001 - any failure to get the model is reported the same way
        raise VGGishUnavailableError(unavailable_message(
            handle, f"loading it failed ({type(error).__name__}: {str(error)[:300]})")) from error


# ----------------------------------------------------------------------------------------------------------------------
# Embedding and pooling.


def clip_vectors(embeddings: Sequence[np.ndarray], pooling: str = "mean") -> np.ndarray:
    """Per-clip [patches, 128] embeddings -> [clips, 128] (``"mean"``) or [clips, 256] (``"mean_std"``)."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}; got {pooling!r}")
    width = vggish_model.EMBEDDING_SIZE * (2 if pooling == "mean_std" else 1)
    vectors = np.empty((len(embeddings), width), np.float32)
    for index, clip in enumerate(embeddings):
        clip = np.asarray(clip, np.float32)
        if clip.ndim != 2 or clip.shape[0] == 0:
            raise ValueError(f"clip {index} has embeddings of shape {clip.shape}: a clip needs at least one 0.96 s "
                             f"patch ({vggish_model.MIN_SAMPLES} samples at 16 kHz); embed with pad_short=True")
        parts = [clip.mean(axis=0)] + ([clip.std(axis=0)] if pooling == "mean_std" else [])
        vectors[index] = np.concatenate(parts)
    return vectors


class VGGishExtractor:
    """Embeds 16 kHz clips with VGGish through TensorFlow (``backend="tf"``) or the Flax port (``"flax"``).

    The model is loaded (and, for Flax, converted) once, in the constructor, so a missing model fails at once.
    ``precision`` applies to the Flax convolutions and dense layers ("highest": no TF32 on GPUs).
    """

    def __init__(
        self,
        handle: str = DEFAULT_HANDLE,
        backend: str = "tf",
        batch_size: int = 16,
        pad_short: bool = True,
        progress: bool = True,
        precision: str | None = "highest",
    ):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
        self.handle, self.backend, self.batch_size = str(handle), backend, max(1, int(batch_size))
        self.pad_short, self.progress, self.precision = pad_short, progress, precision
        self.tf_model, self.params = None, None
        source = resolve_source(self.handle)
        if backend == "flax" and source.kind == "checkpoint":
            from asd_jax.embeddings.convert import params_from_checkpoint

            import_tensorflow()
            self.params = params_from_checkpoint(source.location)
        else:
            model = load_tf_vggish(self.handle)
            if backend == "tf":
                self.tf_model = model
            else:
                from asd_jax.embeddings.convert import params_from_saved_model

                self.params = params_from_saved_model(model)
        if self.params is not None:
            import jax

            self.params = jax.device_put(self.params)

    def _prepare(self, waveform: np.ndarray) -> np.ndarray:
        waveform = np.asarray(waveform, np.float32)
        if waveform.ndim != 1:
            raise ValueError(f"expected a 1-D waveform, got shape {waveform.shape}")
        if self.pad_short and len(waveform) < vggish_model.MIN_SAMPLES:
            waveform = np.pad(waveform, (0, vggish_model.MIN_SAMPLES - len(waveform)))
        return waveform

    def embed_clips(self, waveforms: Sequence[np.ndarray], description: str = "VGGish") -> list[np.ndarray]:
        """1-D 16 kHz float32 waveforms -> one [patches, 128] float32 array per clip, in order.

        Flax: clips of equal length are batched ``batch_size`` at a time (the last batch zero-filled, so one shape
        compiles once). TF: one clip per call, as the TF-Hub signature takes a single waveform.
        """
        clips = [self._prepare(waveform) for waveform in waveforms]
        outputs: list[np.ndarray | None] = [None] * len(clips)
        bar = progress_bar(total=len(clips), desc=description, unit="clip", enabled=self.progress)
        try:
            if self.backend == "tf":
                for index, clip in enumerate(clips):
                    outputs[index] = self._embed_tf(clip)
                    bar.update()
            else:
                for indices in self._batches(clips):
                    for index, embedding in zip(indices, self._embed_batch([clips[i] for i in indices])):
                        outputs[index] = embedding
                    bar.update(len(indices))
        finally:
            bar.close()
        return outputs

    def _embed_tf(self, clip: np.ndarray) -> np.ndarray:
        if len(clip) < vggish_model.MIN_SAMPLES:  # no patch; TF's CPU kernels fail on the empty batch
            return np.zeros((0, vggish_model.EMBEDDING_SIZE), np.float32)
        return np.asarray(self.tf_model(clip), np.float32).reshape(-1, vggish_model.EMBEDDING_SIZE)

    def _batches(self, clips: list[np.ndarray]) -> Iterator[list[int]]:
        by_length: dict[int, list[int]] = {}
        for index, clip in enumerate(clips):
            by_length.setdefault(len(clip), []).append(index)
        for indices in by_length.values():
            for start in range(0, len(indices), self.batch_size):
                yield indices[start:start + self.batch_size]

    def _embed_batch(self, clips: list[np.ndarray]) -> np.ndarray:
        batch = np.zeros((self.batch_size, len(clips[0])), np.float32) if len(clips) < self.batch_size else None
        if batch is not None:
            batch[: len(clips)] = np.stack(clips)
        else:
            batch = np.stack(clips)
        return np.asarray(vggish_model.embed(self.params, batch, precision=self.precision))[: len(clips)]

    @staticmethod
    def clip_vectors(embeddings: Sequence[np.ndarray], pooling: str = "mean") -> np.ndarray:
        """See :func:`clip_vectors`."""
        return clip_vectors(embeddings, pooling)


# ----------------------------------------------------------------------------------------------------------------------
# On-disk cache of clip vectors (an asd_jax.fileio.CacheEntry): vectors.npy plus the JSON index with a checksum of
# sampled rows, under <cache root>/vggish/<key>.

_CACHE_VERSION = 3  # 2: the index holds the vectors' checksum; 3: short clips tiled
_VECTORS_FILE = "vectors.npy"


@dataclasses.dataclass
class EmbeddingSet:
    """Pooled VGGish vectors of the clips that loaded, in clip order, and the clips that were skipped."""

    vectors: np.ndarray  # [num_clips, 128 or 256] float32
    paths: list[str]
    skipped: list[dict]  # {"file": path, "error": message}
    cache_dir: str | None = None
    cache_hit: bool = False


def model_fingerprint(handle: str) -> str:
    """The handle, plus size and mtime of a local model's files, so that replacing a model invalidates the cache."""
    handle = str(handle)
    if _is_url(handle):
        return handle
    path = os.path.abspath(os.path.expanduser(handle))
    files = [os.path.join(path, "saved_model.pb"), os.path.join(path, "variables", "variables.index"), path,
             path + ".index"]
    stats = [f"{name}|{os.stat(name).st_size}|{os.stat(name).st_mtime_ns}" for name in files if os.path.isfile(name)]
    return "|".join([path, *stats])


def embedding_cache_key(paths: Sequence[str], settings: dict) -> str:
    """Hash of the clip list (path, size, mtime) and the extraction settings (model, backend, pooling ...)."""
    return fileio.cache_key(paths, {"version": _CACHE_VERSION, **settings})


def _load_cached(entry: fileio.CacheEntry) -> EmbeddingSet | None:
    """The cached set, or None when it is missing, from another key, truncated or corrupt."""
    index = entry.read_index()
    if index is None:
        return None
    try:
        vectors = np.load(entry.file(_VECTORS_FILE))
        if list(vectors.shape) != index["shape"] or vectors.dtype != np.float32 or not entry.intact(index, vectors):
            return None
        return EmbeddingSet(vectors, index["paths"], index["skipped"], entry.directory, cache_hit=True)
    except (OSError, EOFError, ValueError, KeyError, TypeError):
        return None


def clip_embeddings(
    paths: Sequence[str],
    handle: str = DEFAULT_HANDLE,
    backend: str = "tf",
    pooling: str = "mean",
    cache_root: str | None = None,
    batch_size: int = 16,
    progress: bool = True,
    sample_rate: int = vggish_model.SAMPLE_RATE,
    duration_s: float | None = 10.0,
    chunk_clips: int = 256,
    extractor: VGGishExtractor | None = None,
) -> EmbeddingSet:
    """Pooled VGGish vectors of the WAV files ``paths``, from the cache when valid, else extracted and cached.

    The model is loaded only on a cache miss, or taken from ``extractor`` (whose handle and backend then replace
    the arguments). Clips are decoded, padded/cropped to
    ``duration_s`` and embedded ``chunk_clips`` at a time, so memory stays bounded. A clip that cannot be read is
    skipped and listed. ``cache_root=""`` disables the cache; None uses :func:`asd_jax.fileio.cache_root`. As for
    the log-mel features, a damaged cache entry is rebuilt and one process builds an entry at a time.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}; got {pooling!r}")
    paths = [str(path) for path in paths]
    if extractor is not None:
        handle, backend = extractor.handle, extractor.backend
    settings = {"model": model_fingerprint(handle), "backend": backend, "pooling": pooling,
                "sample_rate": sample_rate, "duration_s": duration_s,
                "pad_short": extractor.pad_short if extractor is not None else True}

    def embed() -> EmbeddingSet:
        model = extractor or VGGishExtractor(handle, backend, batch_size=batch_size, progress=progress)
        return _embed_files(paths, model, pooling, sample_rate, duration_s, chunk_clips)

    if cache_root == "":
        return embed()
    entry = fileio.CacheEntry.under(fileio.cache_root(cache_root), "vggish", embedding_cache_key(paths, settings))

    def build() -> EmbeddingSet:
        embedded = embed()
        entry.clear()  # the index goes first: a half-written cache is never valid
        with fileio.atomic_open(entry.file(_VECTORS_FILE), "wb") as handle:
            np.save(handle, embedded.vectors)
        entry.write_index({"shape": list(embedded.vectors.shape), "settings": settings, "paths": embedded.paths,
                           "skipped": embedded.skipped, "checksum": fileio.sampled_checksum(embedded.vectors)})
        return dataclasses.replace(embedded, cache_dir=entry.directory)

    return entry.load_or_build(lambda: _load_cached(entry), build)


def _embed_files(paths: list[str], extractor: VGGishExtractor, pooling: str, sample_rate: int,
                 duration_s: float | None, chunk_clips: int) -> EmbeddingSet:
    """Decode and embed ``paths`` ``chunk_clips`` at a time, skipping (and listing) the clips that cannot be read."""
    kept, skipped, vectors = [], [], []
    for start in range(0, len(paths), chunk_clips):
        waves = []
        for path in paths[start:start + chunk_clips]:
            try:
                waves.append(load_audio(path, sample_rate, duration_s))
                kept.append(path)
            except AudioError as error:
                log.warning("skipping clip: %s", error)
                skipped.append({"file": path, "error": str(error)})
        if waves:
            vectors.append(clip_vectors(extractor.embed_clips(waves), pooling))
    width = vggish_model.EMBEDDING_SIZE * (2 if pooling == "mean_std" else 1)
    result = np.concatenate(vectors) if vectors else np.zeros((0, width), np.float32)
    return EmbeddingSet(result, kept, skipped)
