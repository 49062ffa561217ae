"""ULMFiT fine-tuning, ours against fastai's, from the same pretrained weights, side by side.

  pip install -e '.[bench]'           # CPU-only machines: see the README's extras
  python benchmarks/compare_fastai_finetune.py --pretrained=/tmp/ulmfit_smoke [--seeds=3]

The pretrained LM (a model directory of ours; the README's main job by default) goes to fastai
as a state_dict (trainer.convert_fastai's export). For each seed, each system then runs, in
its own processes:
  stage 2: the LM fine-tuned on the tasks' train texts (one doc per text, built into an LM data
    directory with the pretrained SentencePiece model; fastai reads the same ids): one-cycle,
    2 epochs, lr 2e-3, drop_mult 0.3 (finetune_lm.gin);
  stage 3, on its own stage-2 encoder: the classifier and the tagger with fastai's course recipe
    (classifier.gin / tagger.gin + fine_tuning_course.gin; benchmarks/fastai_finetune.py).
Same ids, same splits, same batch sizes. Printed per system and stage: the metric (mean and
standard error over seeds, and each seed's), wall time of the stage's process (start-up
included) for the first seed and the mean of the later ones, training tokens per second of the
first seed's wall time (padding excluded), peak RSS. Our runs share an XLA compilation cache
(trainer/runtime/compilation_cache.py) in the emptied work directory: the first seed compiles every
kernel (a first run on a machine), later seeds load them (what reruns, other seeds and
hyperparameter searches see).
Tasks: the demo tasks, or JSONL files given by --classify_files / --tag_files.
"""
import json
import math
import os
import pickle
import shutil
import subprocess
import sys
import time

from absl import app, flags
import numpy as np
import tensorflow as tf

from machine import cpu_description  # same directory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
# pylint: disable=g-import-not-at-top,wrong-import-position
from data_pipeline import labeled_data as data
from data_pipeline.build import BuildSettings, build
from data_pipeline.demo_tasks import demo_task_files
from data_pipeline.shards import parse_ids
from data_pipeline.sources import SPLITS
from trainer.checkpoints.pretrained import load_pretrained_config, model_dir_and_checkpoint
from trainer.convert_fastai import export_fastai
from trainer.fine_tuning.span_f1 import span_f1
from trainer.runtime.compilation_cache import ENV

flags.DEFINE_string("pretrained", "/tmp/ulmfit_smoke", "Our pretrained LM (model directory).")
flags.DEFINE_integer("seeds", 3, "Seeds per system (0, 1, ...).")
flags.DEFINE_list("tasks", ["classify", "tag"], "classify and/or tag.")
flags.DEFINE_list("classify_files", None, "train,valid,test JSONL {text, label} (default: demo).")
flags.DEFINE_list("tag_files", None, "train,valid,test JSONL {tokens, tags} (default: demo).")
flags.DEFINE_string("work_dir", "/tmp/compare_fastai_finetune", "Scratch; emptied first.")
FLAGS = flags.FLAGS

LM_EPOCHS, STAGE3_EPOCHS, TAG_MAX_LEN = 2, 5, 128  # finetune_lm.gin; the course's 1+1+1+2
METRICS = {"lm": ["valid_perplexity"], "classify": ["valid_accuracy", "test_accuracy"],
           "tag": ["valid_f1", "test_f1"]}


def _files(task, given):
    return dict(zip(SPLITS, given)) if given else demo_task_files(task)


def _split_ids(manifest, split):
    paths = [manifest.shard_path(s) for s in manifest.split(split).shards]
    return [row.numpy().tolist() for row in tf.data.TFRecordDataset(paths).map(parse_ids)]


