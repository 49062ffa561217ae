"""Text -> SentencePiece model -> sharded TFRecords of token ids + manifest.json.

  python -m data_pipeline.build --input=builtin:pydocs --output_dir=/tmp/pydocs

Two passes over the source: the first counts documents per split and trains SentencePiece on the
train split, the second encodes and writes the shards. Every file is written atomically and the
manifest last, so an interrupted build leaves nothing that looks complete; rerunning the same
command finishes only what is missing, and rerunning it over a complete directory does nothing.
`--repair` re-encodes the shards of a complete directory that are missing or fail their sha256,
with the settings its manifest recorded.
"""
import common.lean_tensorflow  # pylint: disable=unused-import  (first: its docstring)
import os

# Before TensorFlow loads: keep its C++ INFO lines (oneDNN, XLA service) out of the progress bars.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

import dataclasses
import json
import math
import time

from absl import app, flags, logging
import tensorflow as tf
from tqdm import tqdm

from common.atomic_files import remove_temporaries, sha256_of, write_atomically
from common.errors import SettingError, run_tool
from common.tokenizer import SPECIAL_IDS, SPM_NAME, load_sentencepiece, train_sentencepiece
from data_pipeline import beam_build
from data_pipeline.build_settings import SETTINGS_NAME, BuildSettings, require_same_settings
from data_pipeline.manifest import (MANIFEST_NAME, Manifest, UnreadableManifest, check_shard_sizes,
                                    failing_shards, load_manifest, verify_shards)
from data_pipeline.sources import SPLITS, read_documents, split_of
from data_pipeline.split_writer import Progress, SplitWriter


def _split_documents(settings: BuildSettings):
    for group, text in read_documents(
            settings.input, text_document=settings.text_document,
            encoding_errors=settings.encoding_errors, tfds_data_dir=settings.tfds_data_dir,
            tfds_text_key=settings.tfds_text_key):
        yield split_of(group, settings.valid_fraction, settings.test_fraction), text


def _where(runner):
    return f"on Apache Beam (--runner={runner})" if runner else "on one host (no --runner)"


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
                raise SettingError("{input}={value}: the corpus is empty.",
                                   value=settings.input) from None
            raise
        logging.info("SentencePiece trained in %.1fs.", time.time() - start)
    for _ in texts:  # finish counting whatever SentencePiece did not read
        pass
    for split, (documents, _) in counts.items():
        if documents == 0:
            raise SettingError(
                "{input}={value}: the {split} split got no documents ({train} in train). Give "
                "more text, or raise {valid_fraction} / {test_fraction} so the small splits "
                "receive some.", value=settings.input, split=split, train=counts["train"][0])
    return counts


def build(output_dir: str, settings: BuildSettings, runner: str | None = None,
          pipeline_args=()) -> Manifest:
    """Builds `output_dir`; pass 2 runs on Apache Beam's `runner` (with `pipeline_args`, Beam's
    pipeline options) when given, else on this host."""
    if runner:
        beam_build.check_runner(runner)
    manifest_path = os.path.join(output_dir, MANIFEST_NAME)
    if tf.io.gfile.exists(manifest_path):
        manifest = load_manifest(output_dir)
        require_same_settings(manifest.build_settings, settings, manifest_path,
                               layout_too=False)
        # A directory many hosts read from gs:// can lose a shard after it was built.
        check_shard_sizes(manifest)
        logging.info("%s is complete; nothing to do.", manifest_path)
        return manifest
    tf.io.gfile.makedirs(output_dir)
    removed = remove_temporaries(output_dir)
    if removed:
        logging.info("Removed %d partial files of an interrupted build.", len(removed))
    settings_path = os.path.join(output_dir, SETTINGS_NAME)
    spm_path = os.path.join(output_dir, SPM_NAME)
    recorded = {**dataclasses.asdict(settings), **({"runner": runner} if runner else {})}
    if any(n.endswith(".tfrecord") for n in tf.io.gfile.listdir(output_dir)):
        # Shards exist: a build to resume, which must go on as it began.
        with tf.io.gfile.GFile(settings_path) as f:
            begun = json.load(f)
        require_same_settings(begun, settings, settings_path)
        if begun.get("runner") != runner:  # the two lay documents out in shards differently
            raise SettingError("{path} was begun {how}. Rerun it so, or delete the directory "
                               "to build it {now}.", path=output_dir,
                               how=_where(begun.get("runner")), now=_where(runner))
    else:
        # Nothing encoded yet: an attempt that failed (no input, too little text) or was
        # killed early. Start over, keeping its SentencePiece model only for the same settings.
        if tf.io.gfile.exists(settings_path) and tf.io.gfile.exists(spm_path):
            with tf.io.gfile.GFile(settings_path) as f:
                if json.load(f) != recorded:
                    tf.io.gfile.remove(spm_path)
        write_atomically(settings_path, json.dumps(recorded, indent=2))

    counts = _survey(settings, spm_path)
    processor = load_sentencepiece(spm_path)
    num_shards = {split: max(1, math.ceil(size / (settings.shard_mb * 1e6)))
                  for split, (_, size) in counts.items()}
    if runner:
        splits = beam_build.write_shards(output_dir, settings, num_shards, spm_path,
                                         _split_documents, [f"--runner={runner}", *pipeline_args])
    else:
        progress = Progress(sum(c[0] for c in counts.values()))
        writers = {split: SplitWriter(output_dir, split, counts[split][0], num_shards[split],
                                      processor, progress) for split in counts}
        for split, text in _split_documents(settings):
            writers[split].add(text)
        progress.close()
        splits = {split: writer.finish() for split, writer in writers.items()}
    for split, info in splits.items():
        if info.documents != counts[split][0]:
            raise SettingError("{input}={value} changed during the build ({split}: {now} "
                               "documents now, {before} before). Rerun on a stable input.",
                               value=settings.input, split=split, now=info.documents,
                               before=counts[split][0])
    manifest = Manifest(
        directory=output_dir, source=settings.input, spm_model=SPM_NAME,
        spm_sha256=sha256_of(spm_path), vocab_size=processor.get_piece_size(),
        special_ids=dict(SPECIAL_IDS),
        splits=splits,
        build_settings=recorded)
    manifest.save()
    return manifest


