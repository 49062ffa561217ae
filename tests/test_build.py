"""data_pipeline.build: SentencePiece, shards, manifest, resumability and errors."""
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from conftest import sigkill_when, write_corpus
from common.errors import CorpusError
from common.tokenizer import load_sentencepiece
from data_pipeline.build import BuildSettings, build
from data_pipeline.manifest import load_manifest, verify_shards
from data_pipeline.shards import parse_ids, read_shard_info
from data_pipeline.sources import read_documents

SMALL = dict(vocab_size=120, valid_fraction=0.1, test_fraction=0.1)


@pytest.fixture
def built(tmp_path, corpus_file):
    settings = BuildSettings(input=corpus_file, shard_mb=0.01, **SMALL)
    return build(str(tmp_path / "data"), settings), settings


def test_round_trip_and_special_ids(built):
    manifest, _ = built
    assert manifest.special_ids == {"unk": 0, "pad": 1, "bos": 2, "eos": 3}
    sp = load_sentencepiece(manifest.spm_model_path)
    assert (sp.unk_id(), sp.pad_id(), sp.bos_id(), sp.eos_id()) == (0, 1, 2, 3)
    text = "the model reads tokens and predicts the next one"
    assert sp.decode(sp.encode(text)) == text
    shard = manifest.split("train").shards[0]
    for record in tf.data.TFRecordDataset(manifest.shard_path(shard)).take(20):
        ids = parse_ids(record).numpy().tolist()
        assert ids[0] == 2 and ids[-1] == 3 and 1 not in ids
        assert sp.decode(ids[1:-1]).startswith("paragraph ")


def test_shard_counts_match_manifest(built):
    manifest, _ = built
    assert len(manifest.split("train").shards) > 1
    for split in manifest.splits.values():
        for shard in split.shards:
            assert read_shard_info(manifest.shard_path(shard)) == shard
        assert split.documents == sum(s.records for s in split.shards)
        assert split.tokens == sum(s.tokens for s in split.shards)
    assert sum(s.documents for s in manifest.splits.values()) == 600
    verify_shards(manifest)


def test_rerun_is_a_noop_and_refuses_other_settings(built, tmp_path):
    manifest, settings = built
    before = {n: os.stat(os.path.join(manifest.directory, n)).st_mtime_ns
              for n in os.listdir(manifest.directory)}
    assert build(manifest.directory, settings) == manifest
    after = {n: os.stat(os.path.join(manifest.directory, n)).st_mtime_ns
             for n in os.listdir(manifest.directory)}
    assert after == before
    with pytest.raises(CorpusError, match="vocab_size: built with 120, asked for 100"):
        build(manifest.directory, BuildSettings(**{**settings.__dict__, "vocab_size": 100}))
    # Another shard size lays out the same documents: the complete directory serves as it is.
    assert build(manifest.directory, BuildSettings(**{**settings.__dict__, "shard_mb": 4})
                 ) == manifest


def test_a_build_goes_on_where_it_began_on_one_host_or_on_beam(built):
    """Beam and this host place documents in shards differently: a build begun one way is not
    finished the other (the error names both fixes; the first is followed here)."""
    manifest, settings = built
    os.remove(manifest.path)  # the shards stay: an interrupted build, begun on this host
    with pytest.raises(CorpusError, match=r"was begun on one host \(no --runner\)\. Rerun it "
                       r"so, or delete the directory to build it on Apache Beam"):
        build(manifest.directory, settings, runner="DirectRunner")
    assert build(manifest.directory, settings) == manifest


def test_an_unknown_beam_runner_is_refused_before_anything_is_read(tmp_path, corpus_file):
    with pytest.raises(CorpusError, match="--runner=DirectRuner: Unexpected pipeline runner: "
                       "DirectRuner. Valid values are .*DirectRunner"):
        build(str(tmp_path / "data"), BuildSettings(input=corpus_file, **SMALL),
              runner="DirectRuner")
    assert not os.path.exists(tmp_path / "data")


