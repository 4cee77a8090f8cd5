"""Judging trained models and published runs: cross-validation against baselines, ranking metrics,
and verification of every published row against torch."""
