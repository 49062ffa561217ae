"""The checkpoints of one run directory, kept the same way by every trainer."""
import tensorflow as tf

from trainer.checkpoints.intact import latest_intact_checkpoint
from trainer.runtime.strategies import checkpoint_write_dir


class RunCheckpoints:
    """`checkpoint` saved in `directory`, the newest `keep` kept. A restore reads the newest
    intact one (every tensor's checksum read back; a damaged newest one gives way to an intact
    one). Under a multi-worker strategy only the chief writes to `directory`; the others write
    scratch copies, which `close` removes."""

    def __init__(self, checkpoint, directory, keep, step_counter=None, strategy=None):
        self.checkpoint, self.directory = checkpoint, directory
        write_dir = checkpoint_write_dir(strategy or tf.distribute.get_strategy(), directory)
        self.manager = tf.train.CheckpointManager(checkpoint, write_dir, keep,
                                                  step_counter=step_counter)

    def restore(self):
        """Restores the newest intact checkpoint; its path, or None if there is none."""
        latest = latest_intact_checkpoint(self.directory)
        if latest:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
        return latest

    def save(self, number):
        return self.manager.save(checkpoint_number=number)

    def close(self):
        if self.manager.directory != self.directory:  # a non-chief worker's scratch copy
            tf.io.gfile.rmtree(self.manager.directory)
