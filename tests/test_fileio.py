"""asd_jax.fileio: atomic writes keep the old file when the writer fails, the file lock excludes other threads and
processes, the cache root follows $ASD_JAX_CACHE_DIR, and a cache entry is valid only whole and intact."""

import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from asd_jax import fileio
from asd_jax.data import features
from asd_jax.data.features import FeatureConfig

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


# ----------------------------------------------------------------------------------------------------------------------
# Atomic writes.


def test_atomic_open_replaces_the_file_only_when_the_writer_finishes(tmp_path):
    path = str(tmp_path / "results.json")
    with fileio.atomic_open(path) as handle:
        handle.write("old")
    with pytest.raises(RuntimeError, match="killed"):
        with fileio.atomic_open(path) as handle:
            handle.write("half of the new")
            raise RuntimeError("killed mid-write")
    with open(path) as handle:
        assert handle.read() == "old"
    assert os.listdir(tmp_path) == ["results.json"]  # the temporary file is gone too
    with fileio.atomic_open(path, "wb") as handle:
        handle.write(b"new")
        handle.flush()
        with open(path) as old:
            assert old.read() == "old"  # replaced only when the block ends
    with open(path) as handle:
        assert handle.read() == "new"


def test_atomic_path_uses_the_suffix_and_cleans_up(tmp_path):
    path = str(tmp_path / "clip.wav")
    with fileio.atomic_path(path, suffix=".part") as partial:
        assert partial == path + ".part"
        with open(partial, "w") as handle:
            handle.write("data")
        assert not os.path.exists(path)
    assert os.listdir(tmp_path) == ["clip.wav"]
    with pytest.raises(ValueError):
        with fileio.atomic_path(path, suffix=".part") as partial:
            open(partial, "w").close()
            raise ValueError("render failed")
    assert os.listdir(tmp_path) == ["clip.wav"]


def test_atomic_write_json_and_read_modes_are_refused(tmp_path):
    path = str(tmp_path / "index.json")
    fileio.atomic_write_json(path, {"key": "abc", "values": [1, 2]}, indent=1)
    with open(path) as handle:
        assert json.load(handle) == {"key": "abc", "values": [1, 2]}
    with pytest.raises(ValueError, match="write mode"):
        with fileio.atomic_open(path, "a"):
            pass


# ----------------------------------------------------------------------------------------------------------------------
# Locks.


def test_file_lock_excludes_another_thread(tmp_path):
    path = str(tmp_path / "build.lock")
    events = []

    def second():
        with fileio.file_lock(path):
            events.append("second in")

    with fileio.file_lock(path):
        thread = threading.Thread(target=second)
        thread.start()
        thread.join(0.3)
        assert thread.is_alive() and events == []  # waiting for the first holder
        events.append("first out")
    thread.join(10)
    assert events == ["first out", "second in"]