def prepare(work_dir, files):
    """Writes the fastai state_dict and the ids both systems train on; returns what the
    parent needs (data directory, files, word starts and truth for F1, tokens per stage)."""
    pretrained_dir = model_dir_and_checkpoint(FLAGS.pretrained)[0]
    config = load_pretrained_config(pretrained_dir)
    spm_model = config.spm_model_path
    shared = {"sizes": config.model, "state_dict": export_fastai(
        FLAGS.pretrained, os.path.join(work_dir, "pretrained.npz"))}
    splits = {s: data.read_classification(files["classify"][s]) for s in SPLITS}
    sentences = {s: data.read_tagging(files["tag"][s]) for s in SPLITS}
    texts = splits["train"][0] + [" ".join(words) for words, _ in sentences["train"]]
    with open(os.path.join(work_dir, "lm_texts.txt"), "w") as f:
        f.writelines(" ".join(t.split()) + "\n" for t in texts)
    lm_dir = os.path.join(work_dir, "lm_data")
    manifest = build(lm_dir, BuildSettings(input=f.name, text_document="line",
                                           spm_model=spm_model))
    shared["lm"] = {split: _split_ids(manifest, split) for split in ("train", "valid")}
    tokens = {"lm": LM_EPOCHS * manifest.split("train").tokens}
    texts_encoder = data.PieceEncoder(spm_model, max_len=None)
    classes = data.label_vocabulary(splits["train"][1])
    shared["classify"] = {"num_classes": len(classes), **{s: {
        "ids": [texts_encoder.text_ids(t) for t in split_texts],
        "labels": data.label_ids(labels, classes, files["classify"][s])}
        for s, (split_texts, labels) in splits.items()}}
    tokens["classify"] = STAGE3_EPOCHS * sum(map(len, shared["classify"]["train"]["ids"]))
    words_encoder = data.PieceEncoder(spm_model, TAG_MAX_LEN)
    tags = data.label_vocabulary([t for _, ts in sentences["train"] for t in ts], "O")
    shared["tag"], truth = {"num_tags": len(tags)}, {}
    for s, rows in sentences.items():
        encoded = [words_encoder.word_ids(words) for words, _ in rows]
        labels = [data.align_labels(data.label_ids(t, tags, files["tag"][s]), starts, len(ids))
                  for (ids, starts), (_, t) in zip(encoded, rows)]
        shared["tag"][s] = {"ids": [ids for ids, _ in encoded],
                            "labels": [[int(x) if x >= 0 else -100 for x in row] for row in labels]}
        truth[s] = ([starts for _, starts in encoded], [t for _, t in rows])
    tokens["tag"] = STAGE3_EPOCHS * sum(map(len, shared["tag"]["train"]["ids"]))
    with open(os.path.join(work_dir, "data.pkl"), "wb") as f:
        pickle.dump(shared, f)
    return {"lm_dir": lm_dir, "data": f.name, "tags": tags, "truth": truth, "tokens": tokens}


