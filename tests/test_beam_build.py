"""The build on Apache Beam (DirectRunner) writes the documents a local build writes."""
import collections
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from conftest import write_corpus
from common.errors import SettingError
from data_pipeline.build import BuildSettings, build, repair
from data_pipeline.lm_dataset import lm_dataset
from data_pipeline.manifest import load_manifest, verify_shards
from data_pipeline.shards import parse_ids

pytestmark = pytest.mark.heavy
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _documents(manifest, split):
    """A split's documents as a multiset of id tuples."""
    files = [manifest.shard_path(s) for s in manifest.split(split).shards]
    return collections.Counter(tuple(ids.numpy().tolist())
                               for ids in tf.data.TFRecordDataset(files).map(parse_ids))


@pytest.fixture
def two_files(tmp_path):
    return ",".join(write_corpus(tmp_path / f"part{i}.txt", paragraphs=400, seed=i)
                    for i in range(2))


def test_beam_build_writes_the_documents_of_a_local_build(tmp_path, two_files):
    settings = BuildSettings(input=two_files, vocab_size=100, shard_mb=0.01)
    local = build(str(tmp_path / "local"), settings)
    beam = build(str(tmp_path / "beam"), settings, runner="DirectRunner")
    assert beam.spm_sha256 == local.spm_sha256 and beam.vocab_size == local.vocab_size
    for split in ("train", "valid", "test"):
        ours, theirs = beam.split(split), local.split(split)
        assert (ours.documents, ours.tokens, len(ours.shards)) == (
            theirs.documents, theirs.tokens, len(theirs.shards))
        assert _documents(beam, split) == _documents(local, split)
    assert len(beam.split("train").shards) > 2
    assert sorted(os.listdir(beam.directory)) == sorted(os.listdir(local.directory))
    verify_shards(beam)
    assert load_manifest(beam.directory) == beam
    assert len(list(lm_dataset(beam, "train", 4, 10))) > 10
    # Complete: a rerun does nothing. A shard cannot be re-encoded alone (Beam's layout).
    assert build(beam.directory, settings, runner="DirectRunner") == beam
    with pytest.raises(SettingError, match="built on Apache Beam"):
        repair(beam.directory)


def test_the_command_passes_beam_options_through_and_refuses_them_without_a_runner(
        tmp_path, two_files):
    command = [sys.executable, "-m", "data_pipeline.build", f"--input={two_files}",
               "--vocab_size=100", "--shard_mb=0.01", "--direct_num_workers=1"]
    refused = subprocess.run([*command, f"--output_dir={tmp_path / 'a'}"], cwd=ROOT,
                             capture_output=True, text=True)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1] == (
        "error: unknown flag(s) --direct_num_workers=1; Apache Beam pipeline options go with "
        "--runner (run with --helpshort for the flags)")
    built = subprocess.run([*command, f"--output_dir={tmp_path / 'b'}", "--runner=DirectRunner"],
                           cwd=ROOT, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-2000:]
    assert "train" in built.stdout and load_manifest(str(tmp_path / "b")).split("train").tokens
