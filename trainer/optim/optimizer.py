"""fastai's Adam as a Keras optimizer, so ULMFiT trains as it does in fastai.

It differs from keras.optimizers.AdamW where fastai does: beta_1 (fastai's "mom") may follow a
schedule (one-cycle cycles it 0.8 -> 0.7 -> 0.8), the bias correction uses the current beta_1,
and epsilon is added to the *debiased* root of the second moment (eps=1e-5). Weight decay is
decoupled (p -= lr * wd * p before the step) as fastai's true_wd. `fastai_adam` is how every
trainer and benchmark builds it. `lr_factors` gives variables their own share of the
learning rate (ULMFiT's discriminative rates: lr / 2.6^depth per layer group); it scales the
update and the weight decay, as fastai's per-group lr does. Scaling gradients instead would do
nothing: Adam's step does not depend on the gradient's scale.

As in fastai (and PyTorch), Adam counts its steps per variable: a variable that starts training
late (gradual unfreezing) debiases its first steps as first steps. `clear_state` zeroes moments
and counts, as fastai's `Learner.freeze_to` does at every unfreezing. Under a strategy the
gradients are summed over replicas before they are clipped, so N replicas clip what one device
would clip on the global batch (Keras alone clips each replica's share, then sums).

Keras' public API cannot express these, so this class overrides private members of Keras'
optimizer: trainer/models/keras_internals.py lists them, and its check names any a Keras release
changed.
"""
import keras
from keras import ops
import tensorflow as tf

from trainer.models.xla import compiled


class FastaiAdam(keras.optimizers.Optimizer):

    def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.99, epsilon=1e-5,
                 weight_decay=0.01, gradients_reduced=False, lr_factors=None, name="fastai_adam",
                 **kwargs):
        """`gradients_reduced`: the caller passes gradients already summed over replicas
        (LanguageModelTask does, to log their norm); else the optimizer sums them itself."""
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, name=name,
                         **kwargs)
        self.beta_1 = beta_1  # a float, or a callable of the step (a schedule)
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.gradients_reduced = gradients_reduced
        self.lr_factors = dict(lr_factors or {})  # variable path -> factor, default 1
        # Variable path -> callable returning a scalar bool tensor: while False, a step leaves
        # that variable, its moments and its step count alone (a frozen layer group; see
        # trainer/fine_tuning/recipe.py). Set at run time, never saved.
        self.update_if = {}
        self._step_beta_1 = None  # this step's beta_1 while the step is traced

    def _all_reduce_sum_gradients(self, grads_and_vars):
        return list(grads_and_vars)  # summed before clipping (or by the caller)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._grad_averages = [self.add_variable_from_reference(v, "grad_avg") for v in var_list]
        self._square_averages = [self.add_variable_from_reference(v, "sqr_avg") for v in var_list]
        self._factors = [self.lr_factors.get(getattr(v, "path", v.name), 1.0) for v in var_list]
        self._steps = [self.add_variable((), name=f"{v.name}_step") for v in var_list]

    def clear_state(self):
        """Zeroes every variable's moments and step count (fastai's `Optimizer.clear_state`)."""
        for state in (*self._grad_averages, *self._square_averages, *self._steps):
            state.assign(ops.zeros_like(state))

    def apply(self, grads, trainable_variables=None):
        # A frozen group gets no gradient, as in fastai, where its parameters have none: zeroed
        # here on every kernel (cuDNN's LSTM computes one regardless, and so does the
        # embedding), it neither moves nor enters the global norm the clip takes.
        if self.update_if:
            variables = (self._trainable_variables if trainable_variables is None
                         else list(trainable_variables))
            grads = [self._gated(g, v) for g, v in zip(grads, variables)]
        return super().apply(grads, trainable_variables)

    def _gated(self, gradient, variable):
        gate = self.update_if.get(getattr(variable, "path", variable.name))
        if gate is None or gradient is None:
            return gradient
        gradient = tf.convert_to_tensor(gradient)
        return tf.where(gate(), gradient, tf.zeros_like(gradient))

    def _clip_gradients(self, grads):
        context = tf.distribute.get_replica_context()
        if not self.gradients_reduced and context and context.num_replicas_in_sync > 1:
            present = [i for i, g in enumerate(grads) if g is not None]
            summed = context.all_reduce("SUM", [grads[i] for i in present])
            grads = list(grads)
            for i, gradient in zip(present, summed):
                grads[i] = gradient
        return super()._clip_gradients(grads)

    def _factor(self, variable):
        return self._factors[self._get_variable_index(variable)]

    def _use_weight_decay(self, variable):
        # Keras searches the exclusions in the short name, which does not tell an LSTM's "bias"
        # from a Dense layer's; the path does.
        if self._var_key(variable) in getattr(self, "_exclude_from_weight_decay", ()):
            return False
        pattern = getattr(self, "_exclude_from_weight_decay_pattern", None)
        return pattern is None or not pattern.search(getattr(variable, "path", variable.name))

    def _apply_weight_decay(self, variables):
        """Nothing here: update_step decays each variable inside its fused kernel."""

    def current_beta_1(self):
        return self.beta_1(self.iterations) if callable(self.beta_1) else self.beta_1

    def _distributed_tf_update_step(self, distribution, grads_and_vars, learning_rate):
        # One beta_1 per step, as Keras computes one learning rate: a schedule evaluated for
        # each variable took ~1 s of the classifier's trace (and ran its ops every step).
        self._step_beta_1 = self.current_beta_1()
        try:
            return super()._distributed_tf_update_step(distribution, grads_and_vars,
                                                        learning_rate)
        finally:
            self._step_beta_1 = None

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        # An embedding lookup's gradient comes as IndexedSlices with one slice per occurrence;
        # squaring those before summing repeated rows would inflate the second moment's
        # denominator less than fastai's dense gradient does (Keras' own Adam has this flaw).
        gradient = ops.cast(tf.convert_to_tensor(gradient), dtype)
        index = self._get_variable_index(variable)
        grad_avg, sqr_avg = self._grad_averages[index], self._square_averages[index]
        step = self._steps[index]
        decay = (self.weight_decay or 0.0) if self._use_weight_decay(variable) else 0.0
        beta_1 = self.current_beta_1() if self._step_beta_1 is None else self._step_beta_1
        scalars = [learning_rate * self._factor(variable), decay, beta_1,
                   self.beta_2, step + 1, self.epsilon]
        state = (variable, grad_avg, sqr_avg)
        tracked = self._trainable_variables[index]  # Keras', where `variable` may be TF's
        gate = self.update_if.get(getattr(tracked, "path", tracked.name))
        update = tf.convert_to_tensor(gate() if gate else True)
        new_values = _adam_step(gradient, *[tf.convert_to_tensor(v) for v in state],
                                *[ops.cast(x, dtype) for x in scalars], update)
        for target, value in zip(state, new_values):
            self.assign(target, value)
        self.assign_add(step, ops.cast(update, step.dtype))

    def get_config(self):
        beta_1 = self.beta_1
        if callable(beta_1):
            beta_1 = keras.saving.serialize_keras_object(beta_1)
        return {**super().get_config(), "beta_1": beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon, "gradients_reduced": self.gradients_reduced,
                "lr_factors": self.lr_factors}


