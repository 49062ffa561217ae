"""The tf.distribute strategy a run uses, chosen in gin (see gin_configs/mirrored.gin etc.)."""
import os

import tensorflow as tf

STRATEGY_KINDS = ("one_device", "mirrored", "multi_worker", "tpu")


def logical_cpus(count):
    """Names of `count` logical CPU devices, made from the host CPU if the runtime is not up yet.

    This is how replicas are simulated on a machine without accelerators.
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError:
        pass  # the runtime is initialized: use the logical CPUs it already has
    devices = tf.config.list_logical_devices("CPU")
    if len(devices) < count:
        raise ValueError(f"make_strategy.cpu_replicas={count}, but TensorFlow started with "
                         f"{len(devices)} CPU device(s); make the strategy before any TF op runs.")
    return [d.name for d in devices[:count]]


def _tpu_strategy(tpu):
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    except ImportError as e:  # named TPUs (pod slices) are resolved through cloud-tpu-client
        raise ImportError(f"make_strategy.tpu={tpu!r} needs the Cloud TPU client, which "
                          "`python3 -m launch.tpu_install` installs on a TPU VM (tpu='local' "
                          "does not need it).") from e
    if tpu != "local":
        tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def make_strategy(kind="one_device", devices=None, cpu_replicas=0, tpu="local"):
    """kind:
      one_device    `devices[0]`, default the first GPU, else the CPU (TF's default strategy).
      mirrored      `devices`, default every GPU; with no GPU, `cpu_replicas` logical CPUs.
      multi_worker  MultiWorkerMirroredStrategy over the cluster in the TF_CONFIG variable.
      tpu           TPUStrategy: `tpu='local'` on a TPU VM, or a TPU's name (needs [tpu] extra).
    """
    if kind not in STRATEGY_KINDS:
        raise ValueError(f"make_strategy.kind={kind!r} is not one of {STRATEGY_KINDS}.")
    # Physical, not logical, devices: listing logical ones would start the runtime, after
    # which logical CPUs can no longer be made.
    gpus = [f"/gpu:{i}" for i in range(len(tf.config.list_physical_devices("GPU")))]
    if kind == "one_device":
        if not devices:
            # TensorFlow's default strategy, on the same device (the first GPU, else the CPU),
            # hands Keras and the LM trainer their datasets as they are. OneDeviceStrategy feeds
            # them through a MultiDeviceIterator, whose own pipeline runs tf.data's autotuning
            # thread whatever the dataset's options (data_pipeline/untuned.py): an epoch's
            # iterator then took 7-20 s to delete, in some runs (gdb: RootDataset::Iterator's
            # destructor waiting for that thread).
            return tf.distribute.get_strategy()
        return tf.distribute.OneDeviceStrategy(devices[0])
    if kind == "mirrored":
        devices = devices or gpus or (logical_cpus(cpu_replicas) if cpu_replicas else None)
        on_cpus = devices is not None and all("CPU" in d.upper() for d in devices)
        # CPU replicas reduce through one device: collective ops would key their groups per
        # strategy, so two CPU strategies of different sizes in one process would collide.
        return tf.distribute.MirroredStrategy(
            devices, cross_device_ops=tf.distribute.ReductionToOneDevice() if on_cpus else None)
    if kind == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return _tpu_strategy(tpu)


def _resolver(strategy):
    """`strategy`'s cluster resolver; without a strategy, the one of the TF_CONFIG variable."""
    return (getattr(strategy, "cluster_resolver", None) if strategy is not None
            else tf.distribute.cluster_resolver.TFConfigClusterResolver())


def is_chief(strategy=None):
    """The worker that keeps checkpoints and writes summaries and run files (the only process
    outside multi-worker; a pod slice's one client). Without a strategy: this process's role in
    the TF_CONFIG variable."""
    resolver = _resolver(strategy)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    chief_type = "chief" if "chief" in resolver.cluster_spec().as_dict() else "worker"
    return resolver.task_type == chief_type and resolver.task_id == 0


def checkpoint_write_dir(strategy, directory):
    """Where this worker saves: `directory` on the chief, a scratch directory inside it elsewhere
    (`strategy` None: this process's role in TF_CONFIG).

    Every worker saves (the variables are synchronized collectively); only the chief's copy is
    kept, the others go to scratch directories, as TF recommends for multi-worker runs.
    """
    if is_chief(strategy):
        return directory
    return os.path.join(directory, f".worker-{_resolver(strategy).task_id}")
