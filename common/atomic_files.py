"""Atomic file writes through tf.io.gfile, so local paths and gs:// behave alike.

A file appears under its final name only once it is complete: it is written to a hidden
temporary name in the same directory and renamed. A killed process leaves at most temporaries,
which `remove_temporaries` cleans up and nothing ever mistakes for output.
"""
import hashlib
import os
import uuid

import tensorflow as tf

_TEMP_PREFIX = ".tmp-"


def temporary_path(path: str) -> str:
    directory, name = os.path.split(path)
    return os.path.join(directory, f"{_TEMP_PREFIX}{uuid.uuid4().hex[:8]}-{name}")


def commit(temp_path: str, path: str) -> None:
    tf.io.gfile.rename(temp_path, path, overwrite=True)


def write_atomically(path: str, data: bytes | str) -> None:
    temp = temporary_path(path)
    with tf.io.gfile.GFile(temp, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
    commit(temp, path)


def remove_temporaries(directory: str) -> list[str]:
    """Deletes what interrupted writers left in `directory`; returns the deleted names."""
    if not tf.io.gfile.isdir(directory):
        return []
    stale = [n for n in tf.io.gfile.listdir(directory) if n.startswith(_TEMP_PREFIX)]
    for name in stale:
        tf.io.gfile.remove(os.path.join(directory, name))
    return stale


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with tf.io.gfile.GFile(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
