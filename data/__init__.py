"""Data package: image I/O, preprocessing, zero-maps and the registered datasets.

Importing it registers every dataset class in utils.registry.DATASET_REGISTRY.
"""
from . import demo, folder_dataset, lol_dataset, semi_dataset, synthetic_dataset, video_dataset  # noqa: F401
