"""edge-pipeline: data-free compression and verified export of image classifiers for edge targets."""

__version__ = "0.1.0"
