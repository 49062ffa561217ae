"""The AWD-LSTM encoder (Merity et al. 2017) as fastai builds it.

embedding (+ embedding dropout) -> locked input dropout -> LSTM_1 -> locked hidden dropout ->
... -> LSTM_n. The last LSTM has emb_size units so a decoder can be tied to the embedding.
The encoder is stateful by argument: `call(ids, states, ...)` returns the new states, and the
caller decides what to carry.
"""
import keras
import tensorflow as tf

from trainer.models.dropouts import EmbeddingDropout, LockedDropout
from trainer.models.weight_drop_lstm import WeightDropLSTM

# Sub-seed slots: each dropout of a step folds its own constant into the step's seed.
_EMBED_SEED, _INPUT_SEED, _HIDDEN_SEED, _WEIGHT_SEED = 1, 2, 100, 200


def sub_seed(seed, slot):
    return tf.random.experimental.stateless_fold_in(seed, slot)


class AWDLSTMEncoder(keras.layers.Layer):
    """Sizes and dropouts as in trainer/models/config.py (no defaults here: one place has them)."""

    def __init__(self, vocab_size, emb_size, hidden_size, num_layers, pad_id, hidden_p, input_p,
                 embed_p, weight_p, **kwargs):
        super().__init__(**kwargs)
        self.config = dict(vocab_size=vocab_size, emb_size=emb_size, hidden_size=hidden_size,
                           num_layers=num_layers, pad_id=pad_id, hidden_p=hidden_p,
                           input_p=input_p, embed_p=embed_p, weight_p=weight_p)
        self.embedding = keras.layers.Embedding(
            vocab_size, emb_size, name="embedding",
            embeddings_initializer=keras.initializers.RandomUniform(-0.1, 0.1))
        self.embedding_dropout = EmbeddingDropout(self.embedding, embed_p, pad_id,
                                                  name="embedding_dropout")
        self.input_dropout = LockedDropout(input_p, name="input_dropout")
        self.units = [hidden_size] * (num_layers - 1) + [emb_size]
        self.rnns = [WeightDropLSTM(units, weight_p, name=f"lstm_{i}")
                     for i, units in enumerate(self.units)]
        self.hidden_dropouts = [LockedDropout(hidden_p, name=f"hidden_dropout_{i}")
                                for i in range(num_layers - 1)]
        self.seed_generator = keras.random.SeedGenerator(name="dropout_seeds")

    def build(self, input_shape):
        # Every row uniform, the padding row too: fastai builds nn.Embedding(padding_idx=pad_id),
        # which zeroes that row, then re-initializes the whole matrix uniformly.
        self.embedding.build(input_shape)
        size = self.embedding.output_dim
        for rnn in self.rnns:
            rnn.build((None, None, size))
            size = rnn.units

    def initial_states(self, batch_size, dtype=tf.float32):
        return [(tf.zeros([batch_size, u], dtype), tf.zeros([batch_size, u], dtype))
                for u in self.units]

    def call(self, ids, states=None, training=False, seed=None):
        """ids [batch, time] -> (last layer's outputs [batch, time, emb_size], new states).

        `seed` ([2] int) draws every dropout mask of this batch; without one, training draws
        from the layer's own seed generator (convenient for `.fit()`, not per replica).
        """
        if states is None:
            states = self.initial_states(tf.shape(ids)[0], self.compute_dtype)
        states = [tuple(tf.cast(s, self.compute_dtype) for s in pair) for pair in states]
        if training and seed is None:
            seed = tf.cast(self.seed_generator.next(), tf.int32)
        s = (lambda slot: sub_seed(seed, slot)) if training else (lambda slot: None)
        x = self.embedding_dropout(ids, training=training, seed=s(_EMBED_SEED))
        x = self.input_dropout(x, training=training, seed=s(_INPUT_SEED))
        new_states = []
        for i, rnn in enumerate(self.rnns):
            x, state = rnn(x, states[i], training=training, seed=s(_WEIGHT_SEED + i))
            new_states.append(state)
            if i < len(self.hidden_dropouts):
                x = self.hidden_dropouts[i](x, training=training, seed=s(_HIDDEN_SEED + i))
        return x, new_states

    def get_config(self):
        return {**super().get_config(), **self.config}
