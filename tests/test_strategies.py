"""The strategy factory, including the TPU branch (mocked: no TPU is reachable here)."""
import json
from unittest import mock

import pytest
import tensorflow as tf

from data_pipeline.untuned import untuned
from trainer.runtime import strategies
from trainer.runtime.strategies import make_strategy


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
        with pytest.raises(ImportError, match=r"python3 -m launch.tpu_install"):
            strategies.make_strategy("tpu", tpu="my-tpu")


class FakeCloudTpuApi:
    """The Cloud TPU API's nodes().get() as TensorFlow's TPU client calls it, for a v4-32 slice:
    4 hosts, each serving its chips on port 8470."""

    def __init__(self):
        self.asked = []

    def projects(self):
        return self

    def locations(self):
        return self

    def nodes(self):
        return self

    def get(self, name):
        self.asked.append(name)
        return self

    def execute(self):
        return {"state": "READY", "acceleratorType": "v4-32", "networkEndpoints": [
            {"ipAddress": f"10.1.0.{host}", "port": 8470} for host in range(4)]}


def test_a_pod_slice_is_one_client_addressing_every_host():
    """TPU name -> TensorFlow's own resolver asks the TPU API for the slice's hosts; the one
    process connects to all of them and is the only chief (checkpoints, summaries)."""
    api = FakeCloudTpuApi()
    real_resolver = tf.distribute.cluster_resolver.TPUClusterResolver

    def resolver_on_fake_api(tpu):  # on the VM, project and zone come from GCE's metadata
        return real_resolver(tpu=tpu, project="proj", zone="us-central2-b", service=api)

    with mock.patch.object(tf.distribute.cluster_resolver, "TPUClusterResolver",
                           side_effect=resolver_on_fake_api), \
            mock.patch.object(tf.config, "experimental_connect_to_cluster") as connect, \
            mock.patch.object(tf.tpu.experimental, "initialize_tpu_system"), \
            mock.patch.object(tf.distribute, "TPUStrategy") as tpu_strategy:
        make_strategy("tpu", tpu="ulmfit")
    [resolver], _ = connect.call_args
    assert resolver.cluster_spec().as_dict() == {
        "worker": [f"10.1.0.{host}:8470" for host in range(4)]}
    assert api.asked[0] == "projects/proj/locations/us-central2-b/nodes/ulmfit"
    assert resolver.master() == "grpc://10.1.0.0:8470"
    tpu_strategy.return_value.cluster_resolver = resolver
    assert strategies.is_chief(tpu_strategy.return_value)


@pytest.mark.parametrize("cluster, task, chief", [
    ({"worker": ["a:1", "b:1"]}, {"type": "worker", "index": 0}, True),
    ({"worker": ["a:1", "b:1"]}, {"type": "worker", "index": 1}, False),
    ({"chief": ["c:1"], "worker": ["a:1"]}, {"type": "worker", "index": 0}, False),
    ({"chief": ["c:1"], "worker": ["a:1"]}, {"type": "chief", "index": 0}, True)])
def test_the_chief_is_read_off_tf_config_without_a_strategy(monkeypatch, cluster, task, chief):
    """The one writer of operative_config.gin, downstream run files and their events."""
    assert strategies.is_chief()  # no TF_CONFIG: one process
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": task}))
    assert strategies.is_chief() == chief
    # Where a downstream run's weights go on this worker: kept, or a scratch copy inside.
    assert strategies.checkpoint_write_dir(None, "/m") == (
        "/m" if chief else f"/m/.worker-{task['index']}")
