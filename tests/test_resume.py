"""End to end through `python -m trainer.main`: resume after SIGKILL is bit-exact; loss falls."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import read_all, sigkill_when, write_corpus
from trainer.lm.preemption import PREEMPTED_EXIT_CODE

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
    # Everything but bookkeeping: how many saves a run made (and how many host loops TF's
    # multi-worker preemption handler counted) is not training state.
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if name not in ("_CHECKPOINTABLE_OBJECT_GRAPH",
                            "save_counter/.ATTRIBUTES/VARIABLE_VALUE",
                            "checkpointed_runs/.ATTRIBUTES/VARIABLE_VALUE")}


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
                 lambda _: tf.train.latest_checkpoint(str(killed)) is not None, cwd=cwd)
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


def _stepped(stderr):
    """Whether the progress bar has counted a step: training is under way."""
    return re.search(r"\| *[1-9]\d*/\d+ \[", stderr) is not None


@pytest.mark.parametrize("gin_files", [(), ("gin_configs/mirrored.gin",)],
                         ids=["one_device", "mirrored"])
def test_sigterm_saves_at_the_step_reached_and_the_same_command_resumes_exactly(tmp_path,
                                                                                 gin_files):
    """A Spot VM's SIGTERM mid-epoch: a checkpoint at the current step (not the last periodic
    one), one line naming it, a restart code; the same command then ends bit-exact."""
    corpus = write_corpus(tmp_path / "c.txt", 240)
    data, cwd = tmp_path / "data", os.path.dirname(os.path.dirname(__file__))
    steps = "train_lm.max_steps=16"
    subprocess.run(_main(tmp_path / "straight", data, corpus, steps, gin_files=gin_files),
                   check=True, cwd=cwd, capture_output=True)
    run = tmp_path / "preempted"
    command = _main(run, data, corpus, steps, "train_lm.checkpoint_every_steps=1000",
                    gin_files=gin_files)
    status, stderr = sigkill_when(command, _stepped, sig=signal.SIGTERM, cwd=cwd)
    assert status == PREEMPTED_EXIT_CODE, stderr[-3000:]
    [line] = [x for x in stderr.splitlines() if x.startswith("preempted")]
    saved = tf.train.latest_checkpoint(str(run))
    step = int(saved.rsplit("-", 1)[1])
    assert 1 <= step < 16 and line == (f"preempted at step {step}: saved {saved}; run the same "
                                       "command to resume from it.")
    subprocess.run(command, check=True, cwd=cwd, capture_output=True)
    straight, resumed = _weights(tmp_path / "straight"), _weights(run)
    assert straight.keys() == resumed.keys() and len(straight) > 20
    for name in straight:
        np.testing.assert_array_equal(straight[name], resumed[name], err_msg=name)


def _on_two_replicas_in_one(model_dir, data, corpus, *params):
    """Weights of the run on 2 replicas in one process (Mirrored): what 2 workers must match."""
    subprocess.run(_main(model_dir, data, corpus, *params, gin_files=["gin_configs/mirrored.gin"]),
                   check=True, cwd=os.path.dirname(os.path.dirname(__file__)),
                   capture_output=True)
    return _weights(model_dir)


def _assert_close(expected, weights):
    """Multi-worker runs equal one process's to float32 rounding (collectives sum in their
    own order)."""
    assert expected.keys() == weights.keys()
    for name in expected:
        np.testing.assert_allclose(expected[name], weights[name], atol=1e-6, err_msg=name)


def _start_two_workers(model_dir, data, corpus, *params, stderr=(None, None)):
    """trainer.main as 2 MultiWorkerMirrored worker processes on localhost."""
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    return [subprocess.Popen(
        _main(model_dir, data, corpus, *params, gin_files=["gin_configs/multiworker.gin"]),
        cwd=os.path.dirname(os.path.dirname(__file__)), stdout=subprocess.DEVNULL,
        stderr=stderr[i], text=True, env={**os.environ, "TF_CONFIG": json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": i}})})
        for i in range(2)]


def _two_workers(model_dir, data, corpus, *params):
    """Runs the 2 workers to their end; their stderr."""
    files = [tempfile.TemporaryFile("w+") for _ in range(2)]
    workers = _start_two_workers(model_dir, data, corpus, *params, stderr=files)
    try:
        for worker, file in zip(workers, files):
            worker.wait(timeout=300)
            assert worker.returncode == 0, read_all(file)[-3000:]
    finally:
        for worker in workers:
            worker.kill()
    return [read_all(file) for file in files]


def test_sigterm_to_one_worker_saves_every_worker_at_one_step_and_resumes(tmp_path):
    """TensorFlow's PreemptionCheckpointHandler: worker 1 gets the SIGTERM, both save at the
    same step and exit (the chief into the model directory), and the same command on both ends
    where an uninterrupted run on 2 replicas does."""
    corpus, data = write_corpus(tmp_path / "c.txt", 240), tmp_path / "data"
    steps = "train_lm.max_steps=16"
    straight = _on_two_replicas_in_one(tmp_path / "straight", data, corpus, steps)
    run = tmp_path / "preempted"
    files = [tempfile.TemporaryFile("w+") for _ in range(2)]
    workers = _start_two_workers(run, data, corpus, steps, stderr=files)
    try:
        deadline = time.time() + 300
        while not _stepped(read_all(files[0])):  # the chief's progress bar
            assert time.time() < deadline and workers[0].poll() is None, \
                read_all(files[0])[-3000:]
            time.sleep(0.01)
        workers[1].send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(timeout=300)
    finally:
        for worker in workers:
            worker.kill()
    logs = [read_all(file) for file in files]
    assert [w.returncode for w in workers] == [PREEMPTED_EXIT_CODE] * 2, logs[0][-3000:]
    lines = [[x for x in log.splitlines() if x.startswith("preempted at step")] for log in logs]
    saved = tf.train.latest_checkpoint(str(run))
    step = int(saved.rsplit("-", 1)[1])
    assert lines[0] == [f"preempted at step {step}: saved {saved}; run the same command to "
                        "resume from it."]
    assert len(lines[1]) == 1 and f"preempted at step {step}: saved " in lines[1][0]
    assert 1 <= step < 16
    _two_workers(run, data, corpus, steps)
    _assert_close(straight, _weights(run))


def test_two_workers_one_writer_with_the_data_missing_at_start(tmp_path):
    """The chief builds the missing data directory while the other worker waits for its
    manifest; then one process writes the run's summaries and operative config."""
    corpus = write_corpus(tmp_path / "c.txt", 240)
    chief, other = _two_workers(tmp_path / "run", tmp_path / "data", corpus,
                                "train_lm.max_steps=2")
    assert "Building" in chief and "Building" not in other
    assert "Waiting up to 3600 s for the chief to build" in other
    assert (tmp_path / "data" / "manifest.json").exists()
    assert len(os.listdir(tmp_path / "run" / "train")) == 1  # one events file
    assert (tmp_path / "run" / "operative_config.gin").exists()


def test_two_worker_processes_match_two_replicas_in_one(tmp_path):
    """MultiWorkerMirrored over 2 processes on localhost == Mirrored over 2 devices in one."""
    corpus, data = write_corpus(tmp_path / "c.txt", 240), tmp_path / "data"
    steps = "train_lm.max_steps=4"
    one = _on_two_replicas_in_one(tmp_path / "one", data, corpus, steps)
    _two_workers(tmp_path / "multi", data, corpus, steps)
    _assert_close(one, _weights(tmp_path / "multi"))
    assert not [n for n in os.listdir(tmp_path / "multi") if n.startswith(".worker")]
