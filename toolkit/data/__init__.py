"""Unpaired multi-domain image data: domain folders, two-domain batches and named dataset downloads."""

from toolkit.data.download import DATASETS, data_cache_dir, fetch_dataset, resolve_data
from toolkit.data.folders import DomainFolders, DomainImageDataset, default_load_size, image_shape
from toolkit.data.sampling import DomainPairBatchSampler, iterations_per_epoch, make_loader

__all__ = [
    "DATASETS",
    "DomainFolders",
    "DomainImageDataset",
    "DomainPairBatchSampler",
    "data_cache_dir",
    "default_load_size",
    "fetch_dataset",
    "image_shape",
    "iterations_per_epoch",
    "make_loader",
    "resolve_data",
]
