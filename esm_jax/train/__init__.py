"""Masked-language-model pretraining on a device mesh: state, step, checkpoints, metrics, trainer."""
