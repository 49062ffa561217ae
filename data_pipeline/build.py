"""Text -> SentencePiece model -> sharded TFRecords of token ids + manifest.json.

  python -m data_pipeline.build --input=builtin:pydocs --output_dir=/tmp/pydocs

Two passes over the source: the first counts documents per split and trains SentencePiece on the
train split, the second encodes and writes the shards. Every file is written atomically and the
manifest last, so an interrupted build leaves nothing that looks complete; rerunning the same
command finishes only what is missing, and rerunning it over a complete directory does nothing.
"""
import os

# Before TensorFlow loads: keep its C++ INFO lines (oneDNN, XLA service) out of the progress bars.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

import dataclasses
import json
import math
import sys
import time

from absl import app, flags, logging
import tensorflow as tf
from tqdm import tqdm

from data_pipeline.atomic_files import remove_temporaries, sha256_of, write_atomically
from data_pipeline.manifest import MANIFEST_NAME, Manifest, SplitInfo, load_manifest, verify_shards
from data_pipeline.shards import ShardWriter, read_shard_info, shard_name
from data_pipeline.sources import SPLITS, CorpusError, read_documents, split_of
from data_pipeline.tokenizer import (SPECIAL_IDS, encode_documents, load_sentencepiece,
                                     train_sentencepiece)

SPM_NAME = "spm.model"
SETTINGS_NAME = "build_settings.json"
_ENCODE_BATCH = 1024  # documents per SentencePiece call: big enough to keep all cores busy


@dataclasses.dataclass(frozen=True)
class BuildSettings:
    input: str
    vocab_size: int = 8000
    model_type: str = "unigram"
    character_coverage: float = 1.0
    valid_fraction: float = 0.05
    test_fraction: float = 0.05
    shard_mb: float = 64.0            # UTF-8 text per shard; sets the shard count of each split
    text_document: str = "paragraph"  # text files: paragraph (blank-line separated), line, file
    encoding_errors: str = "strict"   # or "replace": undecodable bytes become U+FFFD
    tfds_data_dir: str | None = None
    tfds_text_key: str = "text"
    # An existing SentencePiece model to encode with instead of training one: target-domain
    # text for fine-tuning must be numbered as the pretrained model's vocabulary.
    spm_model: str | None = None


def _split_documents(settings: BuildSettings):
    for group, text in read_documents(
            settings.input, text_document=settings.text_document,
            encoding_errors=settings.encoding_errors, tfds_data_dir=settings.tfds_data_dir,
            tfds_text_key=settings.tfds_text_key):
        yield split_of(group, settings.valid_fraction, settings.test_fraction), text


def _require_same_settings(recorded: dict, settings: BuildSettings, path: str) -> None:
    asked = dataclasses.asdict(settings)
    differing = [f"{k}: built with {recorded.get(k)!r}, asked for {v!r}"
                 for k, v in asked.items() if recorded.get(k) != v]
    if differing:
        raise CorpusError(f"{path} was built with other settings ({'; '.join(differing)}). "
                          "Use another --output_dir, or delete this one to rebuild it.")


def _survey(settings: BuildSettings, spm_path: str) -> dict:
    """Pass 1: documents and bytes per split; trains SentencePiece if it is not there yet."""
    counts = {split: [0, 0] for split in SPLITS}

    def train_texts():
        for split, text in tqdm(_split_documents(settings), desc="reading corpus",
                                unit=" docs", mininterval=1.0):
            counts[split][0] += 1
            counts[split][1] += len(text.encode("utf-8"))
            if split == "train":
                yield text

    texts = train_texts()
    if tf.io.gfile.exists(spm_path):
        logging.info("Reusing %s.", spm_path)
    elif settings.spm_model:
        with tf.io.gfile.GFile(settings.spm_model, "rb") as f:
            write_atomically(spm_path, f.read())
    else:
        logging.info("Training SentencePiece (%s, vocab %d) on the train split...",
                     settings.model_type, settings.vocab_size)
        start = time.time()
        try:
            train_sentencepiece(texts, spm_path, settings.vocab_size, settings.model_type,
                                settings.character_coverage)
        except RuntimeError:
            if counts["train"][0] == 0:
                raise CorpusError(f"--input={settings.input}: the corpus is empty.") from None
            raise
        logging.info("SentencePiece trained in %.1fs.", time.time() - start)
    for _ in texts:  # finish counting whatever SentencePiece did not read
        pass
    for split, (documents, _) in counts.items():
        if documents == 0:
            raise CorpusError(
                f"--input={settings.input}: the {split} split got no documents "
                f"({counts['train'][0]} in train). Give more text, or raise --valid_fraction / "
                "--test_fraction so the small splits receive some.")
    return counts


class _Progress:
    """One bar over all splits: documents done, and tokens/s in the postfix."""

    def __init__(self, documents: int):
        self._bar = tqdm(total=documents, desc="encoding", unit=" docs")
        self._tokens = 0

    def advance(self, documents: int, tokens: int) -> None:
        self._tokens += tokens
        self._bar.update(documents)
        self._bar.set_postfix_str(
            f"{self._tokens / max(self._bar.format_dict['elapsed'], 1e-9):,.0f} tokens/s")

    def close(self) -> None:
        self._bar.close()


