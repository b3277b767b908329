"""Accuracy against ground truth: segmentation metrics (``metrics``: mIoU, per-class IoU, pixel accuracy)
and the paper's protocol (``paper``: crop to the person box, 1024 px, Table 1 side by side)."""
