"""Progress reporting that reads well both in a terminal and in a log file.

On a terminal :func:`bar` is a live tqdm bar. Written to a file or a pipe, a tqdm bar fills it with thousands of
carriage-return redraws, so there :func:`bar` returns a :class:`LineProgress` instead: it prints nothing while the
loop runs and one line when it closes, ``<desc>: <n>/<total> <unit> in <seconds> s (<postfix>)``, so a log holds
one line per epoch or phase.

The environment variable ``ASD_JAX_PROGRESS`` forces a mode for every bar:

* ``bars``: tqdm bars even when the stream is not a terminal;
* ``lines``: one line per loop even on a terminal;
* ``off``: no progress output at all (messages from :func:`write` still print);
* unset, empty or ``auto``: bars on a terminal, lines otherwise.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any

from tqdm.auto import tqdm

ENV_VAR = "ASD_JAX_PROGRESS"
MODES = ("auto", "bars", "lines", "off")

log = logging.getLogger(__name__)
_warned_values: set[str] = set()


def _is_tty(stream: IO | None) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


def resolve_mode(stream: IO | None = None) -> str:
    """``"bars"``, ``"lines"`` or ``"off"`` for ``stream`` (default sys.stderr), after ``ASD_JAX_PROGRESS``."""
    forced = os.environ.get(ENV_VAR, "").strip().lower()
    if forced not in MODES and forced:
        if forced not in _warned_values:
            _warned_values.add(forced)
            log.warning("%s=%r is not one of %s; using auto", ENV_VAR, forced, ", ".join(MODES))
        forced = "auto"
    if forced in ("bars", "lines", "off"):
        return forced
    return "bars" if _is_tty(sys.stderr if stream is None else stream) else "lines"


def _format_value(value: Any) -> str:
    """A postfix value as tqdm shows it: floats to 3 significant digits, anything else as ``str``."""
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


class LineProgress:
    """The part of tqdm's interface the project uses, printing one summary line on :meth:`close` (none when
    ``stream`` is None). Iterating over it counts the items and closes it at the end, as tqdm does."""

    def __init__(self, iterable: Iterable | None = None, total: int | None = None, desc: str = "",
                 unit: str = "it", stream: IO | None = None):
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.iterable, self.total, self.desc, self.unit, self.stream = iterable, total, desc, unit, stream
        self.n = 0
        self.postfix = ""
        self.start_t = time.perf_counter()
        self.closed = False

    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("this progress object was made without an iterable; use update()")
        try:
            for item in self.iterable:
                yield item
                self.n += 1
        finally:
            self.close()

    def __len__(self) -> int:
        if self.total is not None:
            return int(self.total)
        return len(self.iterable)  # type: ignore[arg-type]

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def update(self, n: int | float = 1) -> None:
        self.n += n

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{key}={_format_value(value)}" for key, value in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = str(s)

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def refresh(self) -> None:
        """Nothing to redraw: the line is printed on close."""

    def summary(self) -> str:
        """The line :meth:`close` prints."""
        count = f"{self.n:g}" if isinstance(self.n, float) else str(self.n)
        if self.total is not None:
            count += f"/{self.total}"
        text = f"{count} {self.unit} in {time.perf_counter() - self.start_t:.1f} s"
        if self.postfix:
            text += f" ({self.postfix})"
        return f"{self.desc}: {text}" if self.desc else text

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.stream is not None:
            print(self.summary(), file=self.stream, flush=True)


def bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
        enabled: bool = True, leave: bool = False, stream: IO | None = None):
    """A progress object for a loop: a tqdm bar on a terminal, else a :class:`LineProgress` (see the module
    docstring). ``enabled=False`` or ``ASD_JAX_PROGRESS=off`` gives one that prints nothing. ``leave`` only
    applies to tqdm bars (a line is always kept: it is the record of the loop). ``stream`` defaults to
    sys.stderr."""
    stream = sys.stderr if stream is None else stream
    mode = resolve_mode(stream) if enabled else "off"
    if mode == "bars":
        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, file=stream)
    return LineProgress(iterable, total, desc, unit, stream if mode == "lines" else None)


def write(message: str, stream: IO | None = None) -> None:
    """Print ``message`` as a whole line to ``stream`` (default sys.stdout) without breaking a live bar: through
    ``tqdm.write`` when bars are in use, a plain flushed print otherwise."""
    stream = sys.stdout if stream is None else stream
    if resolve_mode(sys.stderr) == "bars":
        tqdm.write(message, file=stream)
    else:
        print(message, file=stream, flush=True)
