"""Pass 2 of a build: a split's documents, in order, into its shards, with one progress bar.

A shard already under its final name is complete (it was renamed into place when it was closed),
so a rerun keeps it and encodes only the shards that are missing.
"""
import os

import tensorflow as tf
from tqdm import tqdm

from common.tokenizer import encode_documents
from data_pipeline.manifest import SplitInfo
from data_pipeline.shards import ShardWriter, read_shard_info, shard_name

_ENCODE_BATCH = 1024  # documents per SentencePiece call: big enough to keep all cores busy


class Progress:
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


class SplitWriter:
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

    def finish(self) -> SplitInfo:
        return SplitInfo(self._seen, sum(s.tokens for s in self.shards), tuple(self.shards))
