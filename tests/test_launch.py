"""launch/: TPU VM commands against a stand-in gcloud, the TPU install plan, the pod's resolver
and chief, the GPU smoke test on a CPU machine, non-local paths."""
import importlib.metadata
import json
import os
import subprocess
import sys

import gin
import pytest
import tensorflow as tf

from conftest import train_tiny_lm, write_corpus
from launch import tpu_install
from launch.tpu_vm import TPU_TENSORFLOW, LaunchError, commands

FAKE_GCLOUD = os.path.join(os.path.dirname(__file__), "fake_gcloud")
SETTINGS = dict(project="proj", zone="us-central2-b", tpu="ulmfit", accelerator_type="v4-8",
                runtime_version=None, spot=False, data_dir="gs://b/data", model_dir="gs://b/run",
                input="builtin:pydocs", gin_file=["gin_configs/pretrain_awd_lstm.gin"],
                gin_param=["train_lm.epochs=2"])
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def gcloud(cloud, *args, execute=False):
    """Runs the stand-in gcloud with its cloud in `cloud`."""
    env = {**os.environ, "FAKE_GCLOUD_HOME": str(cloud), "FAKE_GCLOUD_EXEC": "1" if execute else ""}
    return subprocess.run([os.path.join(FAKE_GCLOUD, "gcloud"), *args], env=env,
                          capture_output=True, text=True)


def launch(cloud, *args):
    env = {**os.environ, "FAKE_GCLOUD_HOME": str(cloud),
           "PATH": FAKE_GCLOUD + os.pathsep + os.environ["PATH"]}
    return subprocess.run([sys.executable, "-m", "launch.tpu_vm", "--project=proj",
                           "--zone=us-central2-b", "--data_dir=gs://b/data",
                           "--model_dir=gs://b/run", *args], env=env, capture_output=True,
                          text=True, cwd=PROJECT_ROOT)


def calls(cloud):
    with open(cloud / "calls.jsonl") as f:
        return [json.loads(line) for line in f]


def test_the_stand_in_refuses_what_gcloud_refuses(tmp_path):
    """The stand-in is only worth its passes if it fails where gcloud does."""
    zone = "--zone=z"
    no_version = gcloud(tmp_path, "compute", "tpus", "tpu-vm", "create", "t", zone)
    assert no_version.returncode == 2 and "--version" in no_version.stderr
    assert gcloud(tmp_path, "compute", "tpus", "tpu-vm", "create", "t", zone, "--version=v",
                  "--accelerator-type=v4-32", "--workers=4").returncode == 2  # no such flag
    assert gcloud(tmp_path, "compute", "tpus", "tpu-vm", "ssh", "t", zone).returncode == 1  # no TPU
    assert gcloud(tmp_path, "compute", "tpus", "tpu-vm", "create", "t", zone, "--version=v",
                  "--accelerator-type=v4-32").returncode == 0
    (tmp_path / "src").mkdir()
    # The old setup's form: the TPU name as a positional is read as a local source.
    old_scp = gcloud(tmp_path, "compute", "tpus", "tpu-vm", "scp", "t", zone, "--worker=all",
                     "--recurse", str(tmp_path / "src"), "t:~/x")
    assert old_scp.returncode == 1 and "t: No such file or directory" in old_scp.stderr
    no_recurse = gcloud(tmp_path, "compute", "tpus", "tpu-vm", "scp", str(tmp_path / "src"),
                        "t:~/x", zone)
    assert no_recurse.returncode == 1 and "--recurse" in no_recurse.stderr
    assert gcloud(tmp_path, "compute", "tpus", "tpu-vm", "ssh", "t", zone,
                  "--worker=4").returncode == 1  # a v4-32 has workers 0-3
    assert gcloud(tmp_path, "compute", "tpus", "tpu-vm", "ssh", "t", zone, "--worker=0-3",
                  "--command=true").returncode == 0
    assert gcloud(tmp_path, "compute", "tpus", "tpu-vm", "ssh", "t", zone,
                  "--command=cd ~/missing && true").returncode == 1
    assert gcloud(tmp_path, "compute", "tpus", "tpu-vm", "delete", "t", zone,
                  "--quiet").returncode == 0
    assert gcloud(tmp_path, "compute", "tpus", "tpu-vm", "delete", "t", zone).returncode == 1


