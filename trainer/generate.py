"""python -m trainer.generate --model_dir=LM --prompt="..." [--n_words=50] [--temperature=0.75]
    [--top_k=N] [--seed=0] [--stop_at_eos]

Text from a language model, as fastai's `learn.predict(prompt, n_words, temperature)`: the
prompt runs through the LM once, then one piece at a time is sampled from softmax(logits /
temperature) (only the `top_k` likeliest with --top_k; never unk, pad or BOS) and fed back with
the carried LSTM states. A word is a piece that starts one (SentencePiece's "▁"); generation
stops after `n_words` new words, or at EOS with --stop_at_eos (else EOS starts a new line: the
LM reads documents as one stream). The same seed gives the same text.

A backward LM (train_lm.backwards) writes what comes before the prompt: it reads the prompt
reversed and samples pieces right to left, so the prompt ends the text; BOS plays EOS's part
(the start of the document is where a backward LM's document ends).
"""
import common.lean_tensorflow  # pylint: disable=unused-import  (first: its docstring)
from absl import flags
import numpy as np
import tensorflow as tf

from common.errors import run_tool
from common.tokenizer import SPECIAL_IDS, load_sentencepiece
from trainer.models.pretrained_lm import load_language_model
def _next_piece_sampler(lm, temperature, top_k, never_ids):
    never = np.zeros(lm.get_config()["vocab_size"], np.float32)
    never[never_ids] = -np.inf

    @tf.function
    def step(ids, states, seed):
        """Logits after `ids` [1, time] from `states`; returns (sampled id, new states)."""
        logits, states, _, _ = lm(ids, states, training=False)
        logits = logits[:, -1] / temperature + never
        if top_k:
            kth = tf.math.top_k(logits, top_k).values[:, -1:]
            logits = tf.where(logits < kth, -np.inf, logits)
        return tf.random.stateless_categorical(logits, 1, seed)[0, 0], states
    return step


def generate(lm, processor, prompt, n_words=50, temperature=0.75, top_k=None, seed=0,
             stop_at_eos=False, max_pieces=None, backwards=False):
    """(text: the prompt and its continuation, decoded together; the continuation's ids, in
    the order sampled). At most `max_pieces` pieces (default 20 per word): a model that never
    starts a word still stops. `backwards`: `lm` is a backward LM (see above)."""
    max_pieces = max_pieces or 20 * (n_words + 1)
    start, end = (SPECIAL_IDS["eos"], SPECIAL_IDS["bos"]) if backwards else (
        SPECIAL_IDS["bos"], SPECIAL_IDS["eos"])  # a document's first and last id as read
    step = _next_piece_sampler(lm, temperature, top_k, [SPECIAL_IDS["unk"], SPECIAL_IDS["pad"],
                                                        start])
    prompt_ids = processor.encode(prompt)
    ids = [start] + (prompt_ids[::-1] if backwards else prompt_ids)
    states, generated, words = lm.encoder.initial_states(1), [], 0
    while len(generated) < max_pieces:
        token, states = step(tf.constant([ids if not generated else generated[-1:]]), states,
                             tf.constant([seed, len(generated)]))
        token = int(token)
        if token == end and stop_at_eos:
            break
        # Read left to right, "▁" starts a word; read right to left, it completes one.
        word_boundary = token == end or processor.id_to_piece(token)[0] == "▁"
        if word_boundary and words == n_words and not backwards:
            break
        words += word_boundary
        generated.append(token)
        if words == n_words and backwards:
            break
    text = generated[::-1] + prompt_ids if backwards else prompt_ids + generated
    segments = [[]]  # a document boundary: the next document begins on a new line
    for token in text:
        if token in (SPECIAL_IDS["bos"], SPECIAL_IDS["eos"]):
            segments.append([])
        else:
            segments[-1].append(token)
    return "\n".join(processor.decode(s) for s in segments if s), generated


FLAGS = flags.FLAGS


def main(argv):
    del argv
    lm, config = load_language_model(FLAGS.model_dir)
    text, _ = generate(lm, load_sentencepiece(config.spm_model_path), FLAGS.prompt,
                       FLAGS.n_words, FLAGS.temperature, FLAGS.top_k, FLAGS.seed,
                       FLAGS.stop_at_eos, backwards=config.backwards)
    print(text)


if __name__ == "__main__":
    flags.DEFINE_string("model_dir", None, "A language model's directory (trainer.main, "
                        "trainer.convert_fastai) or checkpoint prefix.", required=True)
    flags.DEFINE_string("prompt", "", "The text to continue.")
    flags.DEFINE_integer("n_words", 50, "New words to generate.", lower_bound=0)
    flags.DEFINE_float("temperature", 0.75, "Below 1: likelier pieces; above: more varied.",
                       lower_bound=1e-3)
    flags.DEFINE_integer("top_k", None, "Sample only from the k likeliest pieces.", lower_bound=1)
    flags.DEFINE_integer("seed", 0, "The same seed gives the same text.")
    flags.DEFINE_boolean("stop_at_eos", False, "Stop at the end of the document.")
    run_tool(main)
