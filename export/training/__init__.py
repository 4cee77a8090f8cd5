"""The training stage: configs, the fit loop, the optimiser, training one model, workers."""
