"""Where documents come from: the embedded pydocs corpus, text files, or a local TFDS dataset.

A source spec is one of
  builtin:pydocs                 the stdlib docstrings of this interpreter (see pydocs.py)
  tfds:NAME[/CONFIG][:SPLIT]     a TFDS dataset already prepared under --tfds_data_dir
  PATH_OR_GLOB[,PATH_OR_GLOB]    UTF-8 text files, local or any tf.io.gfile filesystem (gs://)

Every source yields `(group, text)` pairs. The group decides the train/valid/test split (see
`split_of`): documents of one group always land in the same split, so nothing leaks across them.
"""
import hashlib
from typing import Iterator

import tensorflow as tf

from common.errors import SettingError
from data_pipeline.pydocs import stdlib_docstrings

SPLITS = ("train", "valid", "test")
# What a "document" is inside a text file.
TEXT_DOCUMENT_UNITS = ("paragraph", "line", "file")
# What to do with bytes that are not UTF-8 (Python's decode error handlers).
ENCODING_ERRORS = ("strict", "replace", "ignore")


def split_of(group: str, valid_fraction: float, test_fraction: float) -> str:
    """Deterministic split of a group, from a hash so that it is stable across runs and hosts."""
    u = int.from_bytes(hashlib.sha256(group.encode("utf-8")).digest()[:8], "big") / 2.0**64
    if u < valid_fraction:
        return "valid"
    if u < valid_fraction + test_fraction:
        return "test"
    return "train"


def _pydocs() -> Iterator[tuple[str, str]]:
    for doc in stdlib_docstrings():
        # The help topics all live in one module; grouping them by topic keeps that 20% of the
        # corpus from landing in a single split.
        group = f"{doc.module}:{doc.name}" if doc.module == "pydoc_data.topics" else doc.module
        yield group, doc.text


def _decoded_lines(path: str, encoding_errors: str) -> Iterator[str]:
    offset = 0
    with tf.io.gfile.GFile(path, "rb") as f:
        for raw in f:
            try:
                yield raw.decode("utf-8", errors=encoding_errors)
            except UnicodeDecodeError as e:
                raise SettingError(
                    "{path}: invalid UTF-8 at byte offset {offset} ({reason}). Re-encode the "
                    "file as UTF-8, or set {encoding_errors}=replace to replace undecodable "
                    "bytes with U+FFFD.", path=path, offset=offset + e.start,
                    reason=e.reason) from None
            offset += len(raw)


def _text_file_documents(path: str, unit: str, encoding_errors: str) -> Iterator[str]:
    lines = _decoded_lines(path, encoding_errors)
    if unit == "file":
        text = "".join(lines).strip()
        if text:
            yield text
        return
    if unit == "line":
        yield from (line.strip() for line in lines if line.strip())
        return
    paragraph = []
    for line in lines:
        if line.strip():
            paragraph.append(line.rstrip("\n"))
        elif paragraph:
            yield "\n".join(paragraph).strip()
            paragraph = []
    if paragraph:
        yield "\n".join(paragraph).strip()


def _matching_files(spec: str) -> list[str]:
    paths = []
    for pattern in spec.split(","):
        matches = sorted(tf.io.gfile.glob(pattern))
        if not matches:
            raise SettingError("{input}: no file matches {pattern!r}. Check the path, or use "
                               "builtin:pydocs or tfds:NAME for the other sources.",
                               pattern=pattern)
        paths.extend(matches)
    return paths


def _text_files(spec: str, unit: str, encoding_errors: str) -> Iterator[tuple[str, str]]:
    if unit not in TEXT_DOCUMENT_UNITS:
        raise SettingError("{text_document}={unit!r} is not one of {units}.", unit=unit,
                           units=TEXT_DOCUMENT_UNITS)
    for path in _matching_files(spec):
        for text in _text_file_documents(path, unit, encoding_errors):
            # Grouping by content sends duplicate documents to one split.
            yield text, text


def _tfds(spec: str, data_dir: str | None, text_key: str) -> Iterator[tuple[str, str]]:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (slow import)
    name, _, split = spec.partition(":")
    split = split or "train"
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        dataset = builder.as_dataset(split=split)
    except Exception as e:  # TFDS raises many types here; all mean "not prepared locally".
        reason = str(e).splitlines()[0]  # TFDS appends the name of every dataset it knows
        raise SettingError(
            "{input}=tfds:{spec}: cannot read the prepared dataset under {tfds_data_dir}="
            "{data_dir} ({kind}: {reason}). Prepare it on a machine with network access (`tfds "
            "build {name} --data_dir=DIR`) and copy DIR here; nothing is downloaded at run time.",
            spec=spec, data_dir=data_dir or "~/tensorflow_datasets", kind=type(e).__name__,
            reason=reason, name=name) from e
    if text_key not in builder.info.features:
        raise SettingError("{input}=tfds:{spec}: no feature {key!r}; set {tfds_text_key} to "
                           "one of {features}.", spec=spec, key=text_key,
                           features=sorted(builder.info.features))
    for example in dataset.as_numpy_iterator():
        text = example[text_key].decode("utf-8").strip()
        if text:
            yield text, text


def read_documents(spec: str, *, text_document: str = "paragraph", encoding_errors: str = "strict",
                   tfds_data_dir: str | None = None,
                   tfds_text_key: str = "text") -> Iterator[tuple[str, str]]:
    """Yields `(group, text)` for every non-empty document of the source `spec`."""
    if spec == "builtin:pydocs":
        return _pydocs()
    if spec.startswith("builtin:"):
        raise SettingError("{input}={spec}: the only builtin corpus is builtin:pydocs.",
                           spec=spec)
    if spec.startswith("tfds:"):
        return _tfds(spec[len("tfds:"):], tfds_data_dir, tfds_text_key)
    return _text_files(spec, text_document, encoding_errors)


def source_parts(spec: str) -> list[str]:
    """`spec` cut into sources that read independently and together yield its documents: one
    per text file (what a distributed build hands its workers); builtin: and tfds: stay whole."""
    return [spec] if spec.startswith(("builtin:", "tfds:")) else _matching_files(spec)
