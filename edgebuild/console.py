"""What a person sees while a build runs, and where everything else goes.

The console gets the plan, a progress bar per long loop, one line per step and the closing summary. Everything
third-party (TensorFlow/absl C++ logs, Python warnings, converter and Ultralytics prints) goes to the step's log
file: `Console.capture(path)` points file descriptors 1 and 2 at it for the duration of a step, so C++ logging that
bypasses Python and child processes started meanwhile are captured too. The console itself writes to a saved
duplicate of the original stdout, which the redirection does not touch.

Any step reports progress through `ctx.progress(done, total, what)` (edgebuild.engine.StepContext), in-process or in
an isolated child (`ProgressRelay` carries the events to the parent). On a terminal that is a tqdm bar that
disappears when the loop ends; elsewhere (CI, a pipe, a file) at most one plain line per loop.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, TextIO

log = logging.getLogger("edgebuild")
file_log = logging.getLogger("edgebuild.console")  # console lines, copied to the run's edgebuild.log only

ProgressSink = Callable[[str, int, int, str], None]   # (step, done, total, what)


class Console:
    """The build's console. `verbose`: nothing is redirected, third-party output shows live (build.verbose=true).
    `quiet`: no plan, step lines or bars (a multirun job prints one line when it finishes)."""

    def __init__(self, stream: TextIO | None = None, verbose: bool = False, quiet: bool = False,
                 tty: bool | None = None):
        if stream is None:  # a duplicate of fd 1: unaffected when fd 1 is pointed at a log file
            sys.stdout.flush()
            stream = open(os.dup(sys.stdout.fileno()), "w", buffering=1, encoding="utf-8", errors="replace")
        self.stream = stream
        self.verbose, self.quiet = verbose, quiet
        self.tty = _isatty(stream) if tty is None else tty
        self._bar = None
        self._bar_key: tuple[str, str] | None = None
        self._status = False
        self._lock = threading.Lock()

    # -- lines --------------------------------------------------------------------------------------------------
    def line(self, text: str = "", *, always: bool = False) -> None:
        """One console line (also written to the run's log file)."""
        file_log.info("%s", text, extra={"console": True})
        if self.quiet and not always:
            return
        with self._lock:
            self._clear_bar()
            self.stream.write(("\r\x1b[K" if self._status else "") + text + "\n")
            self.stream.flush()
            self._status = False

    def status(self, text: str) -> None:
        """A transient line on a terminal (e.g. "building..."), replaced by the next line or bar; nothing elsewhere."""
        if self.quiet or self.verbose or not self.tty:
            return
        with self._lock:
            self._clear_bar()
            self.stream.write("\r\x1b[K" + text[: self._width() - 1])
            self.stream.flush()
            self._status = True

    def lines(self, text: str, *, always: bool = False) -> None:
        for t in text.splitlines():
            self.line(t, always=always)

    # -- progress -----------------------------------------------------------------------------------------------
    def progress(self, step: str, done: int, total: int, what: str = "") -> None:
        if self.quiet or total <= 0:
            return
        label = f"  {step}: {what}".rstrip()
        with self._lock:
            if self.tty and not self.verbose:
                self._tqdm(step, what, label, done, total)
            elif done >= total:  # a pipe or a log: one plain line per loop, when it ends
                self.stream.write(f"{label} {done}/{total}\n")
                self.stream.flush()

    def end_progress(self) -> None:
        with self._lock:
            self._clear_bar()

    def _tqdm(self, step: str, what: str, label: str, done: int, total: int) -> None:
        from tqdm import tqdm

        if self._bar is None or self._bar_key != (step, what) or self._bar.total != total:
            self._clear_bar()
            self._bar = tqdm(total=total, desc=label, file=self.stream, leave=False, ncols=self._width(),
                             bar_format="{desc} {bar} {n_fmt}/{total_fmt} [{elapsed}<{remaining}]")
            self._bar_key = (step, what)
        self._bar.update(max(0, done - self._bar.n))
        if done >= total:
            self._clear_bar()

    def _width(self) -> int:
        """The terminal's width (a terminal that does not say, e.g. a fresh pty: $COLUMNS, else 100), at most 120."""
        try:
            cols = os.get_terminal_size(self.stream.fileno()).columns
        except (OSError, ValueError, AttributeError):
            cols = 0
        if cols < 40:
            cols = int(os.environ.get("COLUMNS", "0") or 0) or 100
        return min(cols, 120)

    def _clear_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar, self._bar_key = None, None

    # -- third-party output -------------------------------------------------------------------------------------
    @contextmanager
    def capture(self, path: Path | None):
        """Point fds 1 and 2 (and so sys.stdout/sys.stderr, C++ logging and children started inside) at `path`."""
        if path is None or self.verbose:
            yield
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with redirect_fds(path):
            yield

    def close(self) -> None:
        self.end_progress()
        if self.stream not in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            try:
                self.stream.close()
            except OSError:
                pass


@contextmanager
def redirect_fds(path: Path):
    """fds 1 and 2 -> `path` (appended), and sys.stdout/sys.stderr with them (in case they had been replaced by
    objects that do not write to fds 1/2); all restored afterwards."""
    for s in (sys.stdout, sys.stderr):
        _flush(s)
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    saved = os.dup(1), os.dup(2)
    streams = sys.stdout, sys.stderr
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)
        sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)
        yield
    finally:
        for s in (sys.stdout, sys.stderr):
            _flush(s)
        sys.stdout, sys.stderr = streams
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def _flush(stream) -> None:
    try:
        stream.flush()
    except (OSError, ValueError, AttributeError):
        pass


