"""Train and eval steps of the language model. They run inside `strategy.run` and know nothing
of files: the controller feeds them iterators and saves what they hold.

Each replica carries its LSTM states from batch to batch (no gradient flows through them). They
live in one variable per layer holding every replica's rows: a replica reads its own rows, and
after a step the new states are gathered from all replicas, so every copy of the variable is the
same and a checkpoint holds them all. Each replica draws its dropout masks from (seed, step,
replica id), so a resumed run replays exactly the masks it would have drawn.

Gradients are summed over replicas before the optimizer clips them (its global_clipnorm), so the
global norm is the one a single device would see on the global batch (each replica's loss is its
mean / number of replicas). With a LossScaleOptimizer (mixed_float16) the loss is scaled here and
the optimizer unscales, clips and skips non-finite steps. XLA implements the stateless random ops its own
way, so a jit_compile'd step draws other (equally valid) masks: resume with the same setting.
"""
import tensorflow as tf

from trainer.models.activation_regularization import activation_regularization


def mask_seed(seed, step, replica_id):
    """Stateless seed of one replica's dropout masks at one step."""
    fold = tf.random.experimental.stateless_fold_in
    return fold(fold(tf.constant([seed, 0], tf.int64), step), replica_id)


@tf.function(jit_compile=True)  # XLA fuses softmax and gradient: half the time of TF's op on CPU
def token_cross_entropy(targets, logits):
    """Per-token cross entropy in float32 (also when the model computes in half precision)."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(targets, tf.cast(logits, tf.float32))


class LanguageModelTask:

    def __init__(self, model, optimizer, strategy, batch_size, seed=0, ar_alpha=2.0,
                 tar_beta=1.0, jit_compile=False):
        """`batch_size` is per replica; `optimizer` must take reduced gradients."""
        inner = getattr(optimizer, "inner_optimizer", optimizer)  # under a LossScaleOptimizer
        if not getattr(inner, "gradients_reduced", False):
            raise ValueError("LanguageModelTask sums gradients over replicas itself; build the "
                             "optimizer with gradients_reduced=True.")
        self.model, self.optimizer, self.strategy = model, optimizer, strategy
        self.batch_size, self.seed = batch_size, seed
        self._scale_loss = getattr(optimizer, "scale_loss", lambda loss: loss)
        self.ar_alpha, self.tar_beta = ar_alpha, tar_beta
        rows = batch_size * strategy.num_replicas_in_sync
        with strategy.scope():
            self.states = [
                tuple(tf.Variable(zeros, trainable=False, name=f"carried_{kind}{i}",
                                  aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
                      for kind, zeros in zip("hc", state))
                for i, state in enumerate(model.encoder.initial_states(rows))]
        # XLA compiles the forward and backward pass; the cross-replica work (all-reduce, the
        # optimizer's merge_call, gathering states) stays outside: an XLA cluster is one device.
        self._gradients = tf.function(self._replica_gradients, jit_compile=True) if jit_compile \
            else self._replica_gradients

    def reset_states(self):
        for h, c in self.states:
            h.assign(tf.zeros_like(h))
            c.assign(tf.zeros_like(c))

    def _replica_gradients(self, inputs, targets, states, seed):
        """This replica's share of the gradient (its mean loss / replicas), loss, new states."""
        replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            logits, new_states, raw, dropped = self.model(inputs, states, training=True, seed=seed)
            cross_entropy = tf.reduce_mean(token_cross_entropy(targets, logits))
            loss = cross_entropy + activation_regularization(raw, dropped, self.ar_alpha,
                                                             self.tar_beta)
            replica_share = self._scale_loss(loss / replicas)
        return tape.gradient(replica_share, variables), cross_entropy, new_states

    def _train_step(self, inputs, targets):
        context = tf.distribute.get_replica_context()
        replica = context.replica_id_in_sync_group
        seed = mask_seed(self.seed, self.optimizer.iterations, replica)
        mine = lambda var: var[replica * self.batch_size:(replica + 1) * self.batch_size]
        states = [(mine(h), mine(c)) for h, c in self.states]
        gradients, cross_entropy, new_states = self._gradients(inputs, targets, states, seed)
        gradients = context.all_reduce("SUM", gradients)
        norm = tf.linalg.global_norm(gradients) / self._scale_loss(1.0)  # before clipping
        self.optimizer.apply_gradients(zip(gradients, self.model.trainable_variables))
        for (h, c), (new_h, new_c) in zip(self.states, new_states):
            h.assign(context.all_gather(tf.cast(tf.stop_gradient(new_h), h.dtype), axis=0))
            c.assign(context.all_gather(tf.cast(tf.stop_gradient(new_c), c.dtype), axis=0))
        return cross_entropy, norm

    @tf.function
    def train_loop(self, iterator, num_steps):
        """Runs `num_steps` steps in one call (less host overhead); mean loss and grad norm."""
        total_loss, total_norm = tf.constant(0.0), tf.constant(0.0)
        for _ in tf.range(num_steps):
            loss, norm = self.strategy.run(self._train_step, args=next(iterator))
            total_loss += self.strategy.reduce("MEAN", loss, axis=None)
            total_norm += self.strategy.reduce("MEAN", norm, axis=None)
        steps = tf.cast(num_steps, tf.float32)
        return total_loss / steps, total_norm / steps

    @tf.function
    def _eval_step(self, batch, states):
        def step(inputs, targets, states):
            logits, new_states, _, _ = self.model(inputs, states, training=False)
            return (tf.reduce_sum(token_cross_entropy(targets, logits)),
                    tf.cast(tf.size(targets), tf.float32), new_states)
        loss, tokens, states = self.strategy.run(step, args=(*batch, states))
        return (self.strategy.reduce("SUM", loss, axis=None),
                self.strategy.reduce("SUM", tokens, axis=None), states)

    def evaluate(self, distributed_dataset, batch_size):
        """Mean per-token cross entropy over a distributed dataset with `batch_size` rows per
        replica; each replica carries its own states from zero, no dropout."""
        states = self.strategy.run(lambda: self.model.encoder.initial_states(batch_size))
        total = tokens = 0.0
        for batch in distributed_dataset:
            loss, count, states = self._eval_step(batch, states)
            total += float(loss)
            tokens += float(count)
        return total / tokens
