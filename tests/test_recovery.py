"""Recovery advice works when followed to the letter, damaged checkpoints give way to intact
ones, and a diverging run keeps (and names) its last good checkpoint."""
import hashlib
import os
import re
import shlex
import shutil

import pytest
import tensorflow as tf

from conftest import train_tiny_lm, write_corpus
from test_user_errors import TINY_LM, first_shard, flip_byte, run
from trainer.checkpoints.intact import CheckpointError
from trainer.lm.divergence import DivergenceError, LossSpikeGuard


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def error_line(result):
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1, result.stderr
    [line] = [x for x in result.stderr.splitlines() if x.startswith("error: ")]
    return line


@pytest.mark.heavy
def test_a_failed_build_accepts_the_corrected_command(tmp_path):
    corpus = write_corpus(tmp_path / "c.txt", 300)
    out = f"--output_dir={tmp_path}/data"
    assert "no file matches" in error_line(
        run("data_pipeline.build", f"--input={tmp_path}/typo.txt", out, "--vocab_size=80"))
    # Too little text for a valid split, after SentencePiece was trained on the train split:
    # the advised fix (a larger --valid_fraction) changes the train split, so it starts over.
    line = error_line(run("data_pipeline.build", f"--input={corpus}", out, "--vocab_size=80",
                          "--valid_fraction=0.001"))
    assert "raise --valid_fraction" in line
    assert run("data_pipeline.build", f"--input={corpus}", out, "--vocab_size=80",
               "--valid_fraction=0.2").returncode == 0
    fresh = run("data_pipeline.build", f"--input={corpus}", f"--output_dir={tmp_path}/fresh",
                "--vocab_size=80", "--valid_fraction=0.2")
    assert fresh.returncode == 0
    # SentencePiece was retrained on the new train split: the same model as a fresh build's.
    assert sha256(tmp_path / "data" / "spm.model") == sha256(tmp_path / "fresh" / "spm.model")


@pytest.mark.heavy
def test_rerunning_the_build_names_lost_shards_and_the_advised_repair_restores_them(tmp_path):
    """A directory read from gs:// by many hosts can lose shards after it was built: rerunning
    the original command names every one (not "complete"), and its advice rebuilds them."""
    corpus = write_corpus(tmp_path / "c.txt", 300)
    build = ["data_pipeline.build", f"--input={corpus}", f"--output_dir={tmp_path}/data",
             "--vocab_size=80", "--valid_fraction=0.2"]
    assert run(*build).returncode == 0
    lost = sorted(str(p) for p in (tmp_path / "data").glob("*-00000-of-*.tfrecord"))[:2]
    originals = [sha256(path) for path in lost]
    for path in lost:
        os.remove(path)
    line = error_line(run(*build))
    assert all(f"{path}: listed in" in line for path in lost)
    advice = re.search(r"python -m (data_pipeline\.build .*--repair)", line).group(1)
    assert run(*shlex.split(advice)).returncode == 0
    assert [sha256(path) for path in lost] == originals
    assert run(*build).returncode == 0


@pytest.mark.heavy
@pytest.mark.parametrize("damage", ["flipped byte", "truncated", "deleted", "manifest"])
def test_damaged_data_is_named_and_the_advised_repair_restores_it(tmp_path, pretrained_lm,
                                                                  damage):
    data = shutil.copytree(pretrained_lm[1], tmp_path / "data")
    damaged = str(data / "manifest.json") if damage == "manifest" else first_shard(data)
    original = sha256(damaged)
    if damage == "flipped byte":  # same size: only a record's checksum sees it
        flip_byte(damaged)
    elif damage in ("truncated", "manifest"):
        with open(damaged, "r+b") as f:
            f.truncate(os.path.getsize(damaged) - 7)
    else:
        os.remove(damaged)
    train = ["trainer.main", *TINY_LM, f"--gin_param=train_lm.data_dir='{data}'",
             f"--model_dir={tmp_path}/model"]
    line = error_line(run(*train))
    assert damaged in line
    advice = re.search(r"python -m (data_pipeline\.build .*--repair)", line).group(1)
    repaired = run(*shlex.split(advice))
    assert repaired.returncode == 0, repaired.stderr
    assert sha256(damaged) == original
    assert run("data_pipeline.build", f"--output_dir={data}", "--verify").returncode == 0


def _train(model_dir, data_dir, corpus, steps, **settings):
    return train_tiny_lm(str(data_dir), str(model_dir), corpus, steps=steps,
                         checkpoint_every_steps=1, **settings)


