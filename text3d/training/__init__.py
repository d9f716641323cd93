"""The training loop and what it needs around it: stages, checkpoints and previews."""
