"""ULMFiT stage 3: the recipe (layer groups, discriminative rates, gradual unfreezing), the
classification and tagging jobs, their metric, and the run directory a job writes."""
