"""Pretraining on a Cloud TPU VM or a multi-host slice (pod), one step per action, in order:

  python -m launch.tpu_vm --project=P --zone=us-central2-b --tpu=ulmfit --accelerator_type=v4-32 \
      --data_dir=gs://BUCKET/pydocs --model_dir=gs://BUCKET/runs/1 \
      create setup build_data train logs delete [--dry_run]

  create      gcloud compute tpus tpu-vm create, with the TensorFlow runtime image for the slice
  setup       copy this checkout to worker 0 and install it there (launch/tpu_install.py keeps
              the image's TPU build of TensorFlow)
  build_data  on worker 0: python3 -m data_pipeline.build --input=... --output_dir=DATA_DIR
  train       on worker 0, in the background: python3 -m trainer.main with gin_configs/tpu.gin
  logs        stream worker 0's training log (Ctrl-C stops watching, not training)
  delete      delete the TPU VM

Single host or pod follows from --accelerator_type. Either way one process trains, on worker 0,
as Google's TensorFlow recipe runs it: on a single host it drives the local TPU; on a pod slice
(runtime image `...-pod-pjrt`, whose hosts serve their TPUs to the slice) it addresses the whole
slice by the TPU's name, with TPU_NAME set and TPU_LOAD_LIBRARY=0 so that it leaves worker 0's
chips to that host's TPU server. So there is one writer of checkpoints and summaries.

`--dry_run` prints every command instead of running it. See docs/launch.md for the walk-through.
"""
import os
import re
import shlex
import subprocess

from absl import app, flags

from common.errors import UserError, run_tool

ACTIONS = ("create", "setup", "build_data", "train", "logs", "delete")
# The TPU build of TensorFlow that the runtime image carries and setup keeps (the `[tpu]` extra
# of setup.py pins the same).
TPU_TENSORFLOW = "2.20.0"
_REMOTE_DIR = "tf2-ulmfit"           # the checkout's place in worker 0's home directory
_LOG = "ulmfit-train.log"
_PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# v2, v3, v4 and v5p sizes count TensorCores (8 per host); v5e and v6e sizes count chips (8 on a
# single-host slice). Either way a size above 8 spans several hosts.
_ACCELERATOR = re.compile(r"^v(2|3|4|5p|5litepod|6e)-(\d+)$")

FLAGS = flags.FLAGS
flags.DEFINE_string("project", None, "GCP project that owns the TPU.")
flags.DEFINE_string("zone", None, "Zone of the TPU, e.g. us-central2-b.")
flags.DEFINE_string("tpu", "ulmfit", "Name of the TPU VM.")
flags.DEFINE_string("accelerator_type", "v4-8", "e.g. v4-8 (one host), v4-32 (a 4-host pod "
                    "slice), v5litepod-16.")
flags.DEFINE_string("runtime_version", None,
                    f"TPU VM image; default tpu-vm-tf-{TPU_TENSORFLOW}-pjrt, or "
                    f"tpu-vm-tf-{TPU_TENSORFLOW}-pod-pjrt for a multi-host slice.")
flags.DEFINE_bool("spot", False, "Create a Spot TPU VM (cheaper; may be preempted).")
flags.DEFINE_string("data_dir", None, "gs:// data directory (manifest.json).")
flags.DEFINE_string("model_dir", None, "gs:// directory for checkpoints and TensorBoard logs.")
flags.DEFINE_string("input", "builtin:pydocs", "build_data: the corpus (see data_pipeline.build).")
flags.DEFINE_multi_string("gin_file", ["gin_configs/pretrain_awd_lstm.gin"],
                          "Model/recipe configs; gin_configs/tpu.gin is always added last.")
flags.DEFINE_multi_string("gin_param", [], "Extra gin bindings for train.")
flags.DEFINE_bool("dry_run", False, "Print the commands instead of running them.")


class LaunchError(app.UsageError):
    pass


def is_pod(accelerator_type):
    """Whether the slice spans several hosts."""
    match = _ACCELERATOR.match(accelerator_type or "")
    if not match:
        raise LaunchError(f"--accelerator_type={accelerator_type!r} is not a TPU type; e.g. "
                          "v4-8, v4-32, v5litepod-16 (`gcloud compute tpus accelerator-types "
                          "list --zone=...` shows a zone's).")
    return int(match[2]) > 8


def runtime_version(settings):
    pod = "-pod" if is_pod(settings["accelerator_type"]) else ""
    return settings.get("runtime_version") or f"tpu-vm-tf-{TPU_TENSORFLOW}{pod}-pjrt"


