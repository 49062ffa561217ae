"""fastai's learning-rate finder: the sweep, its suggestions, and the lr_find tool."""
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer.optim.lr_finder import LRSweep, SweepFinished, steep, valley

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _sweep_linear_regression(num_it=100):
    """A sweep of plain SGD on least squares with unit-variance inputs: the loss's curvature is
    2, so SGD converges for lr < 1 and fastest near 0.5, diverges above 1, and below 1e-2
    100 steps barely move it."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4096, 8)).astype(np.float32)
    y = x @ rng.normal(size=(8, 1)).astype(np.float32) + 0.1 * rng.normal(size=(4096, 1))
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1, use_bias=False)])
    sweep = LRSweep(1e-5, 10.0, num_it)
    model.compile(keras.optimizers.SGD(sweep.schedule()[0]), "mse")
    with pytest.raises(SweepFinished):
        model.fit(x, y, batch_size=64, epochs=2, shuffle=False, verbose=0,  # 128 steps
                  callbacks=[sweep.keras_callback()])
    return sweep


def test_the_suggestions_lie_where_the_loss_falls_fastest_on_a_known_problem():
    sweep = _sweep_linear_regression()
    lrs = np.array(sweep.lrs)
    np.testing.assert_allclose(lrs, 1e-5 * 1e6 ** (np.arange(len(lrs)) / 100), rtol=1e-5)
    assert len(lrs) < 100 and lrs[-1] > 1  # stopped by divergence, past the stable range
    for name, (lr, loss) in sweep.suggestions().items():
        assert 1e-2 <= lr <= 1, (name, lr)
        index = sweep.lrs.index(lr)
        assert loss == sweep.losses[index] > sweep.losses[index + 1], name  # falling there


def test_the_sweep_smooths_each_batchs_own_loss_as_fastai_does():
    sweep = LRSweep(num_it=10)
    callback = sweep.keras_callback()
    # Keras logs the epoch's running mean: batch losses 4, 2, then 5 in a new epoch.
    for epoch, batch, running_mean in ((0, 0, 4.0), (0, 1, 3.0), (1, 0, 5.0)):
        if batch == 0:
            callback.on_epoch_begin(epoch)
        callback.on_train_batch_end(batch, {"loss": running_mean})
    average, expected = 0.0, []
    for step, loss in enumerate([4.0, 2.0, 5.0]):  # fastai's AvgSmoothLoss, debiased
        average = 0.98 * average + 0.02 * loss
        expected.append(average / (1 - 0.98 ** (step + 1)))
    np.testing.assert_allclose(sweep.losses, expected, rtol=1e-6)
    np.testing.assert_allclose(sweep.lrs, 1e-7 * 1e8 ** (np.arange(3) / 10), rtol=1e-5)


def test_valley_and_steep_pick_fastais_points():
    lrs = np.logspace(-4, 0, 9)
    losses = np.array([5.0, 4.9, 4.5, 3.0, 2.0, 1.5, 1.4, 3.0, 9.0])
    # The longest fall is steps 0..6 (7 steps); fastai indexes it at max_start (6 - 7 = -1)
    # + int(7/3) + int(7/6): step 2.
    assert valley(lrs, losses) == (lrs[2], losses[2])
    assert steep(lrs, losses) == (lrs[2], losses[2])  # 4.5 -> 3.0: the largest drop
    fastai = pytest.importorskip("fastai.callback.schedule")
    torch = pytest.importorskip("torch")
    for seed in range(5):
        curve = np.random.default_rng(seed).normal(size=30).cumsum()
        points = np.logspace(-6, 1, 30)
        for ours, theirs in ((valley, fastai.valley), (steep, fastai.steep)):
            expected = theirs(torch.tensor(points), torch.tensor(curve), 100)
            assert ours(points, curve)[0] == pytest.approx(expected[0])


@pytest.mark.heavy
def test_lr_find_plots_a_language_models_sweep_and_leaves_the_model_alone(pretrained_lm,
                                                                           tmp_path):
    model_dir, data_dir = pretrained_lm
    before = {name: os.path.getmtime(os.path.join(model_dir, name))
              for name in os.listdir(model_dir)}
    output = tmp_path / "plots" / "lm.png"
    done = subprocess.run(
        [sys.executable, "-m", "trainer.lr_find", "--gin_file=gin_configs/finetune_lm.gin",
         f"--gin_param=train_lm.init_from='{model_dir}'",
         f"--gin_param=train_lm.data_dir='{data_dir}'", "--gin_param=train_lm.batch_size=4",
         "--gin_param=train_lm.bptt=10", "--num_it=30", f"--output={output}"],
        cwd=ROOT, capture_output=True, text=True, check=True)
    image = tf.io.decode_png(output.read_bytes())
    assert image.shape[0] > 100 and image.shape[1] > 100
    record = json.loads((tmp_path / "plots" / "lm.json").read_text())
    assert 6 < len(record["lrs"]) <= 30
    lines = done.stdout.strip().splitlines()
    assert lines[0] == f"{len(record['lrs'])} steps; plot written to {output}"
    for line, (name, lr) in zip(lines[1:], record["suggestions"].items()):
        assert line.startswith(f"{name}: lr {lr:.2e}")
    after = {name: os.path.getmtime(os.path.join(model_dir, name))
             for name in os.listdir(model_dir)}
    assert after == before  # nothing written, nothing added
