"""The seed's flow: weights from fastai, then the seed README's two calls as written, then
fine-tuning the imported model in TF (LM fine-tuning and a classifier, pretrained or scratch)."""
import json
from unittest import mock
import shutil

import gin
import numpy as np
import pytest
import sentencepiece as spm
import tensorflow as tf

from test_convert_fastai import EMB, HIDDEN, LAYERS, VOCAB, synthetic_state_dict
from trainer.checkpoints.pretrained import load_pretrained_config
from trainer.convert_fastai import import_fastai, save_state_dict

WORDS = [f"w{k} piece{k % 7} token{k % 13} text" for k in range(300)]


@pytest.fixture(scope="module")
def fastai_import(tmp_path_factory):
    """(model directory imported from a fastai state_dict, its SentencePiece model, corpus)."""
    root = tmp_path_factory.mktemp("fastai")
    spm.SentencePieceTrainer.train(sentence_iterator=iter(WORDS), model_prefix=str(root / "sp"),
                                   vocab_size=VOCAB, unk_id=0, pad_id=1, bos_id=2, eos_id=3,
                                   minloglevel=2)
    save_state_dict(synthetic_state_dict(), str(root / "lm.npz"))
    imported = import_fastai(str(root / "lm.npz"), str(root / "sp.model"), str(root / "model"))
    corpus = root / "corpus.txt"
    corpus.write_text("\n\n".join(" ".join(WORDS[i:i + 5]) for i in range(0, 300, 2)))
    return imported, str(root / "sp.model"), str(corpus)


def test_the_seed_readme_calls_as_written(fastai_import, tmp_path, monkeypatch):
    from trainer.models.ulmfit_encoder import tf2_ulmfit_encoder
    from trainer.models.ulmfit_tagger import ulmfit_sequence_tagger
    imported, spm_model, _ = fastai_import
    shutil.copy(spm_model, tmp_path / "pl_wiki100-sp35k.model")
    monkeypatch.chdir(tmp_path)
    fixed_seq_len, spm_model_file = 200, "pl_wiki100-sp35k.model"
    CP_PATH = imported  # noqa: N806  (the seed README's name)

    # The seed README, verbatim but for a stray backtick inside its parentheses:
    lm_model_num, encoder_num, outmask_num, spm_encoder_model = tf2_ulmfit_encoder(fixed_seq_len, spm_model_file)
    tagger, spm_proc = ulmfit_sequence_tagger(num_classes=3, \
                       pretrained_weights=CP_PATH, \
                       fixed_seq_len=768, \
                       spm_model_file='pl_wiki100-sp35k.model', \
                       also_return_spm_encoder=True)  # noqa: E127,E502

    ids = spm_encoder_model(tf.constant(["w1 piece1 token1 text"]))
    assert ids.shape == (1, 200) and ids[0, 0] == 2 and ids[0, -1] == 1
    # No weights given: fastai's default size over the SentencePiece model's vocabulary.
    assert encoder_num(ids).shape == (1, 200, 400)
    assert lm_model_num(ids).shape == (1, 200, VOCAB)
    assert outmask_num(ids).numpy().sum() == int(np.sum(ids.numpy() != 1))
    tag_ids = spm_proc(tf.constant(["w1 piece1 token1 text", "w2"]))
    assert tag_ids.shape == (2, 768) and tagger(tag_ids).shape == (2, 768, 3)
    embedding = [w for w in tagger.weights if "embeddings" in w.path][0]
    np.testing.assert_array_equal(embedding.numpy(), synthetic_state_dict()["0.encoder.weight"])


def test_an_import_written_before_pad_id_was_recorded_still_loads(fastai_import, tmp_path):
    model_dir = shutil.copytree(fastai_import[0], tmp_path / "old")
    with open(model_dir / "lm_config.json") as f:
        config = json.load(f)
    config["model"] = {k: config["model"][k]
                       for k in ("vocab_size", "emb_size", "hidden_size", "num_layers")}
    with open(model_dir / "lm_config.json", "w") as f:
        json.dump(config, f)
    assert load_pretrained_config(str(model_dir)).shape == {
        "vocab_size": VOCAB, "emb_size": EMB, "hidden_size": HIDDEN, "num_layers": LAYERS,
        "pad_id": 1}


