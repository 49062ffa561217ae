"""Save and go when the VM is about to be taken away (Spot and preemptible VMs, maintenance).

The controller asks `save_if_preempted(manager, step)` after every host loop; once a
preemption notice has come, it saves a checkpoint at that step and raises `Preempted`, and the
same command resumes from it exactly as from any checkpoint.

- Several workers (MultiWorkerMirroredStrategy): TensorFlow's PreemptionCheckpointHandler. A
  SIGTERM to any worker (on GCE GPU VMs, the maintenance notice) reaches every worker through
  the coordination service; all save at the same step, so no worker waits on a lost peer.
- One process (one device, Mirrored, a TPU VM's single client, also of a pod slice): SIGTERM
  sets a flag. TensorFlow's handler does nothing there: it supports TPUs on Google's internal
  clusters only, not TPU VMs.
"""
import signal

from absl import logging
import tensorflow as tf

PREEMPTED_EXIT_CODE = 42  # TensorFlow's handler's restart code, for supervisors that restart


class Preempted(Exception):
    """A preemption notice came; `checkpoint` holds the state at `step`."""

    def __init__(self, checkpoint, step):
        super().__init__(f"preempted at step {step}: saved {checkpoint}; run the same command "
                         "to resume from it.")
        self.checkpoint, self.step = checkpoint, step


class SignalPreemption:
    """One process: SIGTERM asks for a save at the end of the running host loop."""

    def __init__(self):
        self.received = False
        self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum, frame):
        del signum, frame
        logging.warning("SIGTERM: saving a checkpoint at the end of this host loop.")
        self.received = True

    def save_if_preempted(self, manager, step):
        if self.received:
            raise Preempted(manager.save(checkpoint_number=step), step)

    def close(self):
        signal.signal(signal.SIGTERM, self._previous)


class MultiWorkerPreemption:
    """Several workers: TensorFlow's PreemptionCheckpointHandler over `manager` (each worker's
    own: the chief's directory or a scratch one)."""

    def __init__(self, strategy, manager):
        self._manager = manager
        self._handler = tf.distribute.experimental.PreemptionCheckpointHandler(
            strategy.cluster_resolver, manager,
            termination_config=tf.distribute.experimental.TerminationConfig(
                exit_fn=self._exit))
        self._step = None

    def _exit(self):
        raise Preempted(self._manager.latest_checkpoint, self._step)

    def save_if_preempted(self, manager, step):
        del manager  # the handler's own
        self._step = step
        self._handler.save_checkpoint_if_preempted(checkpoint_number=step)

    def close(self):
        pass


def preemption_watcher(strategy, manager):
    """The watcher for `strategy`'s runs (see the module)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and resolver and \
            resolver.cluster_spec().as_dict():
        return MultiWorkerPreemption(strategy, manager)
    return SignalPreemption()
