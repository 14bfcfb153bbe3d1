"""Progress of long work, as the library reports it and as a caller may render it.

The one signature (every ``progress=`` argument of :class:`ibdb.api.Ibdb` and below takes it)::

    progress(label: str, done: int, total: int) -> None

called after each piece of work, ``0 <= done <= total``; a label's last call has
``done == total`` (a splitting repeat's ``total`` is an estimate that grows with its levels).
What the labels and counts are:

- ``Ibdb.run``: a run's label (``experiment/task/space/budget``), counting the hypotheses the
  store lacked, after each chunk (chunks already in shard files from an interrupted run count
  as done from the start); then, for a budget with a splitting block,
  ``"<label> splitting r/R"``, counting levels of repeat r.
- ``Ibdb.estimate``, ``Ibdb.recompute`` and the estimating step of ``Ibdb.run``:
  ``"estimate"``, counting (run, loss, method) estimates, each computed at all its eps at once
  (an ncx2 fit with its bootstrap takes ~0.1 s for 10^4 losses; the paper's scipy fit seconds).
- ``Ibdb.report``: ``"report: read runs"`` (runs read from the store), then
  ``"report: write files"`` (figures, then report.md).

The library only calls the callback; it never prints. :class:`ProgressLines` turns the calls
into throttled one-line messages (label, done/total, rate, time left) for a log file or a
notebook cell: ``Ibdb(...).run(spec, progress=ProgressLines(print))``; the CLI uses it when
stderr is not a terminal, with the interval from ``IBDB_PROGRESS_INTERVAL`` (seconds).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from ibdb.core.errors import IbdbError

Progress = Callable[[str, int, int], None]
"""progress(label, done, total): see the module's docstring for the labels and counts."""

DEFAULT_INTERVAL_SECONDS = 10.0
INTERVAL_ENV = "IBDB_PROGRESS_INTERVAL"


def interval_from(text: str | None) -> float:
    """The progress interval in seconds from ``text`` (the value of IBDB_PROGRESS_INTERVAL;
    None or empty: the default, 10 s). 0 writes a line for every update."""
    if text is None or not text.strip():
        return DEFAULT_INTERVAL_SECONDS
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise IbdbError(f"{INTERVAL_ENV}={text!r} is not a number of seconds >= 0 (0 writes a "
                        "progress line for every update; unset it for the default, "
                        f"{DEFAULT_INTERVAL_SECONDS:g} s).")
    return seconds


@dataclass
class _Track:
    """What is known of one label: when it began, its first and latest counts."""

    started: float  # the time of the update before this label's first (or the renderer's start)
    first_seen: float
    first_done: int
    done: int = 0
    total: int = 0
    written: bool = False  # whether the latest state has been written
    finished: bool = False  # whether a final line (done == total) has been written


class ProgressLines:
    """A :data:`Progress` callback that writes one line per update through ``write``, at most
    one every ``interval`` seconds, plus always a final line per label (when ``done`` reaches
    ``total``, and on :meth:`close` for a label whose latest state was not written).

    A line reads ``"<label>: 640/4000 (16%), 212/s, about 16 s left"``; the final one
    ``"<label>: 4000/4000 done in 19 s (211/s)"`` (``"ended after"`` for a label left short of
    its total, e.g. a splitting repeat that reached its target in fewer levels than estimated).
    The rate counts from a label's first update (its first piece's time is unknown, and a
    resumed run starts past 0); the elapsed time from the update before it. ``clock`` is
    injectable for tests.
    """

    def __init__(self, write: Callable[[str], object], *,
                 interval: float = DEFAULT_INTERVAL_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._write = write
        self._interval = interval
        self._clock = clock
        self._tracks: dict[str, _Track] = {}
        self._last_line = clock()
        self._last_event = self._last_line

    def __call__(self, label: str, done: int, total: int) -> None:
        now = self._clock()
        track = self._tracks.get(label)
        if track is None or done < track.done:  # a new label, or the same label begun again
            track = _Track(started=self._last_event, first_seen=now, first_done=done)
            self._tracks[label] = track
        track.done, track.total, track.written = done, total, False
        self._last_event = now
        final = done >= total and not track.finished
        if final or now - self._last_line >= self._interval:
            self._emit(label, track, now, final=done >= total)

    def close(self) -> None:
        """Write the latest state of every label whose latest update was not written."""
        now = self._clock()
        for label, track in self._tracks.items():
            if not track.written:
                self._emit(label, track, now, final=True)

    def __enter__(self) -> ProgressLines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _emit(self, label: str, track: _Track, now: float, *, final: bool) -> None:
        self._write(progress_line(label, track.done, track.total, rate=_rate(track, now),
                                  elapsed=now - track.started if final else None))
        track.written = True
        track.finished = track.finished or (final and track.done >= track.total)
        self._last_line = now


def progress_line(label: str, done: int, total: int, *, rate: float | None,
                  elapsed: float | None = None) -> str:
    """One progress line; ``elapsed`` (seconds) given makes it a final line ("done in", or
    "ended after" where the work stopped short of ``total``)."""
    speed = (f"{rate:.3g}/s" if rate < 1000 else f"{rate:.0f}/s") if rate is not None else None
    if elapsed is not None:
        how = "done in" if done >= total else "ended after"
        return f"{label}: {done}/{total} {how} {format_seconds(elapsed)}" + \
            (f" ({speed})" if speed else "")
    share = f" ({100 * done / total:.0f}%)" if total > 0 else ""
    line = f"{label}: {done}/{total}{share}"
    if speed:
        line += f", {speed}, about {format_seconds(max(total - done, 0) / rate)} left"
    return line


def format_seconds(seconds: float) -> str:
    """``seconds`` as 0.4 s, 12 s, 3 min 05 s or 2 h 07 min."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def _rate(track: _Track, now: float) -> float | None:
    """Pieces per second since the label's first update (None before a second one)."""
    span = now - track.first_seen
    if span <= 0 or track.done <= track.first_done:
        return None
    return (track.done - track.first_done) / span
