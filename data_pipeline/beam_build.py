"""Pass 2 of a build on Apache Beam (the `[beam]` extra): for corpora that outgrow one host.

  python -m data_pipeline.build --input=gs://B/text/*.txt --output_dir=gs://B/data \\
      --runner=DataflowRunner --project=P --region=R --temp_location=gs://B/tmp \\
      --setup_file=./setup.py

Pass 1 is data_pipeline.build's own, on the launching host: it counts documents and bytes per
split and trains SentencePiece on the train split (a sample of 10 M lines, as always), so the
model and the shard counts are a local build's. Beam then reads the source (each text file on a
worker of its own; builtin: and tfds: sources as one part), splits documents by the same hash
rule, encodes them with that model and writes each split's shards with WriteToTFRecord, which
renames its temporary files into place only when all of them are written. Each shard's records,
tokens and sha256 are read back on the workers; the launching host writes manifest.json last.

The splits hold the same documents as a local build's, in Beam's order and layout rather than the
source's. A Beam build does not resume: rerun, it starts over.
"""
import dataclasses
import json
import os

import tensorflow as tf

from common.atomic_files import write_atomically
from common.errors import SettingError
from common.tokenizer import encode_documents, load_sentencepiece
from data_pipeline.manifest import SplitInfo, ShardInfo
from data_pipeline.shards import read_shard_info, serialize_ids
from data_pipeline.sources import SPLITS, source_parts

INFO_SUFFIX = ".beam-shards.json"  # per split, what the workers read back; removed at the end


def _beam():
    try:
        import apache_beam as beam  # pylint: disable=g-import-not-at-top
    except ImportError:
        raise SettingError("{runner} needs Apache Beam: pip install -e '.[beam]' (or leave "
                           "{runner} unset to build on this host).") from None
    return beam


def check_runner(runner):
    """Refuses a runner Beam does not know before anything is read (pass 1 can take hours)."""
    try:
        _beam().runners.create_runner(runner)
    except ValueError as e:
        raise SettingError("{runner}={value}: {reason}", value=runner, reason=e) from None


def _encoder(spm_path):
    beam = _beam()

    class Encode(beam.DoFn):
        """A batch of documents -> their serialized records, BOS/EOS added."""

        def setup(self):
            self.processor = load_sentencepiece(spm_path)

        def process(self, texts):
            yield from map(serialize_ids, encode_documents(self.processor, texts))

    return Encode()


def _write_infos(infos, path):
    write_atomically(path, json.dumps([info.__dict__ for info in infos]))


def write_shards(output_dir, settings, num_shards, spm_path, split_documents, pipeline_args):
    """Runs the pipeline; {split: SplitInfo}. `split_documents(settings)` yields a source's
    (split, text) pairs, as in the local build; `num_shards`: per split."""
    beam = _beam()
    options = beam.options.pipeline_options.PipelineOptions(list(pipeline_args))
    # An earlier attempt's shards and Beam's temporary directories: this build writes them all.
    for stale in tf.io.gfile.glob(os.path.join(output_dir, "*.tfrecord")):
        tf.io.gfile.remove(stale)
    for stale in tf.io.gfile.glob(os.path.join(output_dir, "beam-temp-*")):
        tf.io.gfile.rmtree(stale)
    info_path = {split: os.path.join(output_dir, split + INFO_SUFFIX) for split in SPLITS}
    with beam.Pipeline(options=options) as pipeline:
        documents = (pipeline
                     | "source parts" >> beam.Create(source_parts(settings.input))
                     | "read" >> beam.FlatMap(
                         lambda part: split_documents(dataclasses.replace(settings, input=part)))
                     | "spread" >> beam.Reshuffle())
        parts = documents | "by split" >> beam.Partition(
            lambda pair, _: SPLITS.index(pair[0]), len(SPLITS))
        for split, part in zip(SPLITS, parts):
            _ = (part
                 | f"{split}: texts" >> beam.Map(lambda pair: pair[1])
                 | f"{split}: batch" >> beam.BatchElements(min_batch_size=16,
                                                           max_batch_size=512)
                 | f"{split}: encode" >> beam.ParDo(_encoder(spm_path))
                 | f"{split}: write" >> beam.io.WriteToTFRecord(
                     os.path.join(output_dir, split), file_name_suffix=".tfrecord",
                     num_shards=num_shards[split], shard_name_template="-SSSSS-of-NNNNN")
                 | f"{split}: describe" >> beam.Map(read_shard_info)
                 | f"{split}: collect" >> beam.combiners.ToList()
                 | f"{split}: record" >> beam.Map(_write_infos, info_path[split]))
    splits = {}
    for split in SPLITS:
        with tf.io.gfile.GFile(info_path[split]) as f:
            shards = sorted((ShardInfo(**info) for info in json.load(f)), key=lambda s: s.file)
        tf.io.gfile.remove(info_path[split])
        splits[split] = SplitInfo(sum(s.records for s in shards), sum(s.tokens for s in shards),
                                  tuple(shards))
    return splits
