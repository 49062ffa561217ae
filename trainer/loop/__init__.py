"""What every training loop here shares: a run's checkpoints (run_checkpoints.py) and its
progress, tokens/s and TensorBoard scalars (progress.py).

There are two loops, on purpose. The language model runs on trainer/lm/controller.py: host
loops of `steps_per_loop` steps inside one tf.function, LSTM states carried from batch to
batch, a resume at the very batch a checkpoint was written (a position Keras' fit cannot
restore mid-epoch), and loss-spike guards around every save. Fine-tuning runs on Keras' `fit`
(trainer/fine_tuning/recipe.py): compiled metrics, variable-length batches, and callbacks for
gradual unfreezing, which a Keras model is built for. What the two would otherwise each write
in their own way is here, once: both restore and save through RunCheckpoints and report through
Progress (fine-tuning by the Keras callbacks in keras_callbacks.py)."""
