"""Train and eval steps of the language model. They run inside `strategy.run` and know nothing
of files: the controller feeds them iterators and saves what they hold.

Each replica carries its LSTM states from batch to batch in non-trainable variables (no gradient
flows through them), and draws its dropout masks from (seed, step, replica id), so a resumed run
replays exactly the masks it would have drawn. XLA implements the stateless random ops its own
way, so a jit_compile'd step draws other (equally valid) masks: resume with the same setting.
"""
import tensorflow as tf

from trainer.models.language_model import activation_regularization


def mask_seed(seed, step, replica_id):
    """Stateless seed of one replica's dropout masks at one step."""
    fold = tf.random.experimental.stateless_fold_in
    return fold(fold(tf.constant([seed, 0], tf.int64), step), replica_id)


def token_cross_entropy(targets, logits):
    """Per-token cross entropy in float32 (also when the model computes in half precision)."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(targets, tf.cast(logits, tf.float32))


class LanguageModelTask:

    def __init__(self, model, optimizer, strategy, batch_size, seed=0, clip_norm=0.25,
                 ar_alpha=2.0, tar_beta=1.0, jit_compile=False):
        self.model, self.optimizer, self.strategy = model, optimizer, strategy
        self.seed, self.clip_norm = seed, clip_norm
        self.ar_alpha, self.tar_beta = ar_alpha, tar_beta
        with strategy.scope():
            self.states = [
                (tf.Variable(h, trainable=False, name=f"carried_h{i}"),
                 tf.Variable(c, trainable=False, name=f"carried_c{i}"))
                for i, (h, c) in enumerate(model.encoder.initial_states(batch_size))]
        self._step = tf.function(self._train_step, jit_compile=True) if jit_compile \
            else self._train_step

    def reset_states(self):
        for h, c in self.states:
            h.assign(tf.zeros_like(h))
            c.assign(tf.zeros_like(c))

    def _train_step(self, inputs, targets):
        context = tf.distribute.get_replica_context()
        seed = mask_seed(self.seed, self.optimizer.iterations, context.replica_id_in_sync_group)
        states = [(tf.identity(h), tf.identity(c)) for h, c in self.states]
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            logits, new_states, raw, dropped = self.model(inputs, states, training=True, seed=seed)
            cross_entropy = tf.reduce_mean(token_cross_entropy(targets, logits))
            loss = cross_entropy + activation_regularization(raw, dropped, self.ar_alpha,
                                                             self.tar_beta)
        gradients = tape.gradient(loss, variables)
        gradients, norm = tf.clip_by_global_norm(gradients, self.clip_norm)
        self.optimizer.apply_gradients(zip(gradients, variables))
        for (h, c), (new_h, new_c) in zip(self.states, new_states):
            h.assign(tf.stop_gradient(new_h))
            c.assign(tf.stop_gradient(new_c))
        return cross_entropy, norm

    @tf.function
    def train_loop(self, iterator, num_steps):
        """Runs `num_steps` steps in one call (less host overhead); mean loss and grad norm."""
        total_loss, total_norm = tf.constant(0.0), tf.constant(0.0)
        for _ in tf.range(num_steps):
            loss, norm = self.strategy.run(self._step, args=next(iterator))
            total_loss += self.strategy.reduce("MEAN", loss, axis=None)
            total_norm += self.strategy.reduce("MEAN", norm, axis=None)
        steps = tf.cast(num_steps, tf.float32)
        return total_loss / steps, total_norm / steps

    @tf.function
    def _eval_step(self, inputs, targets, states):
        logits, new_states, _, _ = self.model(inputs, states, training=False)
        return tf.reduce_sum(token_cross_entropy(targets, logits)), new_states

    def evaluate(self, dataset, batch_size):
        """Mean per-token cross entropy over `dataset`, states carried from zero, no dropout."""
        states = self.model.encoder.initial_states(batch_size)
        total, tokens = 0.0, 0
        for inputs, targets in dataset:
            loss, states = self._eval_step(inputs, targets, states)
            total += float(loss)
            tokens += int(tf.size(targets))
        return total / tokens
