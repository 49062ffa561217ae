"""Pretraining on a Cloud TPU VM, one step per action, in order:

  python -m launch.tpu_vm --project=P --zone=us-central2-b --tpu=ulmfit --accelerator_type=v4-32 \
      --data_dir=gs://BUCKET/pydocs --model_dir=gs://BUCKET/runs/1 \
      create setup build_data train logs delete [--dry_run]

  create      gcloud compute tpus tpu-vm create (accelerator type, runtime version)
  setup       copy this checkout to every worker and pip install it there
  build_data  on worker 0: python -m data_pipeline.build --input=... --output_dir=DATA_DIR
  train       on every worker, in the background: python -m trainer.main with gin_configs/tpu.gin
  logs        stream worker 0's training log (Ctrl-C stops watching, not training)
  delete      delete the TPU VM

`--dry_run` prints every command instead of running it. See docs/launch.md for the walk-through.
"""
import os
import shlex
import subprocess

from absl import app, flags

from data_pipeline.errors import UserError, run_tool

ACTIONS = ("create", "setup", "build_data", "train", "logs", "delete")
_REMOTE_DIR = "tf2-ulmfit"           # the checkout's place in each worker's home directory
_LOG = "ulmfit-train.log"
_PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FLAGS = flags.FLAGS
flags.DEFINE_string("project", None, "GCP project that owns the TPU.")
flags.DEFINE_string("zone", None, "Zone of the TPU, e.g. us-central2-b.")
flags.DEFINE_string("tpu", "ulmfit", "Name of the TPU VM.")
flags.DEFINE_string("accelerator_type", "v4-8", "e.g. v4-8, v4-32, v5litepod-16.")
flags.DEFINE_string("runtime_version", "tpu-vm-tf-2.21.0-pjrt",
                    "TPU VM image; `gcloud compute tpus versions list` shows the zone's.")
flags.DEFINE_string("data_dir", None, "gs:// data directory (manifest.json), read by all workers.")
flags.DEFINE_string("model_dir", None, "gs:// directory for checkpoints and TensorBoard logs.")
flags.DEFINE_string("input", "builtin:pydocs", "build_data: the corpus (see data_pipeline.build).")
flags.DEFINE_multi_string("gin_file", ["gin_configs/pretrain_awd_lstm.gin"],
                          "Model/recipe configs; gin_configs/tpu.gin is always added last.")
flags.DEFINE_multi_string("gin_param", [], "Extra gin bindings for train.")
flags.DEFINE_string("pip_install", "-e .", "What `setup` runs after `pip install` in the checkout.")
flags.DEFINE_bool("dry_run", False, "Print the commands instead of running them.")


class LaunchError(app.UsageError):
    pass


def _tpu_vm(verb, settings, *args):
    return ["gcloud", "compute", "tpus", "tpu-vm", verb, settings["tpu"],
            f"--project={settings['project']}", f"--zone={settings['zone']}", *args]


def _on_workers(settings, workers, command):
    return _tpu_vm("ssh", settings, f"--worker={workers}", f"--command={command}")


def commands(action, settings):
    """The gcloud commands (argument lists) of one action; `settings` holds the flag values."""
    for required, example in (("project", "my-project"), ("zone", "us-central2-b")):
        if not settings.get(required):
            raise LaunchError(f"--{required} is required: the GCP {required} of the TPU VM, "
                              f"e.g. --{required}={example}.")
    if action in ("build_data", "train") and not (settings.get("data_dir") or "").startswith("gs://"):
        raise LaunchError("--data_dir must be a gs:// path: every TPU worker reads it.")
    if action == "train" and not (settings.get("model_dir") or "").startswith("gs://"):
        raise LaunchError("--model_dir must be a gs:// path: checkpoints must outlive the VM.")
    in_checkout = f"cd ~/{_REMOTE_DIR} && "
    if action == "create":
        return [_tpu_vm("create", settings, f"--accelerator-type={settings['accelerator_type']}",
                        f"--version={settings['runtime_version']}")]
    if action == "setup":
        return [_tpu_vm("scp", settings, "--worker=all", "--recurse", settings["source"],
                        f"{settings['tpu']}:~/{_REMOTE_DIR}"),
                _on_workers(settings, "all",
                            in_checkout + f"pip install {settings['pip_install']}")]
    if action == "build_data":
        build = ["python", "-m", "data_pipeline.build", f"--input={settings['input']}",
                 f"--output_dir={settings['data_dir']}"]
        return [_on_workers(settings, "0", in_checkout + shlex.join(build))]
    if action == "train":
        train = ["python", "-m", "trainer.main",
                 *[f"--gin_file={f}" for f in [*settings["gin_file"], "gin_configs/tpu.gin"]],
                 f"--gin_param=train_lm.data_dir='{settings['data_dir']}'",
                 *[f"--gin_param={p}" for p in settings["gin_param"]],
                 f"--model_dir={settings['model_dir']}"]
        return [_on_workers(settings, "all", in_checkout
                            + f"nohup {shlex.join(train)} > ~/{_LOG} 2>&1 &")]
    if action == "logs":
        return [_on_workers(settings, "0", f"tail -n +1 -f ~/{_LOG}")]
    if action == "delete":
        return [_tpu_vm("delete", settings, "--quiet")]
    raise LaunchError(f"unknown action {action!r}; actions: {' '.join(ACTIONS)}.")


def main(argv):
    actions = argv[1:]
    if not actions:
        raise app.UsageError(f"name one or more actions: {' '.join(ACTIONS)}")
    settings = {name: FLAGS[name].value for name in FLAGS
                if name in ("project", "zone", "tpu", "accelerator_type", "runtime_version",
                            "data_dir", "model_dir", "input", "gin_file", "gin_param",
                            "pip_install")}
    settings["source"] = _PROJECT_ROOT
    plan = [command for action in actions for command in commands(action, settings)]
    for command in plan:
        print("$", shlex.join(command), flush=True)
        if not FLAGS.dry_run and subprocess.run(command).returncode:
            raise UserError(f"`{shlex.join(command)}` failed (its output is above); fix what it "
                            "says and run the same actions again.")


if __name__ == "__main__":
    run_tool(main)
