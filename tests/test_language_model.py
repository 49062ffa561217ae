"""The AWD-LSTM LM: defaults, tied decoder, stateful calls, inference without dropout."""
import numpy as np
import pytest
import tensorflow as tf

from trainer.models.activation_regularization import activation_regularization
from trainer.models.config import AWD_LSTM_LM_CONFIG, DROPOUTS
from trainer.models.language_model import AWDLSTMLanguageModel

SMALL = dict(emb_size=8, hidden_size=16, num_layers=3)


def _model(**kw):
    model = AWDLSTMLanguageModel(50, **{**SMALL, **kw})
    model(tf.zeros([2, 5], tf.int32))
    return model


def test_defaults_are_fastai_awd_lstm_lm_config():
    config = AWDLSTMLanguageModel(100).get_config()
    assert config == dict(vocab_size=100, output_p=0.1, emb_size=400, hidden_size=1152,
                          num_layers=3, pad_id=1, hidden_p=0.15, input_p=0.25, embed_p=0.02,
                          weight_p=0.2)
    assert config == dict(vocab_size=100, **AWD_LSTM_LM_CONFIG)  # where the numbers live


def test_drop_mult_scales_the_five_dropouts_set_or_default():
    config = AWDLSTMLanguageModel(100, drop_mult=0.3, hidden_p=0.5).get_config()
    expected = {**AWD_LSTM_LM_CONFIG, "hidden_p": 0.5}
    for key in DROPOUTS:
        assert abs(config[key] - 0.3 * expected[key]) < 1e-12, key
    assert config["emb_size"] == AWD_LSTM_LM_CONFIG["emb_size"]
    with pytest.raises(TypeError, match=r"Unknown AWD-LSTM setting\(s\) \['hiden_p'\]"):
        AWDLSTMLanguageModel(100, hiden_p=0.1)


def test_decoder_is_the_embedding_variable():
    model = _model()
    matrices = [v for v in model.trainable_variables if tuple(v.shape) == (50, 8)]
    assert len(matrices) == 1 and matrices[0] is model.encoder.embedding.embeddings
    ids = tf.constant([[4, 5, 6]])
    model.decoder_bias.assign(tf.random.normal([50]))
    logits, _, raw, _ = model(ids, training=False)
    expected = tf.einsum("bte,ve->btv", raw, model.encoder.embedding.embeddings) \
        + model.decoder_bias
    np.testing.assert_allclose(logits, expected, atol=1e-6)
    with tf.GradientTape() as tape:
        logits = model(ids, training=False)[0]
    gradient = tf.convert_to_tensor(tape.gradient(logits, matrices[0]))
    # Word 40 is not in the input: only the tied decoder can give its row a gradient.
    assert float(tf.reduce_sum(tf.abs(gradient[40]))) > 0
    # As fastai: the padding row starts uniform like every row, and its lookup gives it no
    # gradient (nn.Embedding's padding_idx); the tied decoder does, as above.
    assert np.abs(model.encoder.embedding.embeddings[1]).min() > 0
    with tf.GradientTape() as tape:
        hidden, _ = model.encoder(tf.constant([[1, 1, 4]]), training=True, seed=tf.constant([1, 2]))
    gradient = tf.convert_to_tensor(tape.gradient(hidden, matrices[0]))
    assert float(tf.reduce_sum(tf.abs(gradient[1]))) == 0
    assert float(tf.reduce_sum(tf.abs(gradient[4]))) > 0


def test_inference_has_no_dropout():
    model = _model(output_p=0.5, hidden_p=0.5, input_p=0.5, embed_p=0.5, weight_p=0.5)
    plain = _model(output_p=0, hidden_p=0, input_p=0, embed_p=0, weight_p=0)
    plain.set_weights(model.get_weights())
    ids = tf.constant([[4, 5, 6, 7], [8, 9, 10, 11]])
    reference = plain(ids, training=True, seed=tf.constant([1, 2]))[0]
    np.testing.assert_allclose(model(ids, training=False)[0], reference, atol=1e-6)
    trained = model(ids, training=True, seed=tf.constant([1, 2]))[0]
    assert np.abs(trained - reference).max() > 1e-3


def test_state_carry_two_halves_equal_one_whole():
    model = _model(output_p=0, hidden_p=0, input_p=0, embed_p=0, weight_p=0)
    ids = tf.random.uniform([3, 12], 0, 50, tf.int32)
    whole, whole_states, _, _ = model(ids, training=False)
    first, states, _, _ = model(ids[:, :6], training=False)
    second, second_states, _, _ = model(ids[:, 6:], states, training=False)
    np.testing.assert_allclose(tf.concat([first, second], 1), whole, atol=1e-5)
    for (h1, c1), (h2, c2) in zip(whole_states, second_states):
        np.testing.assert_allclose(h1, h2, atol=1e-6)
        np.testing.assert_allclose(c1, c2, atol=1e-6)


def test_ar_tar_as_fastai():
    raw = tf.constant([[[1.0], [3.0], [6.0]]])
    dropped = tf.constant([[[2.0], [0.0], [0.0]]])
    # AR: 2 * mean(4, 0, 0) = 8/3; TAR: 1 * mean(2^2, 3^2) = 6.5
    np.testing.assert_allclose(activation_regularization(raw, dropped, 2.0, 1.0), 8 / 3 + 6.5)
