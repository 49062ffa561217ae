"""End to end through `python -m trainer.main`: resume after SIGKILL is bit-exact; loss falls."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import sigkill_when, write_corpus

pytestmark = pytest.mark.heavy


def _main(model_dir, data_dir, corpus, *params, gin_files=()):
    return [sys.executable, "-m", "trainer.main", "--gin_file=gin_configs/smoke.gin",
            *[f"--gin_file={f}" for f in gin_files],
            f"--model_dir={model_dir}", f"--gin_param=train_lm.data_dir='{data_dir}'",
            f"--gin_param=train_lm.build_input='{corpus}'",
            "--gin_param=BuildSettings.vocab_size=80",
            "--gin_param=BuildSettings.valid_fraction=0.2",
            "--gin_param=train_lm.eval_batch_size=4",
            "--gin_param=train_lm.batch_size=16", "--gin_param=train_lm.bptt=30",
            "--gin_param=train_lm.steps_per_loop=1", "--gin_param=train_lm.epochs=2",
            "--gin_param=AWDLSTMLanguageModel.emb_size=16",
            "--gin_param=AWDLSTMLanguageModel.hidden_size=24",
            *[f"--gin_param={p}" for p in params]]


def _weights(model_dir):
    reader = tf.train.load_checkpoint(model_dir)
    # Everything but bookkeeping: how many saves a run made is not training state.
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if name not in ("_CHECKPOINTABLE_OBJECT_GRAPH", "save_counter/.ATTRIBUTES/VARIABLE_VALUE")}


@pytest.mark.parametrize("gin_files", [(), ("gin_configs/mirrored.gin",)],
                         ids=["one_device", "mirrored"])
def test_sigkill_and_resume_is_bit_exact(tmp_path, gin_files):
    corpus = write_corpus(tmp_path / "c.txt", 240)
    data, cwd = tmp_path / "data", os.path.dirname(os.path.dirname(__file__))
    n = 8
    # An epoch here is 9-14 steps: the resumed run also crosses an epoch boundary.
    subprocess.run(_main(tmp_path / "straight", data, corpus, f"train_lm.max_steps={2 * n}",
                         gin_files=gin_files), check=True, cwd=cwd, capture_output=True)
    killed = tmp_path / "killed"
    sigkill_when(_main(killed, data, corpus, f"train_lm.max_steps={10 * n}",
                       f"train_lm.checkpoint_every_steps={n}", gin_files=gin_files),
                 lambda: tf.train.latest_checkpoint(str(killed)) is not None, cwd=cwd)
    assert tf.train.latest_checkpoint(str(killed)).endswith(f"ckpt-{n}")
    subprocess.run(_main(killed, data, corpus, f"train_lm.max_steps={2 * n}",
                         gin_files=gin_files), check=True, cwd=cwd, capture_output=True)
    straight, resumed = _weights(tmp_path / "straight"), _weights(killed)
    assert straight.keys() == resumed.keys() and len(straight) > 20
    for name in straight:
        np.testing.assert_array_equal(straight[name], resumed[name], err_msg=name)


def test_smoke_config_learns(tmp_path):
    cwd = os.path.dirname(os.path.dirname(__file__))
    result = subprocess.run(
        [sys.executable, "-m", "trainer.main", "--gin_file=gin_configs/smoke.gin",
         f"--model_dir={tmp_path / 'model'}", "--gin_param=train_lm.max_steps=40",
         f"--gin_param=train_lm.data_dir='{tmp_path / 'pydocs'}'"],
        check=True, cwd=cwd, capture_output=True, text=True)
    report = result.stdout.strip().splitlines()[-1]
    ratio = float(report.rsplit("ratio ", 1)[1].rstrip(")"))
    # An untrained model is near uniform (ppl ~ vocab 8000, 10x the unigram); 40 steps must
    # already bring it within 1.6x of the unigram baseline.
    assert ratio < 1.6, report
    assert os.path.exists(tmp_path / "model" / "train")


def test_two_worker_processes_match_two_replicas_in_one(tmp_path):
    """MultiWorkerMirrored over 2 processes on localhost == Mirrored over 2 devices in one."""
    corpus = write_corpus(tmp_path / "c.txt", 240)
    data, cwd = tmp_path / "data", os.path.dirname(os.path.dirname(__file__))
    steps = "train_lm.max_steps=4"
    subprocess.run(_main(tmp_path / "one", data, corpus, steps,
                         gin_files=["gin_configs/mirrored.gin"]),
                   check=True, cwd=cwd, capture_output=True)
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    workers = [subprocess.Popen(
        _main(tmp_path / "multi", data, corpus, steps, gin_files=["gin_configs/multiworker.gin"]),
        cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={**os.environ, "TF_CONFIG": json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": i}})})
        for i in range(2)]
    try:
        for worker in workers:
            _, err = worker.communicate(timeout=300)
            assert worker.returncode == 0, err.decode()[-3000:]
    finally:
        for worker in workers:
            worker.kill()
    one, multi = _weights(tmp_path / "one"), _weights(tmp_path / "multi")
    assert one.keys() == multi.keys()
    for name in one:
        np.testing.assert_allclose(one[name], multi[name], atol=1e-6, err_msg=name)
    assert not [n for n in os.listdir(tmp_path / "multi") if n.startswith(".worker")]