def _tpu_vm(verb, settings, *args):
    return ["gcloud", "compute", "tpus", "tpu-vm", verb, *args,
            f"--project={settings['project']}", f"--zone={settings['zone']}"]


def _on_worker_0(settings, command):
    return _tpu_vm("ssh", settings, settings["tpu"], "--worker=0",
                   f"--command=cd ~/{_REMOTE_DIR} && {command}")


def _train_command(settings):
    """trainer.main as Google's TensorFlow recipe runs it on a single host or a pod slice."""
    gin_params = [f"train_lm.data_dir='{settings['data_dir']}'", *settings["gin_param"]]
    if is_pod(settings["accelerator_type"]):
        environment = f"TPU_NAME={settings['tpu']} TPU_LOAD_LIBRARY=0 "
        gin_params.append(f"make_strategy.tpu='{settings['tpu']}'")
    else:  # the PJRT runtime image's single-host settings
        environment = ("NEXT_PLUGGABLE_DEVICE_USE_C_API=true "
                       "TF_PLUGGABLE_DEVICE_LIBRARY_PATH=/lib/libtpu.so ")
    train = ["python3", "-m", "trainer.main",
             *[f"--gin_file={f}" for f in [*settings["gin_file"], "gin_configs/tpu.gin"]],
             *[f"--gin_param={p}" for p in gin_params], f"--model_dir={settings['model_dir']}"]
    return f"{environment}nohup {shlex.join(train)} > ~/{_LOG} 2>&1 &"


def commands(action, settings):
    """The gcloud commands (argument lists) of one action; `settings` holds the flag values."""
    for required, example in (("project", "my-project"), ("zone", "us-central2-b")):
        if not settings.get(required):
            raise LaunchError(f"--{required} is required: the GCP {required} of the TPU VM, "
                              f"e.g. --{required}={example}.")
    is_pod(settings["accelerator_type"])  # refuses a malformed type before anything runs
    data_dir = settings.get("data_dir") or ""
    if action in ("build_data", "train") and not data_dir.startswith("gs://"):
        raise LaunchError("--data_dir must be a gs:// path: the TPU hosts read it.")
    if action == "train" and not (settings.get("model_dir") or "").startswith("gs://"):
        raise LaunchError("--model_dir must be a gs:// path: checkpoints must outlive the VM.")
    if action == "create":
        return [_tpu_vm("create", settings, settings["tpu"],
                        f"--accelerator-type={settings['accelerator_type']}",
                        f"--version={runtime_version(settings)}",
                        *(["--spot"] if settings.get("spot") else []))]
    if action == "setup":
        return [_tpu_vm("scp", settings, "--worker=0", "--recurse", settings["source"],
                        f"{settings['tpu']}:~/{_REMOTE_DIR}"),
                _on_worker_0(settings, "python3 -m launch.tpu_install")]
    if action == "build_data":
        return [_on_worker_0(settings, shlex.join([
            "python3", "-m", "data_pipeline.build", f"--input={settings['input']}",
            f"--output_dir={settings['data_dir']}"]))]
    if action == "train":
        return [_on_worker_0(settings, _train_command(settings))]
    if action == "logs":
        return [_tpu_vm("ssh", settings, settings["tpu"], "--worker=0",
                        f"--command=tail -n +1 -f ~/{_LOG}")]
    if action == "delete":
        return [_tpu_vm("delete", settings, settings["tpu"], "--quiet")]
    raise LaunchError(f"unknown action {action!r}; actions: {' '.join(ACTIONS)}.")


def main(argv):
    actions = argv[1:]
    if not actions:
        raise app.UsageError(f"name one or more actions: {' '.join(ACTIONS)}")
    settings = {name: FLAGS[name].value for name in FLAGS
                if name in ("project", "zone", "tpu", "accelerator_type", "runtime_version",
                            "spot", "data_dir", "model_dir", "input", "gin_file", "gin_param")}
    settings["source"] = _PROJECT_ROOT
    plan = [command for action in actions for command in commands(action, settings)]
    for command in plan:
        print("$", shlex.join(command), flush=True)
        if not FLAGS.dry_run and subprocess.run(command).returncode:
            raise UserError(f"`{shlex.join(command)}` failed (its output is above); fix what it "
                            "says and run the same actions again.")


if __name__ == "__main__":
    run_tool(main)
