"""SentencePiece training and encoding with the id convention of published TF ULMFiT models."""
import io
import os
import re
from typing import Iterable, Iterator

import sentencepiece as spm

from common.atomic_files import write_atomically
from common.errors import CorpusError, SettingError

SPECIAL_IDS = {"unk": 0, "pad": 1, "bos": 2, "eos": 3}
SPM_NAME = "spm.model"  # the SentencePiece model's name in data and model directories
MODEL_TYPES = ("unigram", "bpe")
_TOO_FEW_PIECES = re.compile(r"smaller than required_chars\. \d+ vs (\d+)")


def model_ids(pieces, max_len=None):
    """The ids a model reads for one text: BOS, its pieces, EOS. A text longer than `max_len`
    keeps its first `max_len` ids (so loses its EOS). This is the one truncation rule: the
    downstream data (labeled_data.PieceEncoder) and the in-graph tokenizer of exported models
    (trainer/ulmfit_encoder.SentencePieceIds) both follow it."""
    ids = [SPECIAL_IDS["bos"], *pieces, SPECIAL_IDS["eos"]]
    return ids if max_len is None else ids[:max_len]


def _training_sentences(documents: Iterable[str], failure: list) -> Iterator[str]:
    # SentencePiece turns an exception raised by its input iterator into a RuntimeError that
    # loses the type; keep the original so the caller sees e.g. which file is not UTF-8.
    try:
        for text in documents:
            for line in text.splitlines():
                if line.strip():
                    yield line
    except Exception as e:
        failure.append(e)
        raise


def train_sentencepiece(documents: Iterable[str], model_path: str, vocab_size: int,
                        model_type: str = "unigram", character_coverage: float = 1.0) -> None:
    """Trains on every line of `documents` and writes the model atomically to `model_path`."""
    failure, model = [], io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=_training_sentences(documents, failure), model_writer=model,
            vocab_size=vocab_size, model_type=model_type, character_coverage=character_coverage,
            unk_id=SPECIAL_IDS["unk"], pad_id=SPECIAL_IDS["pad"], bos_id=SPECIAL_IDS["bos"],
            eos_id=SPECIAL_IDS["eos"], num_threads=os.cpu_count() or 1,
            # A sample of 10M lines is plenty for the vocabulary and bounds memory on big corpora.
            input_sentence_size=10_000_000, shuffle_input_sentence=True, minloglevel=2)
    except RuntimeError as e:
        if failure:
            raise failure[0] from None
        message = str(e)
        if "Vocabulary size too high" in message:
            raise SettingError("{vocab_size}={vocab} is too large for this corpus: {detail}",
                               vocab=vocab_size,
                               detail=message[message.index("Vocabulary size"):]) from None
        if too_few := _TOO_FEW_PIECES.search(message):
            raise SettingError(
                "{vocab_size}={vocab} is too small for this corpus: its characters and the "
                "special ids need {needed} pieces. Set {vocab_size} to at least {needed}, or "
                "lower {character_coverage} below 1.0 to map rare characters to unk.",
                vocab=vocab_size, needed=too_few.group(1)) from None
        raise
    write_atomically(model_path, model.getvalue())


def load_sentencepiece(model_path: str) -> spm.SentencePieceProcessor:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top  (gfile, so gs:// works)
    with tf.io.gfile.GFile(model_path, "rb") as f:
        processor = spm.SentencePieceProcessor(model_proto=f.read())
    for name, expected in SPECIAL_IDS.items():
        actual = getattr(processor, f"{name}_id")()
        if actual != expected:
            raise CorpusError(f"{model_path}: SentencePiece {name} id is {actual}, this project "
                              f"needs {expected} (unk=0, pad=1, bos=2, eos=3). Retrain it with "
                              "python -m data_pipeline.build.")
    return processor


def encode_documents(processor: spm.SentencePieceProcessor, texts: list[str]) -> list[list[int]]:
    """Ids of each document with BOS/EOS added, encoded on all cores."""
    return processor.encode(texts, out_type=int, add_bos=True, add_eos=True,
                            num_threads=os.cpu_count() or 1)