class _SplitWriter:
    """Pass 2 for one split: routes its documents, in order, to shard k of num_shards."""

    def __init__(self, output_dir, split, documents, num_shards, processor, progress):
        self.output_dir, self.split, self.processor = output_dir, split, processor
        self.num_shards, self.documents, self.progress = num_shards, documents, progress
        self.shards, self._seen, self._pending, self._writer = [], 0, [], None

    def _bounds(self, k):  # documents [start, end) of shard k
        return k * self.documents // self.num_shards, (k + 1) * self.documents // self.num_shards

    def _path(self, k):
        return os.path.join(self.output_dir, shard_name(self.split, k, self.num_shards))

    def add(self, text: str) -> None:
        k = len(self.shards)
        if self._seen == self._bounds(k)[0] and not tf.io.gfile.exists(self._path(k)):
            self._writer = ShardWriter(self._path(k))
        self._seen += 1
        if self._writer is not None:
            self._pending.append(text)
            if len(self._pending) == _ENCODE_BATCH:
                self._encode()
        if self._seen == self._bounds(k)[1]:
            self._finish_shard(k)

    def _encode(self) -> None:
        if self._pending:
            ids = encode_documents(self.processor, self._pending)
            self._writer.write(ids)
            self.progress.advance(len(ids), sum(len(x) for x in ids))
            self._pending = []

    def _finish_shard(self, k: int) -> None:
        if self._writer is None:
            # A shard under its final name is complete (atomic rename): reuse it as it is.
            info = read_shard_info(self._path(k))
            self.progress.advance(info.records, info.tokens)
        else:
            self._encode()
            info = self._writer.close()
            self._writer = None
        self.shards.append(info)

    def finish(self, source: str) -> SplitInfo:
        if self._seen != self.documents:
            raise CorpusError(f"--input={source} changed during the build ({self.split}: "
                              f"{self._seen} documents now, {self.documents} before). "
                              "Rerun on a stable input.")
        return SplitInfo(self.documents, sum(s.tokens for s in self.shards), tuple(self.shards))


def build(output_dir: str, settings: BuildSettings) -> Manifest:
    manifest_path = os.path.join(output_dir, MANIFEST_NAME)
    if tf.io.gfile.exists(manifest_path):
        manifest = load_manifest(output_dir)
        _require_same_settings(manifest.build_settings, settings, manifest_path)
        logging.info("%s is complete; nothing to do.", manifest_path)
        return manifest
    tf.io.gfile.makedirs(output_dir)
    removed = remove_temporaries(output_dir)
    if removed:
        logging.info("Removed %d partial files of an interrupted build.", len(removed))
    settings_path = os.path.join(output_dir, SETTINGS_NAME)
    if tf.io.gfile.exists(settings_path):
        with tf.io.gfile.GFile(settings_path) as f:
            _require_same_settings(json.load(f), settings, settings_path)
    else:
        write_atomically(settings_path, json.dumps(dataclasses.asdict(settings), indent=2))

    spm_path = os.path.join(output_dir, SPM_NAME)
    counts = _survey(settings, spm_path)
    processor = load_sentencepiece(spm_path)
    progress = _Progress(sum(c[0] for c in counts.values()))
    writers = {
        split: _SplitWriter(output_dir, split, documents,
                            max(1, math.ceil(size / (settings.shard_mb * 1e6))), processor,
                            progress)
        for split, (documents, size) in counts.items()}
    for split, text in _split_documents(settings):
        writers[split].add(text)
    progress.close()
    splits = {split: writer.finish(settings.input) for split, writer in writers.items()}
    manifest = Manifest(
        directory=output_dir, source=settings.input, spm_model=SPM_NAME,
        spm_sha256=sha256_of(spm_path), vocab_size=processor.get_piece_size(),
        special_ids=dict(SPECIAL_IDS),
        splits=splits,
        build_settings=dataclasses.asdict(settings))
    manifest.save()
    return manifest


def summary(manifest: Manifest) -> str:
    lines = [f"{manifest.path}: vocab {manifest.vocab_size}, source {manifest.source}",
             f"{'split':<6} {'documents':>10} {'tokens':>11} {'shards':>7}"]
    lines += [f"{name:<6} {s.documents:>10,} {s.tokens:>11,} {len(s.shards):>7}"
              for name, s in manifest.splits.items()]
    return "\n".join(lines)


FLAGS = flags.FLAGS


def _define_flags():
    """The command line; defined only when run as a program, so importing build is side-effect free."""
    flags.DEFINE_string("output_dir", None, "Data directory to write (local or gs://).")
    flags.DEFINE_bool("verify", False, "Check every shard of --output_dir against its manifest "
                      "(size and sha256) instead of building.")
    for field in dataclasses.fields(BuildSettings):
        define = {int: flags.DEFINE_integer, float: flags.DEFINE_float}.get(field.type,
                                                                           flags.DEFINE_string)
        help_text = ("builtin:pydocs | tfds:NAME[/CONFIG][:SPLIT] | PATH_OR_GLOB[,...]"
                     if field.name == "input" else f"See BuildSettings.{field.name}.")
        define(field.name, None if field.name == "input" else field.default, help_text)


def main(argv):
    del argv
    if not FLAGS.output_dir:
        raise app.UsageError("--output_dir is required.")
    try:
        if FLAGS.verify:
            manifest = load_manifest(FLAGS.output_dir)
            verify_shards(manifest)
            print(f"{manifest.path}: all shards match their size and sha256.")
            return
        if not FLAGS.input:
            raise app.UsageError("--input is required.")
        settings = BuildSettings(**{f.name: FLAGS[f.name].value
                                    for f in dataclasses.fields(BuildSettings)})
        print(summary(build(FLAGS.output_dir, settings)))
    except CorpusError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
