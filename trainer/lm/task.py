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
the optimizer unscales, clips and skips non-finite steps. XLA implements the stateless random ops
its own way, so a jit_compile'd step draws other (equally valid) masks: resume with the same
setting.
"""
import tensorflow as tf

from trainer.models.xla import compiled


def mask_seed(seed, step, replica_id):
    """Stateless seed of one replica's dropout masks at one step."""
    fold = tf.random.experimental.stateless_fold_in
    return fold(fold(tf.constant([seed, 0], tf.int64), step), replica_id)


@compiled  # XLA fuses softmax and gradient: half the time of TF's op on CPU
def token_cross_entropy(targets, logits):
    """Per-token cross entropy in float32 (also when the model computes in half precision)."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(targets, tf.cast(logits, tf.float32))


class LanguageModelTask:

    def __init__(self, model, optimizer, strategy, batch_size, seed=0, jit_compile=False,
                 eval_batch_size=None):
        """`batch_size` (and `eval_batch_size`, by default the same) is per replica;
        `optimizer` must take reduced gradients."""
        inner = getattr(optimizer, "inner_optimizer", optimizer)  # under a LossScaleOptimizer
        if not getattr(inner, "gradients_reduced", False):
            raise ValueError("LanguageModelTask sums gradients over replicas itself; build the "
                             "optimizer with gradients_reduced=True.")
        self.model, self.optimizer, self.strategy = model, optimizer, strategy
        self.batch_size, self.seed = batch_size, seed
        self.eval_batch_size = eval_batch_size or batch_size
        self._scale_loss = getattr(optimizer, "scale_loss", lambda loss: loss)
        self.states = self._carried_states(batch_size, "carried")
        self.eval_states = self._carried_states(self.eval_batch_size, "eval_carried")
        # XLA compiles the forward and backward pass; the cross-replica work (all-reduce, the
        # optimizer's merge_call, gathering states) stays outside: an XLA cluster is one device.
        self._gradients = tf.function(self._replica_gradients, jit_compile=True) if jit_compile \
            else self._replica_gradients

    def _carried_states(self, batch_size, name):
        """Per layer, (h, c) variables holding every replica's `batch_size` rows."""
        rows = batch_size * self.strategy.num_replicas_in_sync
        with self.strategy.scope():
            return [tuple(tf.Variable(zeros, trainable=False, name=f"{name}_{kind}{i}",
                                      aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
                          for kind, zeros in zip("hc", state))
                    for i, state in enumerate(self.model.encoder.initial_states(rows))]

    def reset_states(self, states=None):
        for h, c in self.states if states is None else states:
            h.assign(tf.zeros_like(h))
            c.assign(tf.zeros_like(c))

    @staticmethod
    def _mine(states, context, batch_size):
        """This replica's rows of carried state variables."""
        replica = context.replica_id_in_sync_group
        return [tuple(var[replica * batch_size:(replica + 1) * batch_size] for var in state)
                for state in states]

    @staticmethod
    def _store(states, new_states, context):
        """Every replica's new rows into every copy of the variables."""
        for variables, new in zip(states, new_states):
            for var, value in zip(variables, new):
                var.assign(context.all_gather(tf.cast(tf.stop_gradient(value), var.dtype), axis=0))

    def _replica_gradients(self, inputs, targets, states, seed):
        """This replica's share of the gradient (its mean loss / replicas), loss, new states."""
        replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            logits, new_states, raw, dropped = self.model(inputs, states, training=True, seed=seed)
            cross_entropy = tf.reduce_mean(token_cross_entropy(targets, logits))
            loss = cross_entropy + self.model.regularization(raw, dropped)
            replica_share = self._scale_loss(loss / replicas)
        return tape.gradient(replica_share, variables), cross_entropy, new_states

    def _train_step(self, inputs, targets):
        context = tf.distribute.get_replica_context()
        seed = mask_seed(self.seed, self.optimizer.iterations, context.replica_id_in_sync_group)
        states = self._mine(self.states, context, self.batch_size)
        gradients, cross_entropy, new_states = self._gradients(inputs, targets, states, seed)
        gradients = context.all_reduce("SUM", gradients)
        norm = tf.linalg.global_norm(gradients) / self._scale_loss(1.0)  # before clipping
        self.optimizer.apply_gradients(zip(gradients, self.model.trainable_variables))
        self._store(self.states, new_states, context)
        return cross_entropy, norm

    def _run_steps(self, step, iterator, num_steps, reduction):
        """`num_steps` runs of a replica step in the graph; its two scalars, reduced over
        replicas by `reduction` and summed over steps."""
        totals = (tf.constant(0.0), tf.constant(0.0))
        for _ in tf.range(num_steps):
            outputs = self.strategy.run(step, args=next(iterator))
            totals = tuple(total + self.strategy.reduce(reduction, value, axis=None)
                           for total, value in zip(totals, outputs))
        return totals

    @tf.function
    def train_loop(self, iterator, num_steps):
        """Runs `num_steps` steps in one call (less host overhead); mean loss and grad norm."""
        total_loss, total_norm = self._run_steps(self._train_step, iterator, num_steps, "MEAN")
        steps = tf.cast(num_steps, tf.float32)
        return total_loss / steps, total_norm / steps

    def _eval_step(self, inputs, targets):
        context = tf.distribute.get_replica_context()
        states = self._mine(self.eval_states, context, self.eval_batch_size)
        logits, new_states, _, _ = self.model(inputs, states, training=False)
        self._store(self.eval_states, new_states, context)
        return (tf.reduce_sum(token_cross_entropy(targets, logits)),
                tf.cast(tf.size(targets), tf.float32))

    @tf.function
    def eval_loop(self, iterator, num_steps):
        """Runs `num_steps` eval steps in one call: summed cross entropy and token count."""
        return self._run_steps(self._eval_step, iterator, num_steps, "SUM")

    def evaluate(self, distributed_dataset, steps, steps_per_loop=10):
        """Mean per-token cross entropy over the first `steps` batches of a distributed dataset
        with `eval_batch_size` rows per replica, `steps_per_loop` batches per call (one host
        call per batch is slow on a TPU host); each replica carries its own states from zero,
        no dropout."""
        self.reset_states(self.eval_states)
        iterator = iter(distributed_dataset)
        total = tokens = 0.0
        for done in range(0, steps, steps_per_loop):
            loss, count = self.eval_loop(iterator, tf.constant(min(steps_per_loop, steps - done)))
            total += float(loss)
            tokens += float(count)
        return total / tokens
