"""Shared fixtures. Most tests use small inputs (<= 320 px); a few marked ``slow`` run at 1024 px."""

from __future__ import annotations

import os
import platform
import warnings
from pathlib import Path

import pytest
import torch

from alisnet_export.allocator import keep_freed_memory

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parents[1]

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
keep_freed_memory()  # as the command line does: 1024 px activations are reused, not page-faulted in per forward
warnings.filterwarnings("ignore", message=".*is deprecated.*")


def pytest_collection_modifyitems(config, items):
    """``@pytest.mark.macos`` tests (Core ML prediction) run on a Mac only; elsewhere they skip with the reason."""
    if platform.system() == "Darwin":
        return
    skip = pytest.mark.skip(reason="Core ML prediction needs macOS")
    for item in items:
        if item.get_closest_marker("macos") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def mnasnet_config():
    from alisnet_export.config import load_config

    return load_config("alisnet_mnasnet")


@pytest.fixture(scope="session")
def random_model(mnasnet_config):
    """A randomly initialised ALiSNet-MnasNet with non-trivial BN statistics, in eval mode."""
    from alisnet_export.modeling import build_model

    torch.manual_seed(0)
    model = build_model(mnasnet_config)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="session")
def native_ckpt(tmp_path_factory, random_model, mnasnet_config) -> Path:
    from alisnet_export.checkpoint import save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "random.pth"
    save_checkpoint(path, random_model.state_dict(), mnasnet_config, meta={"description": "random test model"})
    return path


@pytest.fixture
def run_cli(capsys):
    """Run ``alisnet-export ARGS`` in-process; returns (exit_code, stdout, stderr)."""
    from alisnet_export.cli import main

    def run(*args: str):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


@pytest.fixture(scope="session")
def random_mbv2_ckpt(tmp_path_factory) -> Path:
    """A random ALiSNet-MobileNetV2 checkpoint: exports fine, but its int8 masks drift (parity fails)."""
    from alisnet_export.checkpoint import save_checkpoint
    from alisnet_export.config import load_config
    from alisnet_export.modeling import build_model

    torch.manual_seed(0)
    cfg = load_config("alisnet_mobilenetv2")
    path = tmp_path_factory.mktemp("ckpt") / "random_mbv2.pth"
    save_checkpoint(path, build_model(cfg).state_dict(), cfg)
    return path
