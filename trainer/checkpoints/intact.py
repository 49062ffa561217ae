"""Which checkpoint to load: the newest one of a directory that reads back whole.

TensorFlow's checkpoints keep a crc32c of every tensor, so a `.data` file that was truncated or
changed fails when it is read; a restore would fail half-way, after some variables changed. So
every tensor is read once before a checkpoint is used, and a damaged newest checkpoint gives way,
with a warning naming it, to the newest intact one (the CheckpointManager keeps several).
"""
from absl import logging
import tensorflow as tf

from common.errors import UserError


class CheckpointError(UserError):
    pass


def damage(prefix):
    """Why the checkpoint at `prefix` cannot be read back whole, or None if it can."""
    try:
        reader = tf.train.load_checkpoint(prefix)
        for key in reader.get_variable_to_shape_map():
            reader.get_tensor(key)
    except (tf.errors.OpError, IndexError) as e:  # IndexError: a truncated .data file
        return getattr(e, "message", str(e)).splitlines()[0]
    return None


def check_intact(prefix):
    """Raises a CheckpointError naming `prefix` if it cannot be read back whole."""
    if reason := damage(prefix):
        raise CheckpointError(f"{prefix}: damaged checkpoint ({reason}). Pass the model directory "
                              "instead: its newest intact checkpoint is used.")


def latest_intact_checkpoint(directory):
    """The newest checkpoint of `directory` that reads back whole; None if it has none."""
    state = tf.train.get_checkpoint_state(directory)
    if state is None:
        return None
    newest_first = list(reversed(state.all_model_checkpoint_paths)) or [
        state.model_checkpoint_path]
    damaged = []
    for prefix in newest_first:
        reason = damage(prefix)
        if reason is None:
            if damaged:
                logging.warning("Skipping damaged checkpoint(s) %s; using %s, the newest intact "
                                "one.", "; ".join(damaged), prefix)
            return prefix
        damaged.append(f"{prefix} ({reason})")
    raise CheckpointError(
        f"{directory}: no checkpoint reads back whole: {'; '.join(damaged)}. To start over, "
        f"delete the checkpoint files (`checkpoint`, ckpt-*) in {directory}.")