def repair(output_dir: str) -> Manifest:
    """Re-encodes the shards of a complete `output_dir` that are missing or fail their size or
    sha256, with the settings and SentencePiece model it was built with. An unreadable manifest
    is written again from the shards (complete by their atomic renames) and build_settings.json."""
    try:
        manifest = load_manifest(output_dir)
        recorded = manifest.build_settings
    except UnreadableManifest:
        manifest = None
        with tf.io.gfile.GFile(os.path.join(output_dir, SETTINGS_NAME)) as f:
            recorded = json.load(f)
    if "runner" in recorded:
        raise SettingError("{path} was built on Apache Beam, which places documents in shards "
                           "in its own order: a shard cannot be re-encoded alone. Delete the "
                           "directory and build it again with the same command.",
                           path=output_dir)
    if manifest is None:
        tf.io.gfile.remove(os.path.join(output_dir, MANIFEST_NAME))
        return build(output_dir, BuildSettings(**recorded))
    broken = failing_shards(manifest)
    if not broken:
        logging.info("%s: every shard matches; nothing to repair.", manifest.path)
        return manifest
    logging.info("Re-encoding %d shard(s): %s", len(broken), ", ".join(s.file for s in broken))
    tf.io.gfile.remove(manifest.path)  # incomplete until the shards are back
    for shard in broken:
        if tf.io.gfile.exists(manifest.shard_path(shard)):
            tf.io.gfile.remove(manifest.shard_path(shard))
    repaired = build(output_dir, BuildSettings(**manifest.build_settings))
    now = {s.file: s.sha256 for split in repaired.splits.values() for s in split.shards}
    changed = [s.file for s in broken if now.get(s.file) != s.sha256]
    if changed:
        logging.warning("%s differ from the shards first built (the source changed since); the "
                        "manifest now describes what is on disk.", ", ".join(changed))
    return repaired


def summary(manifest: Manifest) -> str:
    lines = [f"{manifest.path}: vocab {manifest.vocab_size}, source {manifest.source}",
             f"{'split':<6} {'documents':>10} {'tokens':>11} {'shards':>7}"]
    lines += [f"{name:<6} {s.documents:>10,} {s.tokens:>11,} {len(s.shards):>7}"
              for name, s in manifest.splits.items()]
    return "\n".join(lines)


FLAGS = flags.FLAGS


def _define_flags():
    """The command line; defined only when run as a program (importing build defines no flags)."""
    flags.DEFINE_string("output_dir", None, "Data directory to write (local or gs://).")
    flags.DEFINE_bool("verify", False, "Check every shard of --output_dir against its manifest "
                      "(size and sha256) instead of building.")
    flags.DEFINE_bool("repair", False, "Re-encode the shards of a complete --output_dir that are "
                      "missing or corrupt, with the settings it was built with.")
    flags.DEFINE_string("runner", None, "Encode and write on Apache Beam with this runner "
                        "(DirectRunner, DataflowRunner, ...; the [beam] extra); Beam's pipeline "
                        "options (--project, --region, --temp_location, ...) pass through. "
                        "Unset: on this host.")
    for field in dataclasses.fields(BuildSettings):
        define = {int: flags.DEFINE_integer, float: flags.DEFINE_float}.get(field.type,
                                                                           flags.DEFINE_string)
        help_text = ("builtin:pydocs | tfds:NAME[/CONFIG][:SPLIT] | PATH_OR_GLOB[,...]"
                     if field.name == "input" else f"See BuildSettings.{field.name}.")
        define(field.name, None if field.name == "input" else field.default, help_text)


def main(argv):
    if not FLAGS.output_dir:
        raise app.UsageError("--output_dir is required.")
    if FLAGS.verify:
        manifest = load_manifest(FLAGS.output_dir)
        verify_shards(manifest)
        print(f"{manifest.path}: all shards match their size and sha256.")
        return
    if FLAGS.repair:
        print(summary(repair(FLAGS.output_dir)))
        return
    if not FLAGS.input:
        raise app.UsageError("--input is required.")
    if argv[1:] and not FLAGS.runner:
        raise app.UsageError(f"unknown flag(s) {' '.join(argv[1:])}; Apache Beam pipeline "
                             "options go with --runner")
    settings = BuildSettings(**{f.name: FLAGS[f.name].value
                                for f in dataclasses.fields(BuildSettings)})
    print(summary(build(FLAGS.output_dir, settings, FLAGS.runner, argv[1:])))


if __name__ == "__main__":
    _define_flags()
    run_tool(main, pass_unknown_flags=True)