@pytest.mark.heavy
def test_killed_build_leaves_nothing_claimed_and_rerun_completes(tmp_path):
    corpus = write_corpus(tmp_path / "big.txt", paragraphs=6000, seed=1)
    out = tmp_path / "data"
    cmd = [sys.executable, "-m", "data_pipeline.build", f"--input={corpus}",
           f"--output_dir={out}", "--shard_mb=0.002", "--vocab_size=120"]
    sigkill_when(cmd, lambda _: out.exists() and any(n.startswith("train-00003")
                                                   for n in os.listdir(out)), timeout=120)
    names = os.listdir(out)
    assert "manifest.json" not in names
    complete = [n for n in names if n.endswith(".tfrecord") and not n.startswith(".")]
    for name in complete:  # every shard under its final name is whole and readable
        read_shard_info(str(out / name))
    subprocess.run(cmd, check=True, capture_output=True)
    manifest = load_manifest(str(out))
    verify_shards(manifest)
    assert 4 <= len(complete) < sum(len(s.shards) for s in manifest.splits.values())
    assert not [n for n in os.listdir(out) if n.startswith(".tmp-")]
    clean = build(str(tmp_path / "clean"), BuildSettings(input=corpus, shard_mb=0.002,
                                                         vocab_size=120))
    assert [s.sha256 for s in manifest.split("train").shards] == \
        [s.sha256 for s in clean.split("train").shards]


def test_corrupt_and_truncated_shards_are_named(built):
    manifest, _ = built
    shard = manifest.split("train").shards[1]
    path = manifest.shard_path(shard)
    with open(path, "r+b") as f:  # same size, one byte flipped: only the checksum sees it
        f.seek(shard.bytes // 2)
        byte = f.read(1)
        f.seek(shard.bytes // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(CorpusError, match=f"{shard.file}: sha256 differs"):
        verify_shards(manifest)
    with open(path, "r+b") as f:
        f.truncate(shard.bytes - 10)
    with pytest.raises(CorpusError, match=f"{shard.file}: {shard.bytes - 10} bytes"):
        verify_shards(manifest)


def test_spm_model_mismatch_names_both_files(built, tmp_path):
    manifest, _ = built
    other = build(str(tmp_path / "other"), BuildSettings(
        input=write_corpus(tmp_path / "other.txt", 300, seed=5), vocab_size=90))
    with open(other.spm_model_path, "rb") as src, open(manifest.spm_model_path, "wb") as dst:
        dst.write(src.read())
    with pytest.raises(CorpusError, match=r"spm.model does not match .*manifest.json"):
        load_manifest(manifest.directory)


def test_input_errors(tmp_path):
    with pytest.raises(CorpusError, match="no file matches"):
        build(str(tmp_path / "a"), BuildSettings(input=str(tmp_path / "missing*.txt")))
    with pytest.raises(CorpusError, match=r"--vocab_size=5000 is too large .* value <= \d+"):
        build(str(tmp_path / "v"), BuildSettings(input=write_corpus(tmp_path / "v.txt", 50),
                                                 vocab_size=5000, valid_fraction=0.3,
                                                 test_fraction=0.3))
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(CorpusError, match="corpus is empty"):
        build(str(tmp_path / "b"), BuildSettings(input=str(tmp_path / "empty.txt")))
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"good line\nsecond \xff\xfe line\n")
    with pytest.raises(CorpusError, match=r"bad.txt: invalid UTF-8 at byte offset 17"):
        list(read_documents(str(bad)))
    docs = list(read_documents(str(bad), encoding_errors="replace"))
    assert docs[0][1] == "good line\nsecond \ufffd\ufffd line"
    with pytest.raises(CorpusError, match="the valid split got no documents"):
        build(str(tmp_path / "c"), BuildSettings(
            input=write_corpus(tmp_path / "tiny.txt", 3), vocab_size=60))


def test_text_document_units(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("a b\nc d\n\n\ne f\n")
    texts = lambda unit: [t for _, t in read_documents(str(path), text_document=unit)]
    assert texts("paragraph") == ["a b\nc d", "e f"]
    assert texts("line") == ["a b", "c d", "e f"]
    assert texts("file") == ["a b\nc d\n\n\ne f"]


@pytest.mark.heavy
def test_pydocs_corpus_is_stdlib_docs_without_tests():
    docs = list(read_documents("builtin:pydocs"))
    words = sum(len(text.split()) for _, text in docs)
    assert 200_000 < words < 600_000
    groups = {group for group, _ in docs}
    assert "json" in groups and "email.mime.text" in groups
    assert not [g for g in groups if g == "test" or g.startswith("test.") or ".tests" in g]
    assert docs == list(read_documents("builtin:pydocs"))  # deterministic order


def test_command_line_reports_bad_input_without_a_traceback(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\n\xc3\x28 broken\n")
    result = subprocess.run(
        [sys.executable, "-m", "data_pipeline.build", f"--input={bad}",
         f"--output_dir={tmp_path / 'out'}"], capture_output=True, text=True)
    assert result.returncode == 1
    assert f"error: {bad}: invalid UTF-8 at byte offset 5" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "manifest.json").exists()
