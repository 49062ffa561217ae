"""launch/: TPU VM commands (dry run), the GPU smoke test on a CPU machine, non-local paths."""
import subprocess
import sys

import gin
import pytest
import tensorflow as tf

from conftest import write_corpus
from launch.tpu_vm import LaunchError, commands

SETTINGS = dict(project="proj", zone="us-central2-b", tpu="ulmfit", accelerator_type="v4-32",
                runtime_version="tpu-vm-tf-2.21.0-pjrt", data_dir="gs://b/data",
                model_dir="gs://b/run", input="builtin:pydocs",
                gin_file=["gin_configs/pretrain_awd_lstm.gin"], gin_param=["train_lm.epochs=2"],
                pip_install="-e .", source="/src/tf2-ulmfit")
VM = ["ulmfit", "--project=proj", "--zone=us-central2-b"]


def test_dry_run_commands():
    assert commands("create", SETTINGS) == [[
        "gcloud", "compute", "tpus", "tpu-vm", "create", *VM, "--accelerator-type=v4-32",
        "--version=tpu-vm-tf-2.21.0-pjrt"]]
    copy, install = commands("setup", SETTINGS)
    assert copy == ["gcloud", "compute", "tpus", "tpu-vm", "scp", *VM, "--worker=all",
                    "--recurse", "/src/tf2-ulmfit", "ulmfit:~/tf2-ulmfit"]
    assert install[-2:] == ["--worker=all", "--command=cd ~/tf2-ulmfit && pip install -e ."]
    [train] = commands("train", SETTINGS)
    assert train[:9] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", *VM, "--worker=all"]
    assert train[9] == (
        "--command=cd ~/tf2-ulmfit && nohup python -m trainer.main "
        "--gin_file=gin_configs/pretrain_awd_lstm.gin --gin_file=gin_configs/tpu.gin "
        "'--gin_param=train_lm.data_dir='\"'\"'gs://b/data'\"'\"'' "
        "--gin_param=train_lm.epochs=2 --model_dir=gs://b/run > ~/ulmfit-train.log 2>&1 &")
    [build] = commands("build_data", SETTINGS)
    assert build[-2:] == ["--worker=0", "--command=cd ~/tf2-ulmfit && python -m "
                          "data_pipeline.build --input=builtin:pydocs --output_dir=gs://b/data"]
    assert commands("delete", SETTINGS)[0][-1] == "--quiet"


@pytest.mark.parametrize("missing, message", [
    ("project", "--project is required"), ("zone", "--zone is required")])
def test_missing_project_or_zone_is_refused(missing, message):
    with pytest.raises(LaunchError, match=message):
        commands("create", {**SETTINGS, missing: None})
    with pytest.raises(LaunchError, match="--model_dir must be a gs:// path"):
        commands("train", {**SETTINGS, "model_dir": "/tmp/run"})


def test_command_line_dry_run_prints_and_refuses():
    ok = subprocess.run([sys.executable, "-m", "launch.tpu_vm", "--project=p", "--zone=z",
                         "--dry_run", "create", "delete"], capture_output=True, text=True)
    assert ok.returncode == 0
    assert ok.stdout.splitlines()[0].startswith("$ gcloud compute tpus tpu-vm create ulmfit")
    assert ok.stdout.splitlines()[1].endswith("--quiet")
    refused = subprocess.run([sys.executable, "-m", "launch.tpu_vm", "--zone=z", "--dry_run",
                              "create"], capture_output=True, text=True)
    assert refused.returncode == 2 and "--project is required" in refused.stderr


def test_gpu_smoke_says_no_gpu_on_a_cpu_machine():
    result = subprocess.run([sys.executable, "-m", "launch.local_gpu_smoke"],
                            capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "error: no GPU visible" in result.stderr


def test_pipeline_and_training_on_a_non_local_filesystem(tmp_path):
    """Everything goes through tf.io.gfile: TF's in-memory ram:// filesystem stands in for gs://."""
    from trainer.lm_training import train_lm
    tf.io.gfile.makedirs("ram://launch_test/corpus")
    tf.io.gfile.copy(write_corpus(tmp_path / "c.txt", 240), "ram://launch_test/corpus/c.txt")
    with gin.unlock_config():
        gin.parse_config([
            "train_lm.data_dir = 'ram://launch_test/data'",
            "train_lm.build_input = 'ram://launch_test/corpus/c.txt'",
            "BuildSettings.vocab_size = 80", "BuildSettings.valid_fraction = 0.2",
            "train_lm.batch_size = 4", "train_lm.bptt = 10", "train_lm.max_steps = 3",
            "train_lm.eval_batch_size = 4", "AWDLSTMLanguageModel.emb_size = 8",
            "AWDLSTMLanguageModel.hidden_size = 8"])
    try:
        metrics = train_lm("ram://launch_test/model")
    finally:
        gin.clear_config()
    assert metrics["step"] == 3
    assert "manifest.json" in tf.io.gfile.listdir("ram://launch_test/data")
    assert tf.train.latest_checkpoint("ram://launch_test/model").endswith("ckpt-3")
    assert tf.io.gfile.listdir("ram://launch_test/model/train")  # TensorBoard events
