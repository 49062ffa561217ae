"""The seed's encoder API and the SavedModel / TF Hub export."""
import contextlib
import json
import os
import subprocess
import sys
import textwrap
from unittest import mock

import numpy as np
import pytest
import sentencepiece as spm
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from trainer.checkpoints.pretrained import PretrainedModelError
from trainer.export import export
from trainer.models.pretrained_lm import load_language_model
from trainer.models.ulmfit_encoder import tf2_ulmfit_encoder

TEXTS = ["the model reads tokens and predicts the next one",
         "dropout on weights",
         "a hidden state carries context from batch to batch so long documents are learned"]


def python_ids(spm_model_file, texts, length=None):
    """Reference ids from the Python SentencePiece: BOS + pieces + EOS, right-padded with 1."""
    processor = spm.SentencePieceProcessor(model_file=spm_model_file)
    rows = [[2] + processor.encode(t) + [3] for t in texts]
    length = length or max(map(len, rows))
    return np.array([(r + [1] * length)[:length] for r in rows], np.int32)


@pytest.fixture(scope="module")
def spm_file(pretrained_lm):
    return os.path.join(pretrained_lm[1], "spm.model")


@pytest.mark.parametrize("fixed_seq_len", [None, 8])
def test_encoder_api_returns_the_seeds_four_models(pretrained_lm, spm_file, fixed_seq_len):
    lm_num, encoder_num, mask_num, spm_encoder = tf2_ulmfit_encoder(
        fixed_seq_len=fixed_seq_len, spm_model_file=spm_file, pretrained_weights=pretrained_lm[0])
    ids = spm_encoder(tf.constant(TEXTS)).numpy()
    np.testing.assert_array_equal(ids, python_ids(spm_file, TEXTS, fixed_seq_len))
    np.testing.assert_array_equal(mask_num(ids).numpy(), ids != 1)
    reference, _ = load_language_model(pretrained_lm[0])
    hidden, _ = reference.encoder(ids)
    np.testing.assert_allclose(encoder_num(ids).numpy(), hidden.numpy(), atol=1e-6)
    np.testing.assert_allclose(lm_num(ids).numpy(), reference(ids)[0].numpy(), atol=1e-6)
    # One set of weights behind the LM and the encoder.
    assert {id(v) for v in encoder_num.weights} <= {id(v) for v in lm_num.weights}


def test_padding_after_a_text_leaves_its_states_alone(pretrained_lm, spm_file):
    _, encoder_num, _, spm_encoder = tf2_ulmfit_encoder(
        spm_model_file=spm_file, pretrained_weights=pretrained_lm[0])
    batch = encoder_num(spm_encoder(tf.constant(TEXTS))).numpy()
    alone = encoder_num(spm_encoder(tf.constant(TEXTS[1:2]))).numpy()
    np.testing.assert_allclose(batch[1, :alone.shape[1]], alone[0], atol=1e-6)


def test_another_vocabulary_is_refused_naming_both_files(pretrained_lm, tmp_path):
    other = tmp_path / "other.model"
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TEXTS * 20), model_prefix=str(tmp_path / "other"), vocab_size=40,
        unk_id=0, pad_id=1, bos_id=2, eos_id=3)
    with pytest.raises(PretrainedModelError) as error:
        tf2_ulmfit_encoder(spm_model_file=str(other), pretrained_weights=pretrained_lm[0])
    assert str(other) in str(error.value)
    assert os.path.join(pretrained_lm[0], "spm.model") in str(error.value)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(PretrainedModelError, match="no checkpoint"):
        load_language_model(str(tmp_path))


@pytest.fixture(scope="module", params=[None, 8], ids=["variable_length", "fixed_length"])
def exported(request, pretrained_lm, tmp_path_factory):
    output = str(tmp_path_factory.mktemp("export") / "saved_model")
    return export(pretrained_lm[0], output, request.param), request.param


def test_signatures_are_present_and_typed(exported):
    path, fixed_seq_len = exported
    loaded = tf.saved_model.load(path)
    signatures = loaded.signatures
    assert set(signatures) == {"string_encoder", "numericalized_encoder", "spm_processor",
                               "lm_head"}
    text_spec = signatures["string_encoder"].structured_input_signature[1]["text"]
    assert text_spec.dtype == tf.string and text_spec.shape.as_list() == [None]
    ids_spec = signatures["numericalized_encoder"].structured_input_signature[1]["ids"]
    assert ids_spec.dtype == tf.int32 and ids_spec.shape.as_list() == [None, fixed_seq_len]
    outputs = signatures["string_encoder"].structured_outputs
    assert outputs["hidden"].dtype == tf.float32 and outputs["mask"].dtype == tf.bool
    assert signatures["spm_processor"].structured_outputs["ids"].dtype == tf.int32
    assert signatures["lm_head"].structured_outputs["logits"].shape.as_list()[-1] == 90


