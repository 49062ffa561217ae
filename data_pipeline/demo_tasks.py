"""Two labelled demo tasks from the embedded pydocs corpus; the labels come from the code itself.

  python -m data_pipeline.demo_tasks --output_dir=/tmp/ulmfit_demo_tasks

- classification (`classify-{split}.jsonl`, {"text", "label"}): a docstring -> the top-level
  stdlib package it belongs to, for the 20 largest packages that span several modules.
- tagging (`tag-{split}.jsonl`, {"tokens", "tags"}): the whitespace-separated words of a
  function's docstring; a word that names one of the function's parameters (from its signature
  in the AST, quotes and punctuation around it ignored) is B-ARG, every other word O.

Splits are those of `builtin:pydocs` (by module), so a language model pretrained on the pydocs
train split has never read a valid or test example.
"""
import common.lean_tensorflow  # pylint: disable=unused-import  (first: its docstring)
import collections
import json
import os

from absl import flags
import tensorflow as tf

from common.atomic_files import write_atomically
from common.errors import run_tool
from data_pipeline.build import BuildSettings
from data_pipeline.pydocs import stdlib_docstrings
from data_pipeline.sources import SPLITS, split_of

NUM_PACKAGES = 20
MAX_PER_PACKAGE = 150  # per split: keeps one huge module (tkinter) from being most of a split
MAX_WORDS = 64
_PUNCTUATION = "`'\".,:;()[]{}*"


def _pydocs_split(doc):
    """The split `python -m data_pipeline.build --input=builtin:pydocs` puts `doc` in."""
    return split_of(doc.module, BuildSettings.valid_fraction, BuildSettings.test_fraction)


def _library_docstrings():
    return [d for d in stdlib_docstrings() if d.module != "pydoc_data.topics"]


def classification_examples():
    """{split: [{"text", "label"}]} for the top packages that span more than one module."""
    docs = _library_docstrings()
    modules = collections.defaultdict(set)
    for doc in docs:
        modules[doc.package].add(doc.module)
    sizes = collections.Counter(d.package for d in docs if len(modules[d.package]) > 1)
    packages = {p for p, _ in sizes.most_common(NUM_PACKAGES)}
    taken = collections.Counter()
    examples = {split: [] for split in SPLITS}
    for doc in docs:
        split = _pydocs_split(doc)
        if doc.package in packages and taken[split, doc.package] < MAX_PER_PACKAGE:
            taken[split, doc.package] += 1
            examples[split].append({"text": doc.text, "label": doc.package})
    return examples


def tag_words(words, params):
    return ["B-ARG" if w.strip(_PUNCTUATION) in params else "O" for w in words]


def tagging_examples():
    """{split: [{"tokens", "tags"}]} for every documented function that takes parameters."""
    examples = {split: [] for split in SPLITS}
    for doc in _library_docstrings():
        if doc.params:
            words = doc.text.split()[:MAX_WORDS]
            examples[_pydocs_split(doc)].append(
                {"tokens": words, "tags": tag_words(words, set(doc.params))})
    return examples


def write_demo_tasks(output_dir):
    """Writes both tasks' JSONL files (each atomically); returns {file name: examples}."""
    tf.io.gfile.makedirs(output_dir)
    counts = {}
    for task, examples in (("classify", classification_examples()),
                           ("tag", tagging_examples())):
        for split, rows in examples.items():
            name = f"{task}-{split}.jsonl"
            write_atomically(os.path.join(output_dir, name),
                             "".join(json.dumps(r) + "\n" for r in rows))
            counts[name] = len(rows)
    return counts


def demo_task_files(task, directory="/tmp/ulmfit_demo_tasks"):
    """{split: path} of a demo task ("classify" or "tag"), written on first use."""
    files = {split: os.path.join(directory, f"{task}-{split}.jsonl") for split in SPLITS}
    if not all(tf.io.gfile.exists(f) for f in files.values()):
        write_demo_tasks(directory)
    return files


def main(argv):
    del argv
    for name, count in write_demo_tasks(flags.FLAGS.output_dir).items():
        print(f"{name}: {count} examples")


if __name__ == "__main__":
    flags.DEFINE_string("output_dir", None, "Where to write the JSONL files.", required=True)
    run_tool(main)
