"""SavedModels that take raw text: a fine-tuned classifier's or tagger's run (runs.py), and the
language model (language_model.py)."""