@pytest.mark.parametrize("accelerator_type, hosts, image", [
    ("v4-8", 1, f"tpu-vm-tf-{TPU_TENSORFLOW}-pjrt"),
    ("v4-32", 4, f"tpu-vm-tf-{TPU_TENSORFLOW}-pod-pjrt"),
    ("v5litepod-16", 4, f"tpu-vm-tf-{TPU_TENSORFLOW}-pod-pjrt")])
@pytest.mark.heavy
def test_every_action_is_accepted_by_gcloud(tmp_path, accelerator_type, hosts, image):
    """create, setup, build_data, train, logs and delete, as gcloud's grammar reads them: one
    process on worker 0, single host or pod, which holds the copied checkout."""
    done = launch(tmp_path, f"--accelerator_type={accelerator_type}", "--spot",
                  "create", "setup", "build_data", "train", "logs")
    assert done.returncode == 0, done.stderr
    [tpu] = [json.loads((tmp_path / "tpus" / "ulmfit.json").read_text())]
    assert (tpu["accelerator_type"], tpu["version"], tpu["hosts"], tpu["spot"]) == (
        accelerator_type, image, hosts, True)
    assert (tmp_path / "workers/ulmfit/0/tf2-ulmfit/launch/tpu_install.py").exists()
    create, scp, install, build, train, logs = calls(tmp_path)
    assert [c["verb"] for c in (create, scp, install, build, train, logs)] == [
        "create", "scp", "ssh", "ssh", "ssh", "ssh"]
    assert all(c["workers"] == [0] for c in (scp, install, build, train, logs))
    assert install["command"].endswith("python3 -m launch.tpu_install")
    assert "python3 -m trainer.main" in train["command"]
    pod_settings = ("TPU_NAME=ulmfit TPU_LOAD_LIBRARY=0 ", "make_strategy.tpu=")
    assert all((part in train["command"]) == (hosts > 1) for part in pod_settings)
    assert launch(tmp_path, "delete").returncode == 0
    assert not (tmp_path / "tpus" / "ulmfit.json").exists()


@pytest.mark.heavy
def test_a_wrong_accelerator_type_or_path_is_refused_before_gcloud_runs(tmp_path):
    refused = launch(tmp_path, "--accelerator_type=v4_32", "create")
    assert refused.returncode == 2
    assert "--accelerator_type='v4_32' is not a TPU type" in refused.stderr
    assert not (tmp_path / "calls.jsonl").exists()
    with pytest.raises(LaunchError, match="--model_dir must be a gs:// path"):
        commands("train", {**SETTINGS, "model_dir": "/tmp/run"})
    with pytest.raises(LaunchError, match="--project is required"):
        commands("create", {**SETTINGS, "project": None})


def test_the_train_command_runs_the_gin_files_given(tmp_path):
    [train] = commands("train", {**SETTINGS, "accelerator_type": "v4-32"})
    command = train[train.index("--worker=0") + 1]
    assert ("--gin_file=gin_configs/pretrain_awd_lstm.gin --gin_file=gin_configs/tpu.gin "
            in command)
    assert "--gin_param=train_lm.epochs=2 " in command and "--model_dir=gs://b/run" in command


def test_the_tpu_pins_agree():
    """setup.py's [tpu] extra pins the TPU build the launcher's runtime image carries."""
    requirements = importlib.metadata.requires("tf2-ulmfit")
    assert f'tensorflow-tpu=={TPU_TENSORFLOW}; extra == "tpu"' in requirements


