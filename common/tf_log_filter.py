"""Which lines of TensorFlow's C++ log a command-line tool leaves out, and the filter process
that leaves them out (`python -S tf_log_filter.py`, stdin: what the tool's C++ side writes to
stderr; stdout: the real stderr). common/lean_tensorflow.py starts it.

TensorFlow's shared libraries log before anything can configure them, so TF_CPP_MIN_LOG_LEVEL
does not silence them: on TF 2.21 every `import tensorflow` prints the oneDNN notice and "Could
not find cuda drivers" twice, and the first device query on a machine without a GPU prints
`E0000 ... failed call to cuInit`, an E line that reads as an error and is not one. Later, each
kernel loaded from the XLA compilation cache (trainer/runtime/compilation_cache.py) prints three E
lines, all harmless. Dropped: every C++ INFO record; WARNING records until TensorFlow has started
(the tool writes STARTED then); and the error records listed in NOISE. Everything else passes: other
errors and warnings, fatal checks, what a child process writes.
This file imports nothing but the standard library: it runs with `-S`, beside TensorFlow.
"""
import os
import re

STARTED = b"\x00tf2-ulmfit: TensorFlow started\n"
# A record's prefix as absl writes it (TF 2.21): severity, MMDD, time (seconds since the epoch
# before absl::InitializeLog), thread, file:line, e.g. "I0000 00:00:1796191295.746061   12988
# port.cc:153] "; or as TF 2.20's own logging does: "2026-12-02 08:00:38.482304: I
# tensorflow/core/util/port.cc:153] ".
_RECORD = re.compile(rb"^(?:([IWEF])\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] "
                     rb"|\d{4}-\d\d-\d\d [\d:.]+: ([IWEF]) [\w./-]+:\d+\] )")
# What a line may begin with while it could still become a record or a NOISE line.
_MAY_BECOME_LOG = re.compile(rb"^([IWEF][\d :.]*|W[A-Z :a-z]*|T[a-z ]*|[\d: .-]+[IWEF]?)$")
NOISE = (
    b"All log messages before absl::InitializeLog() is called are written to STDERR",
    b"To enable the following instructions:",  # the second line of an INFO record
    b"failed call to cuInit",  # no GPU driver: the machine has no GPU
    b"Unable to register cuDNN factory", b"Unable to register cuFFT factory",
    b"Unable to register cuBLAS factory",  # TF's GPU plugins registering twice
    b"TF-TRT Warning: Could not find TensorRT",
    # A cache entry is tried as a text proto before the binary one it is; then loaded.
    b"Error parsing text-format tensorflow.XlaSerializedCacheEntry",
    b"Loading XLA:CPU AOT result. Target machine feature",
)


def is_noise(line: bytes, started: bool) -> bool:
    record = _RECORD.match(line)
    severity = record and (record.group(1) or record.group(2))
    if severity == b"I" or (severity == b"W" and not started):
        return True
    return any(noise in line for noise in NOISE)


def main():
    """Copies stdin to stdout line by line, leaving out noise. A partial line that cannot become
    a log record (a progress bar's `\\r` update) passes at once, not at its newline."""
    started, pending, passing = False, b"", False
    while True:
        chunk = os.read(0, 1 << 16)
        pending += chunk
        *lines, pending = pending.split(b"\n")
        out = []
        for line in lines:
            line += b"\n"
            if line == STARTED:
                started = True
            elif passing or not is_noise(line, started):
                out.append(line)
            passing = False
        if not chunk:  # end of input: the tool has exited
            if pending and not is_noise(pending, started):
                out.append(pending)
            pending = b""
        elif pending and (passing or len(pending) > 4096 or not (
                _MAY_BECOME_LOG.match(pending[:80]) or STARTED.startswith(pending))):
            out.append(pending)
            pending, passing = b"", True
        data = b"".join(out)
        while data:
            data = data[os.write(1, data):]
        if not chunk:
            return


if __name__ == "__main__":
    main()
