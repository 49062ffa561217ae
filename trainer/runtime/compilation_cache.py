"""XLA's compiled kernels kept on disk from one training run to the next.

The LSTM kernels, the Adam step and the LM loss are XLA-compiled once per shape. A fine-tuning
run on a CPU compiles about fifty of them (the classifier's chunks come in a few row counts and
lengths): ~25 s of a two-minute run on the demo task, every run. TensorFlow can keep the
executables in a directory (its persistent compilation cache, TF_XLA_FLAGS
--tf_xla_persistent_cache_directory): the key is the compiled HLO, the shapes and TF's version,
an entry is written to a temporary file and renamed (so concurrent runs never read half a file),
and it is checked against the HLO when read. A later run of the same shapes loads instead of
compiling; another TF version or model simply misses.

What TF does not survive is a damaged file (a disk error, a full disk, a file cut short by hand):
the run fails with "Read less bytes than requested", naming no file. So `check_compilation_cache`
reads every entry's protobuf framing first and removes, with a warning naming it, each one that
does not parse; it is compiled again. (Damage inside an intact frame is beyond what this finds.)
The directory only grows (tens of kB per kernel); deleting it is always safe.

The directory is an environment variable, not a gin binding: TF reads TF_XLA_FLAGS once, when it
first lists its devices, which a command-line tool does as it imports TensorFlow
(common/lean_tensorflow.py). So trainer.main sets the flag before it imports TensorFlow,
and this module imports no TensorFlow at the top.
"""
import os

from absl import logging

ENV = "ULMFIT_XLA_CACHE_DIR"
_FLAGS = "TF_XLA_FLAGS"
_DIRECTORY_FLAG = "--tf_xla_persistent_cache_directory"


def cache_directory() -> str:
    """$ULMFIT_XLA_CACHE_DIR if set ('' for no cache), else $XDG_CACHE_HOME/ulmfit_tf2/xla
    (~/.cache/ulmfit_tf2/xla): one per user and machine."""
    if ENV in os.environ:
        return os.environ[ENV]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "ulmfit_tf2", "xla")


def use_compilation_cache():
    """Points TF at cache_directory(); call before TensorFlow lists its devices (before
    absl.app.run). A cache directory the user set in TF_XLA_FLAGS wins. Touches no file."""
    flags, directory = os.environ.get(_FLAGS, ""), cache_directory()
    if directory and _DIRECTORY_FLAG not in flags:
        os.environ[_FLAGS] = f"{flags} {_DIRECTORY_FLAG}={directory}".strip()


def check_compilation_cache():
    """Creates the directory use_compilation_cache chose, and removes damaged entries; call
    before the first compilation. A directory that cannot be used is a UserError."""
    from common.errors import UserError  # pylint: disable=import-outside-toplevel
    directory = cache_directory()
    if not directory or f"{_DIRECTORY_FLAG}={directory}" not in os.environ.get(_FLAGS, ""):
        return
    if "://" in directory:
        raise UserError(f"{ENV}={directory}: the compilation cache must be a local directory; "
                        f"set one, or {ENV}= (empty) for no cache.")
    try:
        os.makedirs(directory, exist_ok=True)
        names = sorted(os.listdir(directory))
        if not os.access(directory, os.W_OK):
            raise PermissionError(13, "not writable")
    except OSError as e:
        raise UserError(f"{ENV}={directory}: {e.strerror}; set a writable directory, or "
                        f"{ENV}= (empty) for no cache.") from None
    for name in names:
        path = os.path.join(directory, name)
        if name.endswith(".pb") and not _is_whole_entry(path):
            logging.warning("XLA compilation cache: %s is damaged; removed (its kernel is "
                            "compiled again).", path)
            os.remove(path)


def _is_whole_entry(path) -> bool:
    """True if the file is TF's cache entry framing (XlaSerializedCacheEntry: field 1 the key,
    2 the HLO, 3 the executable, each length-delimited), ending exactly at the end of the file."""
    with open(path, "rb") as f:
        data = f.read()
    position, fields = 0, []
    try:
        while position < len(data):
            tag, position = _varint(data, position)
            size, position = _varint(data, position)
            fields.append(tag)
            position += size
    except IndexError:  # cut inside a field's header
        return False
    length_delimited = [(number << 3) | 2 for number in (1, 2, 3)]
    return position == len(data) and sorted(fields) == length_delimited


def _varint(data, position):
    value, shift = 0, 0
    while True:
        byte = data[position]
        value |= (byte & 0x7F) << shift
        position += 1
        if not byte & 0x80:
            return value, position
        shift += 7
