"""Every user mistake a command-line tool meets ends in one `error:` line that names the file or
setting and a fix, exit status 1 (2 for a wrong command line), no traceback, and no file that
was there before changed or lost. Run as a user would: `python -m TOOL ...` in a subprocess."""
import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import write_corpus

TINY_LM = ["--gin_file=gin_configs/lm_training.gin", "--gin_param=train_lm.batch_size=4",
           "--gin_param=train_lm.bptt=10", "--gin_param=train_lm.eval_batch_size=4",
           "--gin_param=train_lm.steps_per_loop=1", "--gin_param=train_lm.max_steps=2",
           "--gin_param=AWDLSTMLanguageModel.emb_size=12",
           "--gin_param=AWDLSTMLanguageModel.hidden_size=20",
           "--gin_param=AWDLSTMLanguageModel.num_layers=2"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, cwd=ROOT):
    """As a user runs a tool: TF_CPP_MIN_LOG_LEVEL unset, so its output is filtered as theirs."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=600)


def digests(root):
    found = {}
    for directory, _, names in os.walk(root):
        for name in names:
            with open(os.path.join(directory, name), "rb") as f:
                found[os.path.join(directory, name)] = hashlib.sha256(f.read()).hexdigest()
    return found


def flip_byte(path, offset=None):
    with open(path, "r+b") as f:
        size = f.seek(0, 2)
        f.seek(size // 2 if offset is None else offset)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))


def first_shard(data_dir, split="train"):
    with open(os.path.join(data_dir, "manifest.json")) as f:
        return os.path.join(data_dir, json.load(f)["splits"][split]["shards"][0]["file"])


def write_jsonl(path, rows):
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return str(path)


def npz_state_dict(path, vocab, seed=0):
    from test_convert_fastai import synthetic_state_dict
    np.savez(path, **synthetic_state_dict(seed, vocab=vocab))
    return str(path)


# Each case: (tmp_path, pretrained_lm) -> (argv after `python -m`, text the error line must hold,
# exit status). It may create and damage files under tmp_path; none may change during the run.
def _gin_typo(tmp, lm):
    return (["trainer.main", *TINY_LM, f"--gin_param=train_lm.data_dir='{lm[1]}'",
             "--gin_param=train_lm.epoch=2", f"--model_dir={tmp}/m"],
            "doesn't have a parameter named 'epoch'", 1)


def _model_setting_typo(tmp, lm):
    return (["trainer.main", *TINY_LM, f"--gin_param=train_lm.data_dir='{lm[1]}'",
             "--gin_param=AWDLSTMLanguageModel.hiden_p=0.1", f"--model_dir={tmp}/m"],
            "'hiden_p'", 1)


def _binding_that_reaches_nothing(tmp, lm):
    return (["trainer.main", *TINY_LM, f"--gin_param=train_lm.data_dir='{lm[1]}'",
             "--gin_param=ulmfit_classifier.drop_mult=0.5", f"--model_dir={tmp}/m"],
            "gin: ulmfit_classifier.drop_mult \\(--gin_param\\) reaches nothing: nothing this "
            "job runs refers to @ulmfit_classifier. The job is train_lm: remove the binding", 1)


def _missing_gin_file(tmp, lm):
    return (["trainer.main", "--gin_file=gin_configs/smoek.gin", f"--model_dir={tmp}/m"],
            "--gin_file=gin_configs/smoek.gin: no such file", 1)


def _required_binding_unset(tmp, lm):
    return (["trainer.main", *TINY_LM, f"--model_dir={tmp}/m"], "train_lm.data_dir", 1)


def _missing_spm_model(tmp, lm):
    data = shutil.copytree(lm[1], tmp / "data")
    os.remove(data / "spm.model")
    return (["trainer.main", *TINY_LM, f"--gin_param=train_lm.data_dir='{data}'",
             f"--model_dir={tmp}/m"], f"{data}/spm.model: missing", 1)


def _unreadable_manifest(tmp, lm):
    data = shutil.copytree(lm[1], tmp / "data")
    (data / "manifest.json").write_text('{"format_version": 1, ')
    return (["data_pipeline.build", f"--output_dir={data}", "--verify"],
            f"{data}/manifest.json: not valid JSON .* python -m data_pipeline.build "
            f"--output_dir={data} --repair", 1)


def _valid_split_too_small(tmp, lm):
    return (["trainer.main", *TINY_LM, f"--gin_param=train_lm.data_dir='{lm[1]}'",
             "--gin_param=train_lm.eval_batch_size=400", f"--model_dir={tmp}/m"],
            "split 'valid' has .* train_lm.eval_batch_size 400 x train_lm.bptt 10", 1)


def _batch_not_divisible(tmp, lm):
    return (["trainer.main", *TINY_LM, "--gin_file=gin_configs/mirrored.gin",
             f"--gin_param=train_lm.data_dir='{lm[1]}'", "--gin_param=train_lm.batch_size=5",
             f"--model_dir={tmp}/m"], "train_lm.batch_size=5 must divide by the 2 replicas", 1)


def _split_without_documents_in_trainer(tmp, lm):
    corpus = write_corpus(tmp / "tiny.txt", 3)
    return (["trainer.main", *TINY_LM, f"--gin_param=train_lm.data_dir='{tmp}/data'",
             f"--gin_param=train_lm.build_input='{corpus}'",
             "--gin_param=BuildSettings.vocab_size=60", f"--model_dir={tmp}/m"],
            "split got no documents .* raise BuildSettings.valid_fraction", 1)


def _other_vocabulary_for_init_from(tmp, lm):
    other = write_corpus(tmp / "other.txt", 300, seed=7)
    run("data_pipeline.build", f"--input={other}", f"--output_dir={tmp}/other",
        "--vocab_size=70")
    return (["trainer.main", "--gin_file=gin_configs/finetune_lm.gin", *TINY_LM[1:],
             f"--gin_param=train_lm.init_from='{lm[0]}'",
             f"--gin_param=train_lm.data_dir='{tmp}/other'", f"--model_dir={tmp}/m"],
            f"{tmp}/other/spm.model is not the SentencePiece model of the pretrained weights", 1)


def _diverging_learning_rate(tmp, lm):
    return (["trainer.main", *TINY_LM, f"--gin_param=train_lm.data_dir='{lm[1]}'",
             "--gin_param=one_cycle.max_lr=1e30", "--gin_param=train_lm.max_steps=20",
             f"--model_dir={tmp}/m"],
            r"loss is .* at step \d+.*; stopped without saving\. .*Lower the learning rate "
            r"\(one_cycle\.max_lr\)", 1)


def _export_missing_checkpoint(tmp, lm):
    return (["trainer.export", f"--checkpoint={tmp}/nothing", f"--output={tmp}/out"],
            f"{tmp}/nothing: neither a model directory nor a checkpoint prefix", 1)


def _export_existing_output(tmp, lm):
    (tmp / "out").mkdir()
    return (["trainer.export", f"--checkpoint={lm[0]}", f"--output={tmp}/out"],
            f"{tmp}/out: exists; pass a new --output", 1)


def _export_without_flags(tmp, lm):
    return ["trainer.export"], "--checkpoint", 2


def _import_vocabulary_mismatch(tmp, lm):
    state_dict = npz_state_dict(tmp / "lm.npz", vocab=33)
    return (["trainer.convert_fastai", "import", f"--state_dict={state_dict}",
             f"--spm_model={lm[0]}/spm.model", f"--output={tmp}/imported"],
            f"spm.model has 90 pieces but the embedding of {state_dict} has 33 rows", 1)


def _import_not_a_state_dict(tmp, lm):
    (tmp / "notes.npz").write_bytes(b"these are my notes, not weights")
    return (["trainer.convert_fastai", "import", f"--state_dict={tmp}/notes.npz",
             f"--spm_model={lm[0]}/spm.model", f"--output={tmp}/imported"],
            f"{tmp}/notes.npz: not a state_dict", 1)


def _import_not_a_pth(tmp, lm):
    pytest.importorskip("torch")
    (tmp / "lm.pth").write_bytes(b"PK\x03\x04 not really a zip")
    return (["trainer.convert_fastai", "import", f"--state_dict={tmp}/lm.pth",
             f"--spm_model={lm[0]}/spm.model", f"--output={tmp}/imported"],
            f"{tmp}/lm.pth: not a state_dict", 1)


def _build_vocab_below_special_ids(tmp, lm):
    corpus = write_corpus(tmp / "c.txt", 50)
    return (["data_pipeline.build", f"--input={corpus}", f"--output_dir={tmp}/d",
             "--vocab_size=3"], "--vocab_size=3 leaves no piece beside the special ids", 1)


def _build_vocab_below_characters(tmp, lm):
    corpus = write_corpus(tmp / "c.txt", 50)
    return (["data_pipeline.build", f"--input={corpus}", f"--output_dir={tmp}/d",
             "--vocab_size=10"], r"--vocab_size=10 is too small .* at least \d+", 1)


@pytest.mark.heavy
@pytest.mark.parametrize("flag", ["encoding_errors", "model_type", "text_document"])
def test_build_refuses_unknown_choices_before_reading(tmp_path, flag):
    result = run("data_pipeline.build", f"--input={tmp_path}/none.txt",
                 f"--output_dir={tmp_path}/d", f"--{flag}=bogus")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"error: --{flag}='bogus' is not one of" in result.stderr
    assert not (tmp_path / "d").exists()


def _build_empty_corpus(tmp, lm):
    (tmp / "empty.txt").write_text("\n\n")
    return (["data_pipeline.build", f"--input={tmp}/empty.txt", f"--output_dir={tmp}/d"],
            f"--input={tmp}/empty.txt: the corpus is empty", 1)


def _build_invalid_utf8(tmp, lm):
    (tmp / "bad.txt").write_bytes(b"fine\n\xc3\x28 broken\n")
    return (["data_pipeline.build", f"--input={tmp}/bad.txt", f"--output_dir={tmp}/d"],
            f"{tmp}/bad.txt: invalid UTF-8 at byte offset 5", 1)


def _classifier_files(tmp, train_rows):
    rows = [{"text": f"text number {i}", "label": "ab"[i % 2]} for i in range(8)]
    return {"train": write_jsonl(tmp / "train.jsonl", train_rows),
            "valid": write_jsonl(tmp / "valid.jsonl", rows),
            "test": write_jsonl(tmp / "test.jsonl", rows)}


def _downstream(tmp, lm, config, files):
    return ["trainer.main", f"--gin_file=gin_configs/{config}.gin",
            f"--gin_param=train_{config}.pretrained='{lm[0]}'",
            f"--gin_param=train_{config}.files={files!r}", f"--gin_param=train_{config}.epochs=1",
            f"--model_dir={tmp}/m"]


def _classifier_line_not_an_object(tmp, lm):
    files = _classifier_files(tmp, [{"text": "a", "label": "a"}, ["text", "label"]])
    return (_downstream(tmp, lm, "classifier", files),
            f"{files['train']}:2: a JSON list, not an object", 1)


def _classifier_line_not_json(tmp, lm):
    files = _classifier_files(tmp, [{"text": "a", "label": "a"}])
    with open(files["train"], "a") as f:
        f.write("{text: unquoted}\n")
    return _downstream(tmp, lm, "classifier", files), f"{files['train']}:2: not JSON", 1


def _tagger_tokens_and_tags_differ(tmp, lm):
    row = {"tokens": ["a", "b"], "tags": ["O", "O"]}
    files = {split: write_jsonl(tmp / f"{split}.jsonl", [row, {"tokens": ["a"], "tags": []}])
             for split in ("train", "valid", "test")}
    return (_downstream(tmp, lm, "tagger", files),
            f"{files['train']}:2: 1 tokens but 0 tags", 1)


def _predict_with_a_language_model(tmp, lm):
    (tmp / "in.txt").write_text("some text\n")
    return (["trainer.predict", f"--model_dir={lm[0]}", f"--input={tmp}/in.txt",
             f"--output={tmp}/out.jsonl"],
            f"{lm[0]}: neither a classifier or tagger run directory", 1)


def _generate_missing_model(tmp, lm):
    return (["trainer.generate", f"--model_dir={tmp}/nothing", "--prompt=the"],
            f"{tmp}/nothing: neither a model directory nor a checkpoint prefix", 1)


def _predict_missing_input(tmp, lm):
    return (["trainer.predict", f"--model_dir={lm[0]}", f"--input={tmp}/none.txt",
             f"--output={tmp}/out.jsonl"], f"--input={tmp}/none.txt: no such file", 1)


def _predict_damaged_run_description(tmp, lm):
    (tmp / "run").mkdir()
    (tmp / "run" / "downstream.json").write_text("{}")
    return (["trainer.predict", f"--model_dir={tmp}/run", f"--input={tmp}/run/downstream.json",
             f"--output={tmp}/out.jsonl"], f"{tmp}/run/downstream.json: not a run description", 1)


def _ensemble_member_not_a_run(tmp, lm):
    (tmp / "run").mkdir()
    (tmp / "run" / "downstream.json").write_text("{}")
    (tmp / "in.txt").write_text("some text\n")
    return (["trainer.predict", f"--model_dir={tmp}/run,{lm[0]}", f"--input={tmp}/in.txt",
             f"--output={tmp}/out.jsonl"],
            f"{lm[0]}: not a classifier run directory .* an ensemble joins runs", 1)


def _lr_find_setting_of_a_swapped_out_schedule(tmp, lm):
    return (["trainer.lr_find", "--gin_file=gin_configs/classifier.gin",
             "--gin_file=gin_configs/fine_tuning_course.gin",
             f"--gin_param=train_classifier.pretrained='{lm[0]}'", "--gin_param=stlr.max_lr=3e-3",
             f"--output={tmp}/x.png"],
            "stlr.max_lr \\(--gin_param\\) reaches nothing: this job does not use stlr: "
            "fit_recipe.schedule is @one_cycle", 1)


def _lr_find_missing_gin_file(tmp, lm):
    return (["trainer.lr_find", "--gin_file=gin_configs/clasifier.gin", f"--output={tmp}/x.png"],
            "--gin_file=gin_configs/clasifier.gin: no such file", 1)


CASES = {case.__name__[1:]: case for case in (
    _gin_typo, _model_setting_typo, _binding_that_reaches_nothing, _missing_gin_file,
    _required_binding_unset, _missing_spm_model, _unreadable_manifest, _valid_split_too_small, _batch_not_divisible,
    _split_without_documents_in_trainer, _other_vocabulary_for_init_from, _diverging_learning_rate,
    _export_missing_checkpoint, _export_existing_output, _export_without_flags,
    _import_vocabulary_mismatch, _import_not_a_state_dict, _import_not_a_pth,
    _build_vocab_below_special_ids, _build_vocab_below_characters, _build_empty_corpus,
    _build_invalid_utf8, _classifier_line_not_an_object, _classifier_line_not_json,
    _tagger_tokens_and_tags_differ, _predict_with_a_language_model, _predict_missing_input,
    _generate_missing_model, _predict_damaged_run_description, _ensemble_member_not_a_run,
    _lr_find_setting_of_a_swapped_out_schedule, _lr_find_missing_gin_file)}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, pretrained_lm):
    """{case: (expected message, status, result, files before, files after) or a skip reason}.
    The cases' processes run two at a time: each spends seconds importing TensorFlow."""
    prepared, found = {}, {}
    for name, case in CASES.items():
        tmp = tmp_path_factory.mktemp(name)
        try:
            prepared[name] = (tmp, *case(tmp, pretrained_lm))
        except pytest.skip.Exception as e:
            found[name] = str(e)
    watched = lambda tmp: {**digests(tmp), **digests(os.path.dirname(pretrained_lm[0]))}
    before = {name: watched(tmp) for name, (tmp, *_) in prepared.items()}
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = dict(zip(prepared, pool.map(lambda p: run(*p[1]), prepared.values())))
    for name, (tmp, _, message, status) in prepared.items():
        found[name] = (message, status, results[name], before[name], watched(tmp))
    return found


@pytest.mark.heavy  # a TensorFlow process per case: minutes in all
@pytest.mark.parametrize("case", sorted(CASES))
def test_user_mistake_is_one_error_line(case, outcomes):
    if isinstance(outcomes[case], str):
        pytest.skip(outcomes[case])
    message, status, result, before, after = outcomes[case]
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert re.search(message, errors[0]), errors[0]
    assert "In call to configurable" not in errors[0]  # gin's own additions are dropped
    assert result.returncode == status
    assert {path: after.get(path) for path in before} == before  # nothing lost or changed
    assert not any(p.endswith("manifest.json") for p in set(after) - set(before))

