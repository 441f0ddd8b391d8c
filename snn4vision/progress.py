"""Progress lines a person can follow, also when the output goes to a file.

On a terminal the current line is rewritten in place; otherwise one plain
line is printed at most every ``interval`` seconds, so a log stays readable.
"""
from __future__ import annotations

import sys
import time

import tensorflow as tf


class Progress:
    """Reports ``label: i/n`` for a loop of ``total`` steps, throttled to one line per ``interval`` seconds."""

    def __init__(self, label: str, total: int | None, interval: float = 10.0, stream=None):
        self.label, self.total, self.interval = label, total, interval
        self.stream = stream or sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.began = self.last = time.perf_counter()
        self.shown = False

    def update(self, done: int, detail: str = "") -> None:
        now = time.perf_counter()
        # a terminal line, once shown, is rewritten often; a log gets a line per interval
        if now - self.last < (0.5 if self.tty and self.shown else self.interval):
            return
        self.last, self.shown = now, True
        of = f"/{self.total}" if self.total else ""
        text = f"  {self.label}: {done}{of} ({now - self.began:.0f} s){' ' + detail if detail else ''}"
        if self.tty:
            self.stream.write("\r" + text + "\x1b[K")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End a rewritten terminal line, so the next print starts on a fresh one."""
        if self.tty and self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


class BatchProgress(tf.keras.callbacks.Callback):
    """A Keras callback that reports the batches of each epoch through :class:`Progress`."""

    def __init__(self, label: str, batches: int | None, interval: float = 10.0, stream=None):
        super().__init__()
        self.label, self.batches, self.interval, self.stream = label, batches, interval, stream
        self.progress = None

    def on_epoch_begin(self, epoch, logs=None):
        self.progress = Progress(self.label + " batch", self.batches, self.interval, self.stream)

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        self.progress.update(batch + 1, "" if loss is None else f"loss {float(loss):.4f}")

    def on_epoch_end(self, epoch, logs=None):
        self.progress.close()