def test_file_lock_excludes_another_process(tmp_path):
    path = str(tmp_path / "build.lock")
    code = textwrap.dedent("""
        import sys, time
        from asd_jax.fileio import file_lock
        print("started", flush=True)
        with file_lock(sys.argv[1]):
            print(time.time(), flush=True)
    """)
    with fileio.file_lock(path):
        child = subprocess.Popen([sys.executable, "-c", code, path], cwd=REPO, stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "started"
        time.sleep(0.3)
        released = time.time()
    output, _ = child.communicate(timeout=60)
    assert child.returncode == 0
    assert float(output.strip()) >= released  # the child got the lock only after this process released it


# ----------------------------------------------------------------------------------------------------------------------
# Cache root and entries.


def test_cache_root_honours_the_argument_then_the_environment_then_home(tmp_path, monkeypatch):
    monkeypatch.setenv("ASD_JAX_CACHE_DIR", str(tmp_path / "env"))
    assert fileio.cache_root() == str(tmp_path / "env")
    assert fileio.cache_root(str(tmp_path / "given")) == str(tmp_path / "given")
    monkeypatch.delenv("ASD_JAX_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert fileio.cache_root() == os.path.join(str(tmp_path / "home"), ".cache", "asd_jax")


def test_cache_keys_are_those_of_existing_caches():
    """The key of a clip list and settings is unchanged, so caches written before stay valid."""
    settings = {"version": 1, "config": {"sample_rate": 16_000}}
    assert fileio.cache_key(["/nonexistent/a.wav", "/nonexistent/b.wav"], settings) == \
        fileio.cache_key(["/nonexistent/a.wav", "/nonexistent/b.wav"], dict(reversed(settings.items())))
    assert fileio.cache_key(["/nonexistent/a.wav"], settings) != fileio.cache_key(["/nonexistent/b.wav"], settings)
    key = fileio.cache_key(["/nonexistent/a.wav", "/nonexistent/b.wav"],
                           {"version": 1, "config": features._log_mel_front_end(FeatureConfig()).settings})
    assert key == "84bccab6d8487bf665e9575a"
    linear = features._log_mel_front_end(FeatureConfig(scale="linear", fmin=200.0)).settings
    assert linear["scale"] == "linear"  # a new setting's non-default value is keyed


def test_sampled_checksum_covers_first_last_and_spread_rows():
    assert fileio.sample_rows(0) == [] and fileio.sample_rows(3) == [0, 1, 2]
    rows = fileio.sample_rows(1000)
    assert len(rows) == 64 and rows[0] == 0 and rows[-1] == 999
    data = np.arange(1000 * 4, dtype=np.float32).reshape(1000, 4)
    checksum = fileio.sampled_checksum(data)
    damaged = data.copy()
    damaged[999, 2] = -1.0
    assert fileio.sampled_checksum(damaged) != checksum


def _entry_io(entry: fileio.CacheEntry, builds: list):
    """A tiny cache of one array, as the feature and embedding caches use CacheEntry."""

    def load():
        index = entry.read_index()
        if index is None:
            return None
        try:
            data = np.load(entry.file("data.npy"))
        except (OSError, EOFError, ValueError):
            return None
        return data if entry.intact(index, data) else None

    def build():
        builds.append(time.time())
        data = np.arange(12, dtype=np.float32).reshape(6, 2)
        entry.clear("data.npy")
        with fileio.atomic_open(entry.file("data.npy"), "wb") as handle:
            np.save(handle, data)
        entry.write_index({"checksum": fileio.sampled_checksum(data)})
        return data

    return load, build


def test_cache_entry_is_built_once_then_read(tmp_path):
    entry = fileio.CacheEntry.under(str(tmp_path), "things", "key1")
    assert entry.directory == str(tmp_path / "things" / "key1")
    builds = []
    load, build = _entry_io(entry, builds)
    first = entry.load_or_build(load, build)
    second = entry.load_or_build(load, build)
    np.testing.assert_array_equal(first, second)
    assert len(builds) == 1
    assert sorted(os.listdir(tmp_path / "things")) == ["key1", "key1.lock"]
    with open(entry.file("index.json")) as handle:
        assert json.load(handle)["key"] == "key1"
    assert fileio.CacheEntry(entry.directory, "another key").read_index() is None


@pytest.mark.parametrize("damage", ["data", "truncated", "index", "no index"])
def test_damaged_cache_entry_is_detected_and_rebuilt(tmp_path, damage):
    entry = fileio.CacheEntry.under(str(tmp_path), "things", "key1")
    builds = []
    load, build = _entry_io(entry, builds)
    expected = entry.load_or_build(load, build)
    data_path = entry.file("data.npy")
    if damage == "data":  # same size, other bytes: only the checksum tells
        with open(data_path, "r+b") as handle:
            handle.seek(os.path.getsize(data_path) - 4)
            handle.write(np.float32(99).tobytes())
    elif damage == "truncated":
        os.truncate(data_path, 10)
    elif damage == "index":
        with open(entry.file("index.json"), "w") as handle:
            handle.write('{"key": ')
    else:
        os.remove(entry.file("index.json"))
    assert load() is None
    np.testing.assert_array_equal(entry.load_or_build(load, build), expected)
    assert len(builds) == 2 and load() is not None


def test_concurrent_callers_build_a_cache_entry_once(tmp_path):
    entry = fileio.CacheEntry.under(str(tmp_path), "things", "key1")
    builds = []
    load, build = _entry_io(entry, builds)

    def slow_build():
        time.sleep(0.2)  # the other caller arrives while this one builds
        return build()

    results = [None, None]

    def call(slot):
        results[slot] = entry.load_or_build(load, slow_build)

    threads = [threading.Thread(target=call, args=(slot,)) for slot in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(builds) == 1
    np.testing.assert_array_equal(results[0], results[1])