def test_reloaded_outputs_equal_the_keras_model(exported, pretrained_lm, spm_file):
    path, fixed_seq_len = exported
    loaded = tf.saved_model.load(path)
    reference, _ = load_language_model(pretrained_lm[0])
    ids = python_ids(spm_file, TEXTS, fixed_seq_len)
    processed = loaded.signatures["spm_processor"](text=tf.constant(TEXTS))
    np.testing.assert_array_equal(processed["ids"].numpy(), ids)
    np.testing.assert_array_equal(processed["mask"].numpy(), ids != 1)
    hidden = reference.encoder(ids)[0].numpy()
    from_strings = loaded.signatures["string_encoder"](text=tf.constant(TEXTS))
    from_ids = loaded.signatures["numericalized_encoder"](ids=tf.constant(ids))
    np.testing.assert_allclose(from_strings["hidden"].numpy(), hidden, atol=1e-6)
    np.testing.assert_array_equal(from_strings["hidden"].numpy(), from_ids["hidden"].numpy())
    np.testing.assert_array_equal(from_strings["mask"].numpy(), ids != 1)
    logits = loaded.signatures["lm_head"](ids=tf.constant(ids))["logits"].numpy()
    np.testing.assert_allclose(logits, reference(ids)[0].numpy(), atol=1e-6)
    np.testing.assert_allclose(loaded(tf.constant(TEXTS)).numpy(), hidden, atol=1e-6)


@pytest.mark.heavy
def test_loads_as_a_hub_keras_layer_without_this_package(exported, pretrained_lm, tmp_path):
    path, fixed_seq_len = exported
    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np
        import tensorflow as tf
        import tensorflow_hub as hub
        import tensorflow_text  # registers the SentencePiece op
        texts = tf.constant({json.dumps(TEXTS)})
        hidden = hub.KerasLayer({path!r})(texts)
        states = hub.KerasLayer({path!r}, signature="string_encoder",
                                signature_outputs_as_dict=True)(texts)
        np.save({str(tmp_path / "hidden.npy")!r}, hidden.numpy())
        np.save({str(tmp_path / "mask.npy")!r}, states["mask"].numpy())
        assert not [m for m in sys.modules if m.split(".")[0] in ("trainer", "data_pipeline", "common")]
    """)
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    reference, _ = load_language_model(pretrained_lm[0])
    ids = python_ids(os.path.join(pretrained_lm[0], "spm.model"), TEXTS, fixed_seq_len)
    np.testing.assert_allclose(np.load(tmp_path / "hidden.npy"),
                               reference.encoder(ids)[0].numpy(), atol=1e-6)
    np.testing.assert_array_equal(np.load(tmp_path / "mask.npy"), ids != 1)


def graph_ops_and_xla(saved_model):
    """(op types in the SavedModel's graph and functions, names of functions XLA must compile)."""
    proto = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(os.path.join(saved_model, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    graph = proto.meta_graphs[0].graph_def
    functions = graph.library.function
    ops = {n.op for n in graph.node} | {n.op for f in functions for n in f.node_def}
    return ops, [f.signature.name for f in functions if f.attr["_XlaMustCompile"].b]


@contextlib.contextmanager
def a_gpu_reported():
    """The device query reports a GPU, as on a GPU host: Keras and the kernel choice then trace
    cuDNN's LSTM unless told otherwise."""
    real = tf.config.list_logical_devices

    def devices(device_type=None):
        if device_type == "GPU":
            return [tf.config.LogicalDevice("/device:GPU:0", "GPU")]
        return real(device_type)
    with mock.patch.object(tf.config, "list_logical_devices", devices):
        yield


@pytest.mark.heavy
def test_an_export_made_on_a_gpu_host_serves_on_a_cpu_host(pretrained_lm, tmp_path):
    """No cuDNN op (no CPU kernel) and no XLA-compiled function (TF Serving would need XLA);
    a fresh CPU-only process gets the Keras model's outputs."""
    output = str(tmp_path / "saved_model")
    with a_gpu_reported():
        export(pretrained_lm[0], output)
    ops, compiled = graph_ops_and_xla(output)
    assert "StatefulPartitionedCall" in ops and not [op for op in ops if "Cudnn" in op]
    assert not compiled
    script = textwrap.dedent(f"""
        import numpy as np, tensorflow as tf, tensorflow_text
        loaded = tf.saved_model.load({output!r})
        np.save("hidden.npy", loaded.signatures["string_encoder"](
            text=tf.constant({json.dumps(TEXTS)}))["hidden"].numpy())
    """)
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path,
                   env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"})
    reference, _ = load_language_model(pretrained_lm[0])
    ids = python_ids(os.path.join(pretrained_lm[0], "spm.model"), TEXTS)
    np.testing.assert_allclose(np.load(tmp_path / "hidden.npy"),
                               reference.encoder(ids)[0].numpy(), atol=1e-6)


def test_export_refuses_an_existing_output(pretrained_lm, tmp_path):
    with pytest.raises(PretrainedModelError, match="nothing was written"):
        export(pretrained_lm[0], str(tmp_path))


def test_pretraining_writes_a_loadable_config(pretrained_lm):
    with open(os.path.join(pretrained_lm[0], "lm_config.json")) as f:
        config = json.load(f)
    assert config["model"]["emb_size"] == 12 and config["model"]["num_layers"] == 2
    assert config["special_ids"] == {"unk": 0, "pad": 1, "bos": 2, "eos": 3}
