"""Objectives, training loop, checkpoints and distributed training (installed as ``pssl.inference``)."""
