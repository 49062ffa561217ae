"""ULMFiT stage 3 for text classification: `train_classifier`, the job of
gin_configs/classifier.gin (run by trainer.main).

It fine-tunes fastai's concat-pooling classifier on a pretrained encoder with ULMFiT's recipe
(trainer/fine_tuning/recipe.py); `from_scratch=True` trains the same architecture, with the same
recipe, from random weights: the baseline that pretraining has to beat.
"""
import keras
import tensorflow as tf

from data_pipeline import labeled_data as data
from data_pipeline.demo_tasks import demo_task_files
from data_pipeline.sources import SPLITS
from trainer.checkpoints.pretrained import encoder_source
from trainer.fine_tuning.recipe import fit_recipe
from trainer.fine_tuning.saved_run import describe, save_run
from trainer.models.ulmfit_classifier import ulmfit_classifier


def train_classifier(model_dir, pretrained, files=None, from_scratch=False, bptt=72,
                     max_len=72 * 20, batch_size=32, epochs=4, seed=0, *, strategy=None,
                     model=ulmfit_classifier, recipe=fit_recipe):
    """Fine-tunes a classifier; `files` {train, valid, test} are JSONL (default: the demo
    task). Returns accuracy on valid and test.

    As fastai's text_classifier_learner(seq_len=bptt, max_len=max_len): every text is read
    whole, `bptt` tokens at a time, and classified from its last `max_len` outputs; batches
    group texts of similar lengths (fastai's SortedDL). On a backward LM (`pretrained` was
    trained with train_lm.backwards), the classifier reads texts reversed.

    The parts: `strategy` (default: TensorFlow's default strategy), `model`, ulmfit_classifier
    or one with its arguments (dropouts, head and AR/TAR are its settings), and `recipe`,
    trainer.fine_tuning.recipe.fit_recipe or one with the same arguments.
    """
    files = files or demo_task_files("classify")
    keras.utils.set_random_seed(seed)
    weights, sizes, spm_model, backwards = encoder_source(pretrained, from_scratch)
    encoder = data.PieceEncoder(spm_model, max_len=None)

    def encoded(split):
        texts, labels = data.read_classification(files[split])
        return [encoder.text_ids(t) for t in texts], labels

    splits = {split: encoded(split) for split in SPLITS}
    vocabulary = data.label_vocabulary(splits["train"][1])
    train_ids = splits["train"][0]

    def dataset(split, shuffle_seed=None):
        ids, labels = splits[split]
        return data.labelled_dataset(ids, data.label_ids(labels, vocabulary, files[split]),
                                     batch_size, shuffle_seed=shuffle_seed, chunk_length=bptt,
                                     drop_remainder=split == "train")

    with (strategy or tf.distribute.get_strategy()).scope():
        model, _ = model(num_classes=len(vocabulary), pretrained_weights=weights,
                         spm_model_file=spm_model, bptt=bptt, max_len=max_len,
                         backwards=backwards, **sizes)
        recipe(
            model, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            dataset("train", seed), dataset("valid"), epochs,
            data.train_steps(len(train_ids), batch_size, files["train"]),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],  # see fit_recipe
            model_dir=model_dir,
            tokens_per_epoch=sum(map(len, train_ids)))
    metrics = {"labels": vocabulary, "from_scratch": from_scratch, "backwards": backwards}
    for split in ("valid", "test"):
        metrics[f"{split}_accuracy"] = float(model.evaluate(dataset(split), verbose=0,
                                                            return_dict=True)["accuracy"])
    return save_run(model_dir, model, describe("classifier", model, vocabulary, max_len, backwards),
                    spm_model, metrics)
