"""What a training run shows and logs, the same for the LM and for fine-tuning: a progress bar
per epoch with the loss and tokens/s, and TensorBoard scalars."""
import contextlib
import os
import time

import tensorflow as tf
from tqdm import tqdm


class Progress:
    """Bars for `epochs` epochs; scalars in `summary_dir`/train and /eval (None: no scalars).
    Only the chief shows a bar and writes (the other workers' writers write nothing)."""

    def __init__(self, summary_dir, epochs, chief=True):
        self.epochs, self.chief, self.bar = epochs, chief, None
        self.writers = {kind: tf.summary.create_file_writer(os.path.join(summary_dir, kind))
                        if chief and summary_dir else tf.summary.create_noop_writer()
                        for kind in ("train", "eval")}
        self._start = self._last = time.perf_counter()

    @contextlib.contextmanager
    def epoch(self, epoch, steps, done=0):
        """The bar of `epoch` (from 0) of `steps` steps, `done` of them already."""
        with tqdm(total=steps, initial=done, unit="step", desc=f"epoch {epoch + 1}/{self.epochs}",
                  disable=not self.chief) as self.bar:
            self.start()
            yield

    def start(self):
        """From now the next steps are timed."""
        self._start = self._last = time.perf_counter()

    def steps_done(self, steps, loss, tokens=None):
        """Moves the bar `steps` on; returns the tokens/s of the `tokens` taken since `start`,
        or None."""
        self._last = time.perf_counter()
        rate = self.tokens_per_second(tokens) if tokens else None
        self.bar.update(steps)
        shown = {"loss": f"{loss:.3f}"}
        if rate:
            shown["tokens_per_s"] = f"{rate:,.0f}"
        self.bar.set_postfix(shown)
        return rate

    def tokens_per_second(self, tokens):
        """Of `tokens` taken from `start` to the last `steps_done`."""
        return tokens / max(self._last - self._start, 1e-9)

    def write(self, kind, step, logs):
        """Scalars `logs` at `step` in train/ or eval/."""
        # The caller decides when to write; a recording condition left behind by others
        # (Keras sets one per process) must not silence it.
        with self.writers[kind].as_default(step=step), tf.summary.record_if(True):
            for name, value in logs.items():
                tf.summary.scalar(name, value)