def _steps(model_dir):
    state = tf.train.get_checkpoint_state(str(model_dir))
    return [int(p.rsplit("-", 1)[1]) for p in state.all_model_checkpoint_paths]


def _truncate_data(prefix):
    [data] = [f for f in tf.io.gfile.glob(prefix + ".data-*")]
    with open(data, "r+b") as f:
        f.truncate(os.path.getsize(data) // 2)


@pytest.mark.heavy
def test_a_damaged_latest_checkpoint_gives_way_to_the_newest_intact_one(tmp_path, caplog):
    corpus = write_corpus(tmp_path / "c.txt", 300)
    model, data = tmp_path / "model", tmp_path / "data"
    _train(model, data, corpus, 3)
    assert _steps(model) == [1, 2, 3]
    _truncate_data(f"{model}/ckpt-3")
    assert run("trainer.export", f"--checkpoint={model}/ckpt-3",
               f"--output={tmp_path}/x").returncode == 1
    metrics = _train(model, data, corpus, 5)
    assert metrics["step"] == 5
    assert re.search(rf"Skipping damaged checkpoint\(s\) {model}/ckpt-3 .*using {model}/ckpt-2",
                     caplog.text)
    assert _steps(model)[-1] == 5
    for step in _steps(model):
        _truncate_data(f"{model}/ckpt-{step}")
    with pytest.raises(CheckpointError, match=r"no checkpoint reads back whole.* delete the "
                                              r"checkpoint files \(`checkpoint`, ckpt-\*\)"):
        _train(model, data, corpus, 6)
    for name in os.listdir(model):  # the advice, followed
        if name == "checkpoint" or name.startswith("ckpt-"):
            os.remove(model / name)
    assert _train(model, data, corpus, 2)["step"] == 2


def test_loss_spike_guard():
    guard = LossSpikeGuard(factor=2.0, patience=2)
    assert all(guard.is_good(step, loss) for step, loss in enumerate([6.0, 5.0, 5.0], 1))
    assert not guard.is_good(4, 30.0)  # a transient spike: not good, not yet a stop
    assert guard.is_good(5, 5.5)
    guard.saved("/m/ckpt-5", 5, 5.5)
    assert not guard.is_good(6, 1e34) and not guard.is_good(7, 1e34)
    with pytest.raises(DivergenceError, match=r"loss is 1e\+34 at step 8, over 2x the running "
                                              r"loss .* since step 6; stopped without saving\. "
                                              r"The last good checkpoint is /m/ckpt-5 \(step 5"):
        guard.is_good(8, 1e34)
    with pytest.raises(DivergenceError, match="loss is nan at step 1"):
        LossSpikeGuard().is_good(1, float("nan"))
    never = LossSpikeGuard(factor=None)  # fastai's behaviour: train on through spikes
    assert all(never.is_good(step, loss) for step, loss in enumerate([5.0, 1e30, 1e34], 1))


def test_a_diverging_run_keeps_its_last_good_checkpoint(tmp_path, monkeypatch):
    """The loss explodes but stays finite: with a checkpoint every step and only two kept, the
    run stops, saves nothing after the spike began and names a checkpoint that is on disk."""
    from trainer.lm import training as lm_training
    real = lm_training.LanguageModelTask.train_loop

    def exploding(task, iterator, steps):
        loss, norm = real(task, iterator, steps)
        step = int(task.optimizer.iterations.numpy())
        return (loss if step <= 4 else loss * 1e30), norm

    monkeypatch.setattr(lm_training.LanguageModelTask, "train_loop", exploding)
    corpus = write_corpus(tmp_path / "c.txt", 300)
    model = tmp_path / "model"
    with pytest.raises(DivergenceError, match=rf"since step 5; stopped without saving\. The last "
                                              rf"good checkpoint is {model}/ckpt-4 \(step 4"):
        _train(model, tmp_path / "data", corpus, 20, keep_checkpoints=2,
               loss_spike_patience=3)
    assert _steps(model) == [3, 4]


def test_a_worker_waiting_for_the_chiefs_data_names_the_manifest_and_the_fix(tmp_path):
    from common.errors import UserError
    from trainer.lm.training import prepare_data
    with pytest.raises(UserError) as raised:
        prepare_data(str(tmp_path / "data"), "corpus/*.txt", chief=False, wait_seconds=0.3)
    message = str(raised.value)
    assert message.startswith(f"{tmp_path / 'data' / 'manifest.json'}: not written after 0.3 s")
    assert "python -m data_pipeline.build --input=corpus/*.txt" in message
