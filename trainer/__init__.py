"""ULMFiT training. At this level: the commands (`python -m trainer.main`, `export`, `predict`,
`generate`, `lr_find`, `convert_fastai`) and the gin edge (configurables.py registers what the
configs bind; gin_reach.py checks that every binding reaches the job). Below, one folder per
concept: lm/ (language-model training), fine_tuning/, loop/ (what both loops share), serving/,
models/, checkpoints/, optim/, runtime/. Gin is read here and nowhere below."""
