"""Installs this checkout on a Cloud TPU VM and keeps the VM's TPU build of TensorFlow.

  cd tf2-ulmfit && python3 -m launch.tpu_install      (what `launch.tpu_vm setup` runs)

`pip install -e .` cannot do this: tensorflow-text requires the *generic* `tensorflow`
distribution, so pip would install it over the image's `tensorflow-tpu` (a build without the
TPU runtime's entry points). Instead:
  1. the project itself, without dependencies;
  2. the TPU build, only if the environment has none (tensorflow-tpu and the libtpu it goes
     with, the project's `[tpu]` extra); a TPU build the image carries is kept as it is;
  3. tensorflow-text for that TensorFlow's minor version, without dependencies;
  4. every other requirement of the project, as its own metadata lists them;
and last, a check that no generic `tensorflow` came in on the way.

Runs before anything is installed, so it uses the standard library only.
"""
import importlib.metadata as metadata
import os
import re
import subprocess
import sys

PROJECT = "tf2-ulmfit"
_TF_PACKAGES = ("tensorflow", "tensorflow-text", "tensorflow-tpu", "libtpu")


class InstallError(Exception):
    pass


def _name(requirement):
    """A requirement's distribution name, normalized (PEP 503)."""
    return re.sub(r"[-_.]+", "-", re.match(r"\s*([A-Za-z0-9._-]+)", requirement)[1]).lower()


def _version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _minor(version):
    return tuple(int(part) for part in version.split(".")[:2])


def _tpu_extra(requirements):
    """The `[tpu]` extra's requirements, without their markers."""
    return [r.split(";")[0].strip() for r in requirements
            if re.search(r"""extra\s*==\s*["']tpu["']""", r)]


def supported_minors(requirements):
    """(lowest, highest exclusive) TF minor versions of the project's `tensorflow` requirement."""
    [spec] = [r for r in requirements if _name(r) == "tensorflow" and "extra" not in r]
    low, high = re.search(r">=\s*([\d.]+)", spec)[1], re.search(r"<\s*([\d.]+)", spec)[1]
    return _minor(low), _minor(high)


def plan(requirements, installed):
    """The pip argument lists of steps 2-4.

    `requirements`: the project's Requires-Dist strings; `installed`: {name: version} of the
    TensorFlow distributions present (None when absent)."""
    low, high = supported_minors(requirements)
    if installed.get("tensorflow"):
        raise InstallError(
            f"this environment has the generic tensorflow {installed['tensorflow']}, not a TPU "
            "build: create the TPU VM with a TensorFlow runtime image (launch.tpu_vm's default "
            "--runtime_version), or `pip uninstall tensorflow` and run this again.")
    steps = []
    tf_version = installed.get("tensorflow-tpu")
    if tf_version is None:
        tpu_stack = [r for r in _tpu_extra(requirements) if _name(r) in _TF_PACKAGES]
        steps.append(["install", *tpu_stack])
        [pin] = [r for r in tpu_stack if _name(r) == "tensorflow-tpu"]
        tf_version = pin.split("==")[1]
    elif not low <= _minor(tf_version) < high:
        raise InstallError(
            f"the TPU VM has tensorflow-tpu {tf_version}; this project supports TensorFlow "
            f"{low[0]}.{low[1]} to {high[0]}.{high[1] - 1}: recreate the VM with "
            "launch.tpu_vm's default --runtime_version.")
    major, minor = _minor(tf_version)
    steps.append(["install", "--no-deps", f"tensorflow-text>={major}.{minor},<{major}.{minor + 1}"])
    base = [r for r in requirements if ";" not in r]
    rest = [r for r in base + _tpu_extra(requirements) if _name(r) not in _TF_PACKAGES]
    steps.append(["install", *rest])
    return steps


def _pip(*args):
    command = [sys.executable, "-m", "pip", *args]
    print("$", " ".join(command), flush=True)
    if subprocess.run(command).returncode:
        raise InstallError(f"`{' '.join(command)}` failed (its output is above); fix what it "
                           "says and run `python3 -m launch.tpu_install` again.")


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    _pip("install", "--no-deps", "-e", root)
    requirements = metadata.requires(PROJECT) or []
    for step in plan(requirements, {name: _version(name) for name in _TF_PACKAGES}):
        _pip(*step)
    if _version("tensorflow"):
        raise InstallError("a dependency installed the generic tensorflow over the TPU build: "
                           "`pip uninstall -y tensorflow tensorflow-tpu`, then run "
                           "`python3 -m launch.tpu_install` again.")
    print(f"tensorflow-tpu {_version('tensorflow-tpu')}, libtpu {_version('libtpu')}, "
          f"tensorflow-text {_version('tensorflow-text')}: {PROJECT} installed.")


if __name__ == "__main__":
    try:
        main()
    except InstallError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
