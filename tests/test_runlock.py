"""RunLock: one live run per work directory; a killed holder's lock is taken over with a warning."""

import datetime
import errno
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from asd_jax import runlock
from asd_jax.runlock import LockHeldError, RunLock

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

HOLDER = textwrap.dedent("""
    import sys, time
    from asd_jax.runlock import RunLock
    lock = RunLock(sys.argv[1]).acquire()
    print("locked", flush=True)
    time.sleep(120)
""")

RAW_HOLDER = textwrap.dedent("""
    import fcntl, json, os, sys, time
    fd = os.open(os.path.join(sys.argv[1], ".lock"), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, json.dumps({"pid": 4242, "host": "other-host.example", "started": "2020-01-01T00:00:00+00:00",
                             "argv": ["launch.py", "--workdir=shared"]}).encode())
    print("locked", flush=True)
    time.sleep(120)
""")


def start_holder(script: str, directory: str, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    process = subprocess.Popen([sys.executable, "-c", script, directory, *extra], stdout=subprocess.PIPE, env=env,
                               text=True, cwd=REPO)
    assert process.stdout.readline().strip() == "locked"
    return process


@pytest.fixture
def holders():
    started = []
    yield lambda *args: started.append(start_holder(*args)) or started[-1]
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()
        process.stdout.close()


def test_second_process_is_refused_then_takes_over_after_sigkill(tmp_path, holders, caplog):
    directory = str(tmp_path / "work")
    holder = holders(HOLDER, directory, "--marker=first-run")

    with pytest.raises(LockHeldError) as raised:
        RunLock(directory).acquire()
    message = str(raised.value)
    assert f"PID {holder.pid}" in message and socket.gethostname() in message and directory in message
    assert "--marker=first-run" in message and "started 20" in message
    assert f"kill {holder.pid}" in message and "--workdir" in message

    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with caplog.at_level(logging.WARNING, logger="asd_jax.runlock"), RunLock(directory) as lock:
        assert lock.held
        assert f"stale lock of PID {holder.pid} on host {socket.gethostname()} (started " in caplog.text
        assert "taken over" in caplog.text
        with open(os.path.join(directory, ".lock")) as handle:
            assert json.load(handle)["pid"] == os.getpid()


def test_lock_file_holds_the_details_while_held_and_is_emptied_on_release(tmp_path, caplog):
    directory = str(tmp_path / "not" / "there" / "yet")
    path = os.path.join(directory, ".lock")
    with caplog.at_level(logging.WARNING, logger="asd_jax.runlock"):
        with RunLock(directory):
            with open(path) as handle:
                holder = json.load(handle)
            assert set(holder) == {"pid", "host", "started", "argv"}
            assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
            assert holder["argv"] == sys.argv
            assert datetime.datetime.fromisoformat(holder["started"]).tzinfo is not None
        assert os.path.getsize(path) == 0
        lock = RunLock(directory).acquire()  # release then acquire again in the same process
        lock.release()
        lock.acquire().release()
    assert "stale" not in caplog.text


def test_same_process_cannot_take_its_own_lock_twice(tmp_path):
    directory = str(tmp_path / "work")
    with RunLock(directory) as lock:
        with pytest.raises(LockHeldError, match="already locked by this process"):
            RunLock(directory).acquire()
        with pytest.raises(LockHeldError, match="already locked by this process"):
            lock.acquire()
    RunLock(directory).acquire().release()


def test_released_on_exception(tmp_path):
    directory = str(tmp_path / "work")
    with pytest.raises(ZeroDivisionError), RunLock(directory):
        1 / 0
    RunLock(directory).acquire().release()


def test_holder_on_another_host_with_the_lock_held_is_refused(tmp_path, holders):
    directory = str(tmp_path / "shared")
    os.makedirs(directory)
    holders(RAW_HOLDER, directory)
    with pytest.raises(LockHeldError) as raised:
        RunLock(directory).acquire()
    message = str(raised.value)
    assert "PID 4242 on host other-host.example" in message and "kill 4242 on host other-host.example" in message


def test_filesystem_without_locks_falls_back_to_the_holder_details(tmp_path, monkeypatch, caplog):
    directory = str(tmp_path / "work")
    os.makedirs(directory)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)

    def unsupported(fd, operation):
        if operation != fcntl.LOCK_UN:
            raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    def write_holder(pid):
        with open(os.path.join(directory, ".lock"), "w") as handle:
            json.dump({"pid": pid, "host": socket.gethostname(), "started": "2020-01-01T00:00:00", "argv": ["x"]},
                      handle)

    monkeypatch.setattr(runlock.fcntl, "flock", unsupported)
    write_holder(os.getppid())  # a live process on this host
    with pytest.raises(LockHeldError, match=f"PID {os.getppid()}"):
        RunLock(directory).acquire()
    write_holder(int(dead.stdout))
    with caplog.at_level(logging.WARNING, logger="asd_jax.runlock"), RunLock(directory):
        assert "not supported" in caplog.text and f"stale lock of PID {int(dead.stdout)}" in caplog.text