def test_an_imported_model_fine_tunes_as_a_language_model(fastai_import, tmp_path):
    from trainer.configurables import train_lm  # as finetune_lm.gin configures it
    imported, _, corpus = fastai_import
    with gin.unlock_config():
        gin.parse_config_files_and_bindings(["gin_configs/finetune_lm.gin"], [
            f"train_lm.init_from = '{imported}'", f"train_lm.data_dir = '{tmp_path}/data'",
            f"train_lm.build_input = '{corpus}'", "BuildSettings.valid_fraction = 0.2",
            "train_lm.batch_size = 4", "train_lm.bptt = 8", "train_lm.eval_batch_size = 4",
            "train_lm.steps_per_loop = 1", "train_lm.max_steps = 2"])
    try:
        metrics = train_lm(str(tmp_path / "lm"))
    finally:
        gin.clear_config()
    assert metrics["step"] == 2 and np.isfinite(metrics["valid_loss"])
    reader = tf.train.load_checkpoint(str(tmp_path / "lm"))
    embedding = reader.get_tensor("model/encoder..embedding..embeddings/.ATTRIBUTES/VARIABLE_VALUE")
    start = synthetic_state_dict()["0.encoder.weight"]
    # Started from the imported weights (two small Adam steps away), not from random ones.
    assert embedding.shape == start.shape and 0 < np.abs(embedding - start).max() < 0.05


@pytest.mark.parametrize("from_scratch", [False, True], ids=["pretrained", "from_scratch"])
def test_an_imported_model_fine_tunes_as_a_classifier(fastai_import, tmp_path, from_scratch):
    from trainer.fine_tuning.classification import train_classifier
    imported, _, _ = fastai_import
    rows = [{"text": WORDS[i], "label": str(i % 2)} for i in range(24)]
    files = {}
    for split in ("train", "valid", "test"):
        files[split] = str(tmp_path / f"{split}.jsonl")
        with open(files[split], "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    metrics = train_classifier(str(tmp_path / "classifier"), pretrained=imported, files=files,
                               from_scratch=from_scratch, epochs=1, batch_size=8, max_len=16)
    assert metrics["labels"] == ["0", "1"] and metrics["from_scratch"] == from_scratch
    reader = tf.train.load_checkpoint(str(tmp_path / "classifier" / "weights"))
    shapes = {k: v for k, v in reader.get_variable_to_shape_map().items() if "embeddings" in k}
    assert list(shapes.values()) == [[VOCAB, EMB]]
    embedding = reader.get_tensor(next(iter(shapes)))
    start = synthetic_state_dict()["0.encoder.weight"]
    assert (np.abs(embedding - start).max() < 0.1) != from_scratch


def test_the_seed_flow_compiles_for_cudnn_on_a_gpu_host(fastai_import):
    """tagger.compile(...) as the seed writes it, on a GPU host: Keras' jit_compile="auto" would
    turn XLA on and send the LSTM to the fused kernel; the layers say cuDNN cannot run under
    XLA, so XLA stays off and the train step traces cuDNN's LSTM."""
    from test_export import a_gpu_reported
    from trainer.models.ulmfit_tagger import ulmfit_sequence_tagger
    real = tf.config.list_physical_devices

    def physical(device_type=None):  # Keras' "auto" asks for any device but the CPU
        found = real(device_type)
        return found + [tf.config.PhysicalDevice("/physical_device:GPU:0", "GPU")] \
            if device_type in (None, "GPU") else found
    with a_gpu_reported(), mock.patch.object(tf.config, "list_physical_devices", physical), \
            mock.patch("tensorflow.python.framework.config.is_op_determinism_enabled",
                       return_value=False):
        tagger = ulmfit_sequence_tagger(num_classes=3, pretrained_weights=fastai_import[0],
                                        fixed_seq_len=16, spm_model_file=fastai_import[1])
        tagger.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        assert tagger.jit_compile is False
        step = tf.function(lambda ids: tagger(ids, training=True))
        graph = step.get_concrete_function(tf.TensorSpec([2, 16], tf.int32)).graph.as_graph_def()
    ops = {n.op for n in graph.node} | {n.op for f in graph.library.function for n in f.node_def}
    assert "CudnnRNNV3" in ops
