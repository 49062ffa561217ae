"""Model directories on disk: which checkpoint is intact, lm_config.json (what makes a
checkpoint loadable without the run that wrote it), and restoring weights by path."""