def test_tpu_install_keeps_the_images_tensorflow():
    """On a TPU image: no TF package installed but tensorflow-text, without dependencies (it
    would pull the generic tensorflow), for the image's TF minor version."""
    requirements = importlib.metadata.requires("tf2-ulmfit")
    image = {"tensorflow": None, "tensorflow-tpu": TPU_TENSORFLOW, "libtpu": "0.0.14",
             "tensorflow-text": None}
    text, rest = tpu_install.plan(requirements, image)
    assert text == ["install", "--no-deps", "tensorflow-text>=2.20,<2.21"]
    names = {tpu_install._name(r) for r in rest[1:]}
    assert {"gin-config", "sentencepiece", "cloud-tpu-client"} <= names
    assert not names & {"tensorflow", "tensorflow-text", "tensorflow-tpu", "libtpu"}
    # No TF at all: the [tpu] extra's build and libtpu first.
    tpu, text, _ = tpu_install.plan(requirements, {**image, "tensorflow-tpu": None})
    assert tpu[0] == "install" and f"tensorflow-tpu=={TPU_TENSORFLOW}" in tpu
    assert any(r.startswith("libtpu==") for r in tpu)
    with pytest.raises(tpu_install.InstallError, match="generic tensorflow 2.21.0"):
        tpu_install.plan(requirements, {**image, "tensorflow": "2.21.0"})
    with pytest.raises(tpu_install.InstallError, match="tensorflow-tpu 2.19.1"):
        tpu_install.plan(requirements, {**image, "tensorflow-tpu": "2.19.1"})


@pytest.mark.heavy
def test_gpu_smoke_says_no_gpu_on_a_cpu_machine(tmp_path, pretrained_lm):
    result = subprocess.run([sys.executable, "-m", "launch.local_gpu_smoke",
                             f"--model_dir={tmp_path}"], capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "error: no GPU visible" in result.stderr
    # A directory that holds a run (it used to end in a KeyError once the run had finished).
    trained = subprocess.run([sys.executable, "-m", "launch.local_gpu_smoke",
                              f"--model_dir={pretrained_lm[0]}"], capture_output=True, text=True)
    assert trained.returncode == 1 and "Traceback" not in trained.stderr
    [line] = [x for x in trained.stderr.splitlines() if x.startswith("error: ")]
    assert f"--model_dir={pretrained_lm[0]} holds a run already" in line


def test_pipeline_and_training_on_a_non_local_filesystem(tmp_path):
    """Everything goes through tf.io.gfile: TF's in-memory ram:// filesystem stands in for gs://."""
    tf.io.gfile.makedirs("ram://launch_test/corpus")
    tf.io.gfile.copy(write_corpus(tmp_path / "c.txt", 240), "ram://launch_test/corpus/c.txt")
    metrics = train_tiny_lm("ram://launch_test/data", "ram://launch_test/model",
                            "ram://launch_test/corpus/c.txt", vocab_size=80, steps=3)
    assert metrics["step"] == 3
    assert "manifest.json" in tf.io.gfile.listdir("ram://launch_test/data")
    assert tf.train.latest_checkpoint("ram://launch_test/model").endswith("ckpt-3")
    assert tf.io.gfile.listdir("ram://launch_test/model/train")  # TensorBoard events


def test_the_gpu_config_sets_what_a_gpu_host_needs():
    from trainer import configurables  # registers what the configs bind
    del configurables
    gin.add_config_file_search_path(PROJECT_ROOT)  # the configs' includes
    with gin.unlock_config():
        gin.parse_config_files_and_bindings(
            [os.path.join(PROJECT_ROOT, "gin_configs/pretrain_awd_lstm.gin"),
             os.path.join(PROJECT_ROOT, "gin_configs/gpu.gin")], [])
    try:
        assert gin.query_parameter("train_lm.mixed_precision") == "mixed_float16"
        assert gin.query_parameter("train_lm.batch_per_replica") is True
        assert gin.query_parameter("make_strategy.kind") == "mirrored"
    finally:
        gin.clear_config()
