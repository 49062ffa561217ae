"""fastai AWD_LSTM weights in and out: the same ids give the same logits, round trips are exact."""
import numpy as np
import pytest
import sentencepiece as spm

from trainer.checkpoints.pretrained import PretrainedModelError, model_checkpoint
from trainer.convert_fastai import export_fastai, import_fastai, load_state_dict, save_state_dict
from trainer.models.pretrained_lm import load_language_model
VOCAB, EMB, HIDDEN, LAYERS = 40, 8, 12, 3


def synthetic_state_dict(seed=0, vocab=VOCAB):
    """fastai's get_language_model(AWD_LSTM, vocab) state_dict layout, random values."""
    rng = np.random.default_rng(seed)
    normal = lambda *shape: rng.normal(0, 0.5, shape).astype(np.float32)
    embedding = normal(vocab, EMB)
    sd = {"0.encoder.weight": embedding, "0.encoder_dp.emb.weight": embedding}
    sizes = [EMB] + [HIDDEN] * (LAYERS - 1) + [EMB]
    for i in range(LAYERS):
        n_in, n_out = sizes[i], sizes[i + 1]
        sd.update({f"0.rnns.{i}.weight_hh_l0_raw": normal(4 * n_out, n_out),
                   f"0.rnns.{i}.module.weight_ih_l0": normal(4 * n_out, n_in),
                   f"0.rnns.{i}.module.bias_ih_l0": normal(4 * n_out),
                   f"0.rnns.{i}.module.bias_hh_l0": normal(4 * n_out)})
    sd.update({"1.decoder.weight": embedding, "1.decoder.bias": normal(vocab)})
    return sd


def numpy_fastai_logits(sd, ids):
    """fastai's AWD_LSTM LM in eval mode, written out with PyTorch's LSTM equations in NumPy."""
    sigmoid = lambda z: 1 / (1 + np.exp(-z))
    x = sd["0.encoder.weight"][ids].astype(np.float64)
    for i in range(sum(k.endswith("weight_hh_l0_raw") for k in sd)):
        w_ih, w_hh = sd[f"0.rnns.{i}.module.weight_ih_l0"], sd[f"0.rnns.{i}.weight_hh_l0_raw"]
        b = sd[f"0.rnns.{i}.module.bias_ih_l0"] + sd[f"0.rnns.{i}.module.bias_hh_l0"]
        h = np.zeros((ids.shape[0], w_hh.shape[1]))
        c, outputs = np.zeros_like(h), []
        for t in range(ids.shape[1]):
            gates = x[:, t] @ w_ih.T + h @ w_hh.T + b  # PyTorch order: i, f, g, o
            i_g, f_g, g_g, o_g = np.split(gates, 4, axis=-1)
            c = sigmoid(f_g) * c + sigmoid(i_g) * np.tanh(g_g)
            h = sigmoid(o_g) * np.tanh(c)
            outputs.append(h)
        x = np.stack(outputs, 1)
    return x @ sd["1.decoder.weight"].T + sd["1.decoder.bias"]


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory):
    prefix = tmp_path_factory.mktemp("spm") / "fastai"
    words = [f"w{k} piece{k % 7} token{k % 13} text" for k in range(300)]
    spm.SentencePieceTrainer.train(sentence_iterator=iter(words), model_prefix=str(prefix),
                                   vocab_size=VOCAB, unk_id=0, pad_id=1, bos_id=2, eos_id=3,
                                   minloglevel=2)
    return f"{prefix}.model"


@pytest.fixture
def imported(tmp_path, spm_model):
    sd = synthetic_state_dict()
    save_state_dict(sd, str(tmp_path / "lm.npz"))
    return sd, import_fastai(str(tmp_path / "lm.npz"), spm_model, str(tmp_path / "model"))


IDS = np.random.default_rng(1).integers(0, VOCAB, (3, 9))


def test_imported_weights_give_pytorchs_logits(imported):
    sd, model_dir = imported
    model, config = load_language_model(model_dir)
    assert (config.model["emb_size"], config.model["hidden_size"],
            config.model["num_layers"]) == (EMB, HIDDEN, LAYERS)
    logits = model(IDS)[0].numpy()
    assert np.abs(logits - numpy_fastai_logits(sd, IDS)).max() <= 1e-5


def test_import_export_round_trip_is_exact(imported, tmp_path):
    sd, model_dir = imported
    exported = load_state_dict(export_fastai(model_dir, str(tmp_path / "back.npz")))
    assert sorted(exported) == sorted(sd)
    for key in sd:
        np.testing.assert_array_equal(exported[key], sd[key], err_msg=key)


