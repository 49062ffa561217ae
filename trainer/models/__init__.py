"""Keras layers and model builders: the AWD-LSTM and its regularizers, the classifier's and the
tagger's heads, and the seed API's builders (tf2_ulmfit_encoder, ulmfit_sequence_tagger, ...).
Nothing here knows files, flags, gin or strategies, except that the seed API's builders take a
pretrained model directory, which they read through trainer/checkpoints/."""
