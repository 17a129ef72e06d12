"""Labelled datasets for evaluation and few-shot use: Fashion-MNIST (Debian package) or an image folder."""

from pipeline.data.datasets import LabelledImages, load_eval_dataset

__all__ = ["LabelledImages", "load_eval_dataset"]
