"""The AWD-LSTM's defaults, one dict per model as fastai keeps them (`awd_lstm_lm_config`,
`awd_lstm_clas_config`). The layers, the gin files, the README and the tests take the numbers
from here; a config sets only what it changes.
"""
DROPOUTS = ("output_p", "hidden_p", "input_p", "embed_p", "weight_p")

AWD_LSTM_LM_CONFIG = dict(emb_size=400, hidden_size=1152, num_layers=3, pad_id=1,
                          output_p=0.1, hidden_p=0.15, input_p=0.25, embed_p=0.02, weight_p=0.2)

# The classifier regularizes harder. Its output_p is the head's first dropout (fastai pops it
# from the config into the head's `ps`); the encoder under a classifier has no output dropout.
AWD_LSTM_CLAS_CONFIG = dict(AWD_LSTM_LM_CONFIG, output_p=0.4, hidden_p=0.3, input_p=0.4,
                            embed_p=0.05, weight_p=0.5)


def awd_lstm_config(defaults, drop_mult=1.0, **overrides):
    """`defaults` updated by `overrides`, then every dropout times `drop_mult`.

    As fastai's drop_mult, it scales the dropouts a user set too: drop_mult 0.3 over the LM
    config is ULMFiT's LM fine-tuning, 0.5 over the classifier config the course's classifier.
    """
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise TypeError(f"Unknown AWD-LSTM setting(s) {unknown}; the settings are "
                        f"{sorted(defaults)} and drop_mult.")
    config = {**defaults, **overrides}
    return {k: v * drop_mult if k in DROPOUTS else v for k, v in config.items()}


def downstream_config(drop_mult=1.0, **config):
    """(sizes, dropouts) of an encoder fine-tuned for a task: AWD_LSTM_CLAS_CONFIG's dropouts
    updated by those in `config`, times `drop_mult`; the rest of `config` is sizes.

    Not the pretrained model's dropouts: those already carry its own drop_mult (0.3 after LM
    fine-tuning), and fastai starts every classifier from the classifier config.
    """
    sizes = {k: v for k, v in config.items() if k not in DROPOUTS}
    dropouts = awd_lstm_config({k: AWD_LSTM_CLAS_CONFIG[k] for k in DROPOUTS}, drop_mult,
                               **{k: v for k, v in config.items() if k in DROPOUTS})
    return sizes, dropouts