def _isatty(stream) -> bool:
    try:
        return os.isatty(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False


def plain_sink(step: str, done: int, total: int, what: str = "") -> None:
    """Progress without a Console (library use, tests): plain lines on stderr."""
    print(f"  {step}: {what} {done}/{total}".rstrip(), file=sys.stderr, flush=True)


# -- console setup for the CLI ------------------------------------------------------------------------------------
class _ConsoleFilter(logging.Filter):
    """What the console's log handler shows: edgebuild's warnings and errors (everything when verbose);
    lines the Console printed itself are in the log record only for the log file."""

    def __init__(self, verbose: bool):
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "console", False):
            return False
        if self.verbose:
            return True
        return record.name.split(".")[0] == "edgebuild" and record.levelno >= logging.WARNING


def attach_logging(console: Console) -> None:
    """Route the root logger's console handlers (Hydra's job logging) through the console; file handlers keep all."""
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
            h.setStream(console.stream)
            for f in [f for f in h.filters if isinstance(f, _ConsoleFilter)]:
                h.removeFilter(f)
            h.addFilter(_ConsoleFilter(console.verbose))
    logging.getLogger("edgebuild").setLevel(logging.INFO)


# -- progress and warnings from isolated children -----------------------------------------------------------------
class ProgressRelay:
    """A queue an isolated step's child writes progress events and edgebuild warnings to; a thread in the parent
    hands them to the console. Use as a context manager around the child's life."""

    def __init__(self, mp_context, sink: ProgressSink):
        self.queue = mp_context.Queue()
        self.sink = sink
        self._thread = threading.Thread(target=self._drain, daemon=True)

    def __enter__(self) -> "ProgressRelay":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.queue.put(None)
        self._thread.join(timeout=10)
        self.queue.close()

    def _drain(self) -> None:
        while True:
            try:
                ev = self.queue.get()
            except (EOFError, OSError):
                return
            if ev is None:
                return
            if ev[0] == "progress":
                self.sink(*ev[1:])
            elif ev[0] == "log":
                log.log(ev[1], "%s", ev[2])


class QueueSink:
    """The child's end of a ProgressRelay: a ProgressSink, and a handler forwarding edgebuild's warnings."""

    def __init__(self, queue):
        self.queue = queue

    def __call__(self, step: str, done: int, total: int, what: str = "") -> None:
        self.queue.put(("progress", step, done, total, what))

    def handler(self) -> logging.Handler:
        sink = self

        class _Forward(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                try:
                    sink.queue.put(("log", record.levelno, record.getMessage()))
                except Exception:  # pragma: no cover - never let a warning kill the step
                    pass

        return _Forward(level=logging.WARNING)