@compiled
def _adam_step(gradient, param, grad_avg, sqr_avg, lr, decay, mom, sqr_mom, step, epsilon,
               update):
    """fastai's decoupled weight decay then Adam step -> (param, grad_avg, sqr_avg), or the
    three unchanged where `update` is False.

    One XLA kernel: one pass over each buffer instead of one per elementwise op.
    """
    new_param = param - param * decay * lr
    new_grad_avg = mom * grad_avg + (1 - mom) * gradient
    new_sqr_avg = sqr_mom * sqr_avg + (1 - sqr_mom) * tf.square(gradient)
    debias1, debias2 = 1 - tf.pow(mom, step), 1 - tf.pow(sqr_mom, step)
    new_param -= lr / debias1 * new_grad_avg / (tf.sqrt(new_sqr_avg / debias2) + epsilon)
    return tuple(tf.where(update, new, old) for new, old in (
        (new_param, param), (new_grad_avg, grad_avg), (new_sqr_avg, sqr_avg)))


# fastai's wd_bn_bias=False: no weight decay on BatchNorm's gamma and beta, nor on the biases
# norm_bias_params finds, those of modules with a `.bias` (Linear: the decoder's, a head's).
# Surprisingly, nn.LSTM keeps its biases as bias_ih_l0 / bias_hh_l0, which it misses: fastai
# decays the LSTM biases. So do we: the LSTM cell's bias (…/cell/bias) is left out here.
NO_WEIGHT_DECAY = ("gamma", "beta", r"(?<!cell/)bias")


def fastai_adam(learning_rate, beta_1, *, clip_norm=0.25, beta_2=0.99, epsilon=1e-5,
                weight_decay=0.01, lr_factors=None, gradients_reduced=False,
                mixed_precision=None):
    """The one optimizer factory: FastaiAdam clipping the gradient's global norm at
    `clip_norm` (None: no clipping), no weight decay on NO_WEIGHT_DECAY (searched in the
    variables' paths), and loss scaling under
    'mixed_float16' (float16 gradients underflow without it). `learning_rate` and `beta_1` may be
    schedules; `gradients_reduced` and `lr_factors` are FastaiAdam's."""
    adam = FastaiAdam(learning_rate, beta_1, beta_2, epsilon, weight_decay,
                      gradients_reduced=gradients_reduced, lr_factors=lr_factors,
                      global_clipnorm=clip_norm)
    adam.exclude_from_weight_decay(var_names=list(NO_WEIGHT_DECAY))
    if mixed_precision == "mixed_float16":
        return keras.optimizers.LossScaleOptimizer(adam)
    return adam