def test_export_of_a_trained_bias_keeps_the_sum(imported, tmp_path):
    _, model_dir = imported
    model, _ = load_language_model(model_dir)
    bias = model.encoder.rnns[1].cell.bias
    bias.assign(bias + 0.25)  # as training would
    model_checkpoint(model).write(str(tmp_path / "model" / "trained"))
    exported = load_state_dict(export_fastai(str(tmp_path / "model" / "trained"),
                                             str(tmp_path / "trained.npz")))
    np.testing.assert_allclose(exported["0.rnns.1.module.bias_ih_l0"]
                               + exported["0.rnns.1.module.bias_hh_l0"], bias.numpy(), atol=1e-6)


def test_our_trained_model_exports_to_matching_logits(pretrained_lm, tmp_path):
    """A model trained here (single Keras bias) exports with bias_hh = 0 and the same outputs."""
    sd = load_state_dict(export_fastai(pretrained_lm[0], str(tmp_path / "ours.npz")))
    model, _ = load_language_model(pretrained_lm[0])
    ids = IDS % model.get_config()["vocab_size"]
    np.testing.assert_allclose(
        numpy_fastai_logits(sd, ids), model(ids)[0].numpy(), atol=1e-5)


def test_bad_inputs_are_named(tmp_path, spm_model):
    sd = synthetic_state_dict()
    del sd["0.rnns.2.module.bias_hh_l0"]
    save_state_dict(sd, str(tmp_path / "partial.npz"))
    with pytest.raises(PretrainedModelError, match=r"partial\.npz.*rnns\.2\.module\.bias_hh_l0"):
        import_fastai(str(tmp_path / "partial.npz"), spm_model, str(tmp_path / "a"))
    untied = synthetic_state_dict()
    untied["1.decoder.weight"] = untied["1.decoder.weight"] + 1
    save_state_dict(untied, str(tmp_path / "untied.npz"))
    with pytest.raises(PretrainedModelError, match="decoder.weight differs"):
        import_fastai(str(tmp_path / "untied.npz"), spm_model, str(tmp_path / "b"))
    save_state_dict(synthetic_state_dict(vocab=VOCAB + 5), str(tmp_path / "big.npz"))
    with pytest.raises(PretrainedModelError, match=f"{VOCAB} pieces .* {VOCAB + 5} rows"):
        import_fastai(str(tmp_path / "big.npz"), spm_model, str(tmp_path / "c"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_parity_with_torch_itself(imported, tmp_path):
    torch = pytest.importorskip("torch", reason="torch is not installed (pip install -e "
                                ".[fastai]); the NumPy reference test covers the equations")
    sd, model_dir = imported
    save_state_dict(sd, str(tmp_path / "lm.pth"))
    reloaded = load_state_dict(str(tmp_path / "lm.pth"))  # the .pth path through torch.load
    assert all(np.array_equal(reloaded[k], sd[k]) for k in sd)
    t = {k: torch.from_numpy(v) for k, v in sd.items()}
    with torch.no_grad():
        x = torch.nn.functional.embedding(torch.from_numpy(IDS), t["0.encoder.weight"])
        for i in range(LAYERS):
            w_ih = t[f"0.rnns.{i}.module.weight_ih_l0"]
            lstm = torch.nn.LSTM(w_ih.shape[1], w_ih.shape[0] // 4, batch_first=True)
            lstm.load_state_dict({"weight_ih_l0": w_ih,
                                  "weight_hh_l0": t[f"0.rnns.{i}.weight_hh_l0_raw"],
                                  "bias_ih_l0": t[f"0.rnns.{i}.module.bias_ih_l0"],
                                  "bias_hh_l0": t[f"0.rnns.{i}.module.bias_hh_l0"]})
            x, _ = lstm(x)
        expected = torch.nn.functional.linear(x, t["1.decoder.weight"], t["1.decoder.bias"])
    model, _ = load_language_model(model_dir)
    assert np.abs(model(IDS)[0].numpy() - expected.numpy()).max() <= 1e-5


def test_parity_with_fastai(imported, tmp_path):
    awdlstm = pytest.importorskip("fastai.text.models.awdlstm",
                                  reason="fastai is not installed (pip install -e .[bench])")
    from fastai.text.models.core import get_language_model  # pylint: disable=g-import-not-at-top
    import torch  # pylint: disable=g-import-not-at-top
    _, model_dir = imported
    fastai_lm = get_language_model(awdlstm.AWD_LSTM, VOCAB, dict(
        awdlstm.awd_lstm_lm_config, emb_sz=EMB, n_hid=HIDDEN, n_layers=LAYERS))
    export_fastai(model_dir, str(tmp_path / "ours.pth"))
    fastai_lm.load_state_dict(torch.load(tmp_path / "ours.pth"), strict=True)
    fastai_lm.eval()
    fastai_lm.reset()
    with torch.no_grad():
        expected = fastai_lm(torch.from_numpy(IDS))[0].numpy()
    model, _ = load_language_model(model_dir)
    assert np.abs(model(IDS)[0].numpy() - expected).max() <= 1e-5
