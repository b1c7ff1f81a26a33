"""Progress output: live tqdm bars on a terminal, one line per loop in a log, nothing when disabled."""

import io
import logging

import pytest
from tqdm.std import tqdm as std_tqdm

from asd_jax import progress


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _auto_mode(monkeypatch):
    monkeypatch.delenv(progress.ENV_VAR, raising=False)


def test_non_tty_prints_one_line_for_many_updates():
    stream = io.StringIO()
    bar = progress.bar(total=1000, desc="log-mel", unit="clip", stream=stream)
    for step in range(1000):
        bar.update()
        bar.set_postfix(loss=1.0 / (step + 1))
    assert stream.getvalue() == ""
    bar.close()
    bar.close()  # a second close prints nothing more
    output = stream.getvalue()
    assert "\r" not in output and output.count("\n") == 1
    assert output.startswith("log-mel: 1000/1000 clip in ") and output.rstrip().endswith("s (loss=0.001)")


def test_line_format_without_total_desc_or_postfix():
    stream = io.StringIO()
    with progress.bar(stream=stream) as bar:
        bar.update(3)
    assert stream.getvalue().startswith("3 it in ") and stream.getvalue().rstrip().endswith(" s")
    stream = io.StringIO()
    with progress.bar(total=4, desc="a", stream=stream) as bar:
        bar.set_description("epoch 2")
        bar.set_postfix_str("loss=0.5")
        bar.update(2)
    assert stream.getvalue().startswith("epoch 2: 2/4 it in ") and stream.getvalue().rstrip().endswith("(loss=0.5)")


def test_tty_gets_a_tqdm_bar():
    stream = FakeTTY()
    bar = progress.bar(total=10, desc="train", unit="call", stream=stream)
    assert isinstance(bar, std_tqdm)
    for _ in range(10):
        bar.update()
    bar.set_postfix(loss="0.1234")
    bar.close()
    assert "train" in stream.getvalue() and "\r" in stream.getvalue()


@pytest.mark.parametrize("stream_type", [io.StringIO, FakeTTY])
def test_disabled_prints_nothing(stream_type):
    stream = stream_type()
    bar = progress.bar(range(5), total=5, desc="x", enabled=False, stream=stream)
    assert list(bar) == [0, 1, 2, 3, 4]
    bar.update()
    bar.set_postfix(loss=1.0)
    bar.close()
    assert stream.getvalue() == ""


def test_iteration_counts_items_and_closes_at_the_end():
    stream = io.StringIO()
    bar = progress.bar(range(0, 20, 2), desc="scoring", unit="chunk", stream=stream)
    assert len(bar) == 10
    assert [value for value in bar] == list(range(0, 20, 2))
    assert stream.getvalue().startswith("scoring: 10/10 chunk in ") and stream.getvalue().count("\n") == 1
    stream = io.StringIO()
    assert sum(progress.bar((i for i in range(4)), desc="gen", stream=stream)) == 6
    assert stream.getvalue().startswith("gen: 4 it in ")


def test_a_loop_left_early_still_prints_its_line():
    stream = io.StringIO()
    for value in progress.bar(range(10), desc="early", stream=stream):
        if value == 2:
            break
    assert stream.getvalue().startswith("early: 2/10 it in ")


@pytest.mark.parametrize("value, expected", [("lines", "lines"), ("bars", "bars"), ("off", "off"), ("LINES", "lines")])
def test_env_var_forces_the_mode(monkeypatch, value, expected):
    monkeypatch.setenv(progress.ENV_VAR, value)
    for stream in (io.StringIO(), FakeTTY()):
        bar = progress.bar(total=3, desc="forced", stream=stream)
        assert isinstance(bar, std_tqdm) == (expected == "bars")
        bar.update(3)
        bar.close()
        output = stream.getvalue()
        if expected == "off":
            assert output == ""
        elif expected == "lines":
            assert output.startswith("forced: 3/3 it in ") and "\r" not in output
        else:
            assert "forced" in output and "\r" in output


def test_unknown_env_value_falls_back_to_auto_with_a_warning(monkeypatch, caplog):
    monkeypatch.setenv(progress.ENV_VAR, "sometimes")
    with caplog.at_level(logging.WARNING):
        assert progress.resolve_mode(io.StringIO()) == "lines"
        assert progress.resolve_mode(FakeTTY()) == "bars"
    assert "ASD_JAX_PROGRESS" in caplog.text


def test_write_prints_a_whole_line(monkeypatch):
    stream = io.StringIO()
    progress.write("epoch 1/3: loss 0.5", stream=stream)
    assert stream.getvalue() == "epoch 1/3: loss 0.5\n"
    monkeypatch.setenv(progress.ENV_VAR, "bars")
    stream = io.StringIO()
    progress.write("through tqdm", stream=stream)
    assert stream.getvalue() == "through tqdm\n"


def test_write_defaults_to_stdout(capsys):
    progress.write("hello")
    assert capsys.readouterr().out == "hello\n"
