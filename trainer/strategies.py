"""The tf.distribute strategy a run uses, chosen in gin."""
import gin
import tensorflow as tf

STRATEGY_KINDS = ("one_device",)


@gin.configurable
def make_strategy(kind="one_device", device=None):
    """`one_device`: `device`, default the first GPU if one is visible, else the CPU."""
    if kind == "one_device":
        if device is None:
            device = "/gpu:0" if tf.config.list_logical_devices("GPU") else "/cpu:0"
        return tf.distribute.OneDeviceStrategy(device)
    raise ValueError(f"make_strategy.kind={kind!r} is not one of {STRATEGY_KINDS}.")
