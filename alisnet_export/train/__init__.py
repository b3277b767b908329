"""Training the demo and test checkpoints: the loop, resumable states, DDP under torchrun, hardware info
(``trainer``). The data sources are in :mod:`alisnet_export.data`."""
