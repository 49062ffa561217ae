"""trainer.runtime.compilation_cache: XLA executables kept on disk for the next run; damaged ones
go."""
import os
import subprocess
import sys

import pytest

from common.errors import UserError
from trainer.runtime.compilation_cache import ENV, check_compilation_cache

_KERNEL = "tf.function(lambda x: tf.tanh(x) @ tf.transpose(x), jit_compile=True)"
# The command line's whole path: trainer.main imported, absl's app.run, gin, job().
_SCRIPT = f"""
import sys
from absl import flags
import gin, tensorflow as tf
from common.errors import run_tool
from trainer import main

@gin.configurable
def compiled(model_dir, strategy):
    tf.io.gfile.makedirs(model_dir)
    return {{"result": float(tf.reduce_sum({_KERNEL}(tf.ones([8, 4]))))}}

main.define_gin_flags()
flags.DEFINE_string("model_dir", None, "")
run_tool(main.main)
"""
_RESULT = '"result": 194.968'  # 64 entries of 4 tanh(1)


def _process(cache, tmp_path, **env):
    """One process that XLA-compiles a kernel as trainer.main's job, run to its end."""
    return subprocess.run(
        [sys.executable, "-c", _SCRIPT, "--gin_param=job.trainer=@compiled",
         f"--model_dir={tmp_path / 'run'}"], capture_output=True, text=True,
        env={**os.environ, "TF_XLA_FLAGS": "", "TF_CPP_MIN_LOG_LEVEL": "0",
             "TF_CPP_VMODULE": "device_executable_persistor=1", ENV: cache, **env})


def _run(cache, tmp_path, **env):
    """(stdout+stderr) of a _process that must succeed."""
    out = _process(cache, tmp_path, **env)
    assert out.returncode == 0 and _RESULT in out.stdout, out.stdout + out.stderr
    return out.stdout + out.stderr


def _entries(cache):
    return sorted(name for name in os.listdir(cache) if name.endswith(".pb"))


@pytest.mark.heavy
def test_a_later_run_loads_the_kernel_and_a_damaged_entry_is_named_and_compiled_again(
        tmp_path):
    cache = str(tmp_path / "xla")
    assert "Loading cached entry" not in _run(cache, tmp_path)
    [entry] = _entries(cache)
    assert "Loading cached entry" in _run(cache, tmp_path)
    assert _entries(cache) == [entry]

    path = os.path.join(cache, entry)
    with open(path, "rb") as f:
        whole = f.read()
    with open(path, "wb") as f:  # cut short, as by a full disk
        f.write(whole[:len(whole) // 2])
    # TF alone fails on it, naming no file:
    untreated = subprocess.run(
        [sys.executable, "-c", f"import tensorflow as tf; print({_KERNEL}(tf.ones([8, 4])))"],
        capture_output=True, text=True,
        env={**os.environ, "TF_XLA_FLAGS": f"--tf_xla_persistent_cache_directory={cache}"})
    assert untreated.returncode != 0 and "Read less bytes than requested" in untreated.stderr
    # Through job: a warning names the file, the run goes on and writes the entry anew, and
    # the next run loads it.
    log = _run(cache, tmp_path)
    assert f"{path} is damaged; removed" in log and "Loading cached entry" not in log
    assert _entries(cache) == [entry] and os.path.getsize(path) == len(whole)
    assert "Loading cached entry" in _run(cache, tmp_path)


@pytest.mark.heavy
def test_a_cache_dir_the_user_set_in_tf_xla_flags_wins(tmp_path):
    theirs, ours = str(tmp_path / "theirs"), str(tmp_path / "ours")
    _run(ours, tmp_path, TF_XLA_FLAGS=f"--tf_xla_persistent_cache_directory={theirs}")
    assert len(_entries(theirs)) == 1 and not os.path.exists(ours)


@pytest.mark.heavy
def test_an_unusable_cache_dir_is_one_error_naming_the_variable_and_its_advice_works(
        tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    for directory, error in ((str(blocker / "xla"), "Not a directory; set a writable directory"),
                             ("gs://bucket/xla", "must be a local directory")):
        monkeypatch.setenv(ENV, directory)
        monkeypatch.setenv("TF_XLA_FLAGS", f"--tf_xla_persistent_cache_directory={directory}")
        with pytest.raises(UserError, match=f"{ENV}={directory}: .*{error}.*{ENV}= \\(empty\\)"):
            check_compilation_cache()
    # From the command line: one error line, exit status 1; then the advice, no cache.
    out = _process(str(blocker / "xla"), tmp_path)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith(f"error: {ENV}={blocker / 'xla'}: ")
    assert "Loading cached entry" not in _run("", tmp_path)