def run(command, log):
    """(wall seconds, peak RSS MB) of `command`, its output in `log`; exits if it fails."""
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2",
           "CUDA_VISIBLE_DEVICES": "", ENV: os.path.join(FLAGS.work_dir, "xla_cache")}
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status):
        sys.exit(f"error: {' '.join(command)} failed; its output is in {log}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024


def ours(stage, seed, run_dir, prepared, files):
    model_dir = os.path.join(run_dir, stage)
    lm = os.path.join(run_dir, "lm")
    gin = {"lm": ["finetune_lm.gin"], "classify": ["classifier.gin", "fine_tuning_course.gin"],
           "tag": ["tagger.gin", "fine_tuning_course.gin"]}[stage]
    job = {"lm": "train_lm", "classify": "train_classifier", "tag": "train_tagger"}[stage]
    params = {"lm": {"init_from": FLAGS.pretrained, "data_dir": prepared["lm_dir"]},
              "classify": {"pretrained": lm, "files": files["classify"]},
              "tag": {"pretrained": lm, "files": files["tag"], "max_len": TAG_MAX_LEN}}[stage]
    command = [sys.executable, "-m", "trainer.main", f"--model_dir={model_dir}",
               *[f"--gin_file=gin_configs/{g}" for g in gin],
               *[f"--gin_param={job}.{k}={v!r}" for k, v in {**params, "seed": seed}.items()]]
    wall, rss = run(command, os.path.join(run_dir, f"{stage}.log"))
    if stage == "lm":  # the perplexity is the eval line trainer.main prints last
        with open(os.path.join(run_dir, "lm.log")) as f:
            line = [l for l in f if l.startswith("valid perplexity ")][-1]
        return {"valid_perplexity": float(line.split()[2])}, wall, rss
    with open(os.path.join(model_dir, "metrics.json")) as f:
        return json.load(f), wall, rss


def fastai(stage, seed, run_dir, prepared, files):
    del files
    result = os.path.join(run_dir, f"{stage}.json")
    command = [sys.executable, os.path.join(ROOT, "benchmarks", "fastai_finetune.py"),
               f"--stage={stage}", f"--data={prepared['data']}", f"--seed={seed}",
               f"--encoder={os.path.join(run_dir, 'encoder.pth')}", f"--result={result}"]
    wall, rss = run(command, os.path.join(run_dir, f"{stage}.log"))
    with open(result) as f:
        metrics = json.load(f)
    if stage == "tag":  # F1 from each word's first piece, as our tagger reads it back
        for split in ("valid", "test"):
            starts, truth = prepared["truth"][split]
            predicted = [[prepared["tags"][p] for p in data.word_predictions(row, s)]
                         for row, s in zip(metrics[f"{split}_pieces"], starts)]
            metrics[f"{split}_f1"] = span_f1(truth, predicted)["f1"]
    return metrics, wall, rss


def _spread(values):
    mean = float(np.mean(values))
    se = float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0
    return mean, se


def report(results, prepared):
    """results[system][stage] = [(metrics, wall, rss) per seed]."""
    print(f"\n{FLAGS.seeds} seeds; CPU {cpu_description()}; mean ± standard "
          "error (each seed)")
    print(f"{'stage':<9} {'system':<7} {'metric':<17} {'mean ± SE':>16}  {'per seed':<24} "
          f"{'wall s':>7} {'later':>6} {'tokens/s':>9} {'peak RSS MB':>12}")
    for stage in ["lm", *FLAGS.tasks]:
        for system, runs in results.items():
            first, later = _walls(runs, [stage])
            rss = max(r for _, _, r in runs[stage])
            for i, metric in enumerate(METRICS[stage]):
                values = [m[metric] for m, _, _ in runs[stage]]
                mean, se = _spread(values)
                cost = (f"{first:>7.0f} {later:>6.0f} {prepared['tokens'][stage] / first:>9,.0f} "
                        f"{rss:>12,.0f}" if i == 0 else "")
                print(f"{stage:<9} {system:<7} {metric:<17} {mean:>8.3f} ± {se:<6.3f} "
                      f"{' '.join(f'{v:.3f}' for v in values):<24} {cost}")
    for stage in FLAGS.tasks:
        metric = METRICS[stage][-1]
        (ours_mean, ours_se), (theirs_mean, theirs_se) = (
            _spread([m[metric] for m, _, _ in results[s][stage]]) for s in ("ours", "fastai"))
        ratios = [a / b for a, b in zip(_walls(results["ours"], ["lm", stage]),
                                        _walls(results["fastai"], ["lm", stage]))]
        print(f"{metric}: ours - fastai = {ours_mean - theirs_mean:+.3f} (SE of the difference "
              f"{math.hypot(ours_se, theirs_se):.3f}); wall ours / fastai (stage 2 + this "
              f"stage): first seed {ratios[0]:.2f}, later seeds {ratios[1]:.2f}")


def _walls(runs, stages):
    """(first seed's wall, mean wall of the later seeds; nan with one seed) over `stages`."""
    walls = [sum(stage_runs) for stage_runs in zip(*[[w for _, w, _ in runs[s]] for s in stages])]
    return walls[0], float(np.mean(walls[1:])) if len(walls) > 1 else math.nan


def main(argv):
    del argv
    shutil.rmtree(FLAGS.work_dir, ignore_errors=True)
    os.makedirs(FLAGS.work_dir)
    files = {"classify": _files("classify", FLAGS.classify_files),
             "tag": _files("tag", FLAGS.tag_files)}
    prepared = prepare(FLAGS.work_dir, files)
    systems = {"ours": ours, "fastai": fastai}
    results = {name: {stage: [] for stage in ["lm", *FLAGS.tasks]} for name in systems}
    for seed in range(FLAGS.seeds):
        # Alternate which system goes first, so both see the machine's load alike.
        for name in (list(systems) if seed % 2 == 0 else list(systems)[::-1]):
            run_dir = os.path.join(FLAGS.work_dir, f"{name}-{seed}")
            os.makedirs(run_dir)
            for stage in ["lm", *FLAGS.tasks]:
                outcome = systems[name](stage, seed, run_dir, prepared, files)
                results[name][stage].append(outcome)
                print(f"seed {seed} {name} {stage}: "
                      f"{ {k: round(outcome[0][k], 4) for k in METRICS[stage]} } "
                      f"{outcome[1]:.0f} s, {outcome[2]:.0f} MB", flush=True)
    report(results, prepared)


if __name__ == "__main__":
    app.run(main)
