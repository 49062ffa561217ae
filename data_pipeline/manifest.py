"""`manifest.json`: what a data directory holds. Written last, so its presence means complete.

Paths inside are relative to the manifest's directory, so a data directory can be copied or
moved to gs:// as a whole.
"""
import dataclasses
import json
import os

import tensorflow as tf

from common.atomic_files import sha256_of, write_atomically
from common.errors import CorpusError

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1


class UnreadableManifest(CorpusError):
    pass


@dataclasses.dataclass(frozen=True)
class ShardInfo:
    file: str
    records: int     # documents
    tokens: int      # ids, BOS and EOS included
    bytes: int
    sha256: str


@dataclasses.dataclass(frozen=True)
class SplitInfo:
    documents: int
    tokens: int
    shards: tuple[ShardInfo, ...]


@dataclasses.dataclass(frozen=True)
class Manifest:
    directory: str
    source: str
    spm_model: str
    spm_sha256: str
    vocab_size: int
    special_ids: dict
    splits: dict            # split name -> SplitInfo
    build_settings: dict    # the settings the directory was built with; a rerun compares them

    @property
    def path(self) -> str:
        return os.path.join(self.directory, MANIFEST_NAME)

    @property
    def spm_model_path(self) -> str:
        return os.path.join(self.directory, self.spm_model)

    def split(self, name: str) -> SplitInfo:
        if name not in self.splits:
            raise CorpusError(f"{self.path}: no split {name!r}; it has {sorted(self.splits)}.")
        return self.splits[name]

    def shard_path(self, shard: ShardInfo) -> str:
        return os.path.join(self.directory, shard.file)

    def to_json(self) -> str:
        fields = dataclasses.asdict(self)
        del fields["directory"]
        return json.dumps({"format_version": FORMAT_VERSION, **fields}, indent=2)

    def save(self) -> None:
        write_atomically(self.path, self.to_json())


def load_manifest(path: str, check_spm: bool = True) -> Manifest:
    """Loads `path` (a data directory or its manifest.json).

    With `check_spm`, the SentencePiece model must be the one the shards were encoded with.
    """
    if not path.endswith(".json"):
        path = os.path.join(path, MANIFEST_NAME)
    if not tf.io.gfile.exists(path):
        raise CorpusError(f"{path}: no manifest. Build the data directory first: "
                          "python -m data_pipeline.build --input=... --output_dir=DIR")
    with tf.io.gfile.GFile(path) as f:
        try:
            fields = json.load(f)
        except json.JSONDecodeError as e:
            raise UnreadableManifest(
                f"{path}: not valid JSON ({e}). Write it again from the shards: python -m "
                f"data_pipeline.build --output_dir={os.path.dirname(path)} --repair") from None
    if fields.pop("format_version", None) != FORMAT_VERSION:
        raise CorpusError(f"{path}: field format_version is not {FORMAT_VERSION}; rebuild the "
                          "data directory with this version of data_pipeline.build.")
    fields["splits"] = {
        name: SplitInfo(s["documents"], s["tokens"], tuple(ShardInfo(**x) for x in s["shards"]))
        for name, s in fields["splits"].items()}
    manifest = Manifest(directory=os.path.dirname(path), **fields)
    if check_spm:
        if not tf.io.gfile.exists(manifest.spm_model_path):
            raise CorpusError(
                f"{manifest.spm_model_path}: missing; {path} says the shards were encoded with it "
                f"(sha256 {manifest.spm_sha256[:12]}...). Copy it back (a model directory trained "
                "on this data holds one: MODEL_DIR/spm.model), or delete the directory and "
                "build it again.")
        actual = sha256_of(manifest.spm_model_path)
        if actual != manifest.spm_sha256:
            raise CorpusError(
                f"{manifest.spm_model_path} does not match {path} (field spm_sha256: manifest "
                f"{manifest.spm_sha256[:12]}..., file {actual[:12]}...). The shards were encoded "
                "with another SentencePiece model: restore that model or rebuild the directory.")
    return manifest


def _size_problem(manifest: Manifest, shard: ShardInfo) -> str | None:
    path = manifest.shard_path(shard)
    if not tf.io.gfile.exists(path):
        return f"{path}: listed in {manifest.path} but missing"
    size = tf.io.gfile.stat(path).length
    if size != shard.bytes:
        return f"{path}: {size} bytes, {manifest.path} says {shard.bytes} (truncated or replaced)"
    return None


def _problem(manifest: Manifest, shard: ShardInfo) -> str | None:
    if problem := _size_problem(manifest, shard):
        return problem
    if sha256_of(manifest.shard_path(shard)) != shard.sha256:
        return f"{manifest.shard_path(shard)}: sha256 differs from {manifest.path} (corrupt)"
    return None


def _raise_with_repair(manifest: Manifest, problem: str):
    raise CorpusError(f"{problem}. Repair the directory (re-encodes only such shards): "
                      f"python -m data_pipeline.build --output_dir={manifest.directory} --repair")


def check_shard_sizes(manifest: Manifest, shards=None) -> None:
    """Cheap check (one stat per file, every shard by default) that names every missing or
    truncated shard."""
    shards = shards if shards is not None else [
        shard for split in manifest.splits.values() for shard in split.shards]
    if problems := [p for shard in shards if (p := _size_problem(manifest, shard))]:
        _raise_with_repair(manifest, "; ".join(problems))


def _problems(manifest: Manifest):
    """(shard, what is wrong) for every shard that is missing or differs in size or sha256."""
    for split in manifest.splits.values():
        for shard in split.shards:
            if problem := _problem(manifest, shard):
                yield shard, problem


def failing_shards(manifest: Manifest) -> list[ShardInfo]:
    return [shard for shard, _ in _problems(manifest)]


def verify_shards(manifest: Manifest) -> None:
    """Full check: every shard's size and sha256 against the manifest."""
    for _, problem in _problems(manifest):
        _raise_with_repair(manifest, problem)
