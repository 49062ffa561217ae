"""The strategy factory, including the TPU branch (mocked: no TPU is reachable here)."""
from unittest import mock

import pytest
import tensorflow as tf

from data_pipeline.untuned import untuned
from trainer import strategies
from trainer.strategies import make_strategy


def test_one_device_and_mirrored_on_cpus():
    assert make_strategy("one_device").num_replicas_in_sync == 1
    mirrored = make_strategy("mirrored", cpu_replicas=2)
    assert mirrored.num_replicas_in_sync == 2
    assert [d.split("/")[-1] for d in mirrored.extended.worker_devices] == \
        ["device:CPU:0", "device:CPU:1"]
    with pytest.raises(ValueError, match="make_strategy.kind='gpu' is not one of"):
        make_strategy("gpu")


def test_one_device_iterates_the_dataset_itself_with_its_options():
    """No MultiDeviceIterator, whose own pipeline would run tf.data's autotuning thread (its
    iterators then waited seconds to be deleted): what the strategy hands the trainer is the
    dataset, tuned or not as it was made."""
    dataset = untuned(tf.data.Dataset.range(6).batch(2))
    distributed = make_strategy("one_device").experimental_distribute_dataset(dataset)
    assert distributed is dataset and not distributed.options().autotune.enabled
    assert [list(b.numpy()) for b in distributed] == [[0, 1], [2, 3], [4, 5]]
    pinned = make_strategy("one_device", devices=["/cpu:0"])
    assert isinstance(pinned, tf.distribute.OneDeviceStrategy)


@pytest.mark.parametrize("tpu, connects", [("local", False), ("my-tpu", True)])
def test_tpu_strategy_initializes_the_tpu_system(tpu, connects):
    with mock.patch.object(tf.distribute.cluster_resolver, "TPUClusterResolver") as resolver, \
            mock.patch.object(tf.config, "experimental_connect_to_cluster") as connect, \
            mock.patch.object(tf.tpu.experimental, "initialize_tpu_system") as initialize, \
            mock.patch.object(tf.distribute, "TPUStrategy") as tpu_strategy:
        assert make_strategy("tpu", tpu=tpu) is tpu_strategy.return_value
    resolver.assert_called_once_with(tpu=tpu)
    assert connect.called == connects
    initialize.assert_called_once_with(resolver.return_value)
    tpu_strategy.assert_called_once_with(resolver.return_value)


def test_named_tpu_without_the_extra_says_how_to_install_it():
    with mock.patch.object(tf.distribute.cluster_resolver, "TPUClusterResolver",
                           side_effect=ImportError("no cloud_tpu_client")):
        with pytest.raises(ImportError, match=r"pip install -e '.\[tpu\]'"):
            strategies.make_strategy("tpu", tpu="my-tpu")
