"""``alisnet-export train-demo`` end to end, its user errors, and the committed fixture checkpoint."""

import json
import math

import numpy as np
import pytest
import torch
import click
from click.testing import CliRunner

from alisnet_export.checkpoint import load_checkpoint, sha256_file
from alisnet_export.cli import main
from alisnet_export.zoo import default_checkpoint, fixture_checkpoint

TINY = ["--steps", "2", "--batch-size", "2", "--crop", "64x64", "--eval-images", "2", "--precise-bn", "2",
        "--warmup", "0", "--no-progress"]


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []})
@click.pass_context
def _entry_point(ctx):
    main(ctx.args)  # the console script's own error handling and exit codes


def _run(args):
    return CliRunner().invoke(_entry_point, args, catch_exceptions=False)


def test_train_demo_synthetic_writes_a_loadable_checkpoint_and_resumes(tmp_path):
    out = tmp_path / "demo.pth"
    result = _run(["train-demo", "--synthetic", *TINY, "--output", str(out), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["ok"] and info["checkpoint"] == str(out)
    loaded = load_checkpoint(out)
    assert loaded.config.name == "alisnet_mnasnet" and loaded.stored_dtypes.get("float16", 0) > 100
    meta = loaded.meta
    assert meta["steps"] == 2 and meta["seed"] == 0 and meta["training_time_s"] > 0
    assert meta["trained_on"].startswith("synthetic people") and meta["hardware"]["device"] == "cpu"
    assert meta["hardware"]["threads"] >= 1 and meta["hardware"]["cpu"]
    assert set(meta["metrics"]) >= {"miou", "foreground_iou_mean", "foreground_iou_std", "num_images"}
    assert meta["metrics"]["num_images"] == 2
    assert meta["command"].startswith("alisnet-export train-demo --synthetic --config alisnet_mnasnet --steps 2")
    assert meta["precise_bn_batches"] == 2
    model = loaded.build_model()
    with torch.inference_mode():
        assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 2, 64, 64)
    state_dir = tmp_path / "demo.train"
    assert [p.name for p in state_dir.glob("train_state_*.pth")] == ["train_state_0000002.pth"]

    again = _run(["train-demo", "--synthetic", *TINY, "--output", str(out)])
    assert again.exit_code == 3 and "already exists; pass --force" in again.output  # refused before training

    more = [a if a != "2" or i != 1 else "3" for i, a in enumerate(TINY)]  # --steps 3
    resumed = _run(["train-demo", "--synthetic", *more, "--output", str(out), "--force", "--resume", str(state_dir)])
    assert resumed.exit_code == 0, resumed.output
    assert load_checkpoint(out).meta["steps"] == 3
    assert sorted(p.name for p in state_dir.glob("train_state_*.pth")) == ["train_state_0000002.pth", "train_state_0000003.pth"]


@pytest.mark.parametrize("args, message", [
    ([], "no data source: choose exactly one of --synthetic, --data, --coco"),
    (["--synthetic", "--data", "x"], "several data sources (--synthetic, --data)"),
    (["--synthetic", "--crop", "100x64"], "multiples of 32"),
    (["--coco", "ann.json"], "--coco needs --images"),
])
def test_train_demo_usage_errors(tmp_path, args, message):
    result = _run(["train-demo", *args, "--output", str(tmp_path / "x.pth")])
    assert result.exit_code == 2 and message in result.output


def test_train_demo_reports_bad_data_and_backbone_files(tmp_path):
    (tmp_path / "d" / "images").mkdir(parents=True)
    (tmp_path / "d" / "masks").mkdir()
    from alisnet_export.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["train-demo", "--data", str(tmp_path / "d"), "--output", str(tmp_path / "x.pth")])
    assert exit_info.value.code == 3
    bad = tmp_path / "weights.pth"
    torch.save({"layers.0.weight": torch.zeros(3)}, bad)
    with pytest.raises(SystemExit) as exit_info:
        main(["train-demo", "--synthetic", *TINY, "--init-backbone", str(bad), "--output", str(tmp_path / "y.pth")])
    assert exit_info.value.code == 3


def test_train_demo_starts_from_imagenet_backbone_weights(tmp_path):
    import torchvision

    weights = tmp_path / "mnasnet1.0_imagenet.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.mnasnet1_0(weights=None).state_dict(), weights)
    args = ["train-demo", "--synthetic", *TINY, "--steps", "1", "--eval-images", "0", "--precise-bn", "0",
            "--init-backbone", str(weights), "--output", str(tmp_path / "b.pth")]
    result = _run(args)
    assert result.exit_code == 0, result.output
    assert "backbone: 52 tensors" in result.output or "backbone:" in result.output
    assert load_checkpoint(tmp_path / "b.pth").meta["init_backbone"] == str(weights)


# -- the committed fixture ------------------------------------------------------------------------
def test_committed_fixture_is_registered_and_intact():
    entry = fixture_checkpoint()
    assert entry.path.is_file() and sha256_file(entry.path) == entry.sha256
    assert default_checkpoint().name == entry.name  # the testbed model is the embedded default and the fixture
    assert entry.meta["file_size_bytes"] == entry.path.stat().st_size < 8_000_000
    metrics = entry.meta["metrics"]
    assert metrics["data"].startswith("testbed:heldout:") and metrics["images"] >= 50 and metrics["height"] == 1024


def test_committed_fixture_reaches_its_reported_iou_on_held_out_testbed_people(run_cli):
    """Re-scored with the paper's protocol at 1024 px on the first held-out testbed people (never trained on)."""
    entry = fixture_checkpoint()
    reported = entry.meta["metrics"]
    n = 6
    code, out, err = run_cli("eval", entry.path, "--data", f"testbed:heldout:{n}", "--height", "1024", "--json")
    assert code == 0, err
    per_image = [next(iter(im["iou"].values())) for im in json.loads(out)["images"]]
    recorded = reported["per_image_iou"][:n]
    # the same images through the same model: the same numbers (the recorded run used the same code path)
    assert np.allclose(per_image, recorded, atol=2e-3), (per_image, recorded)
    assert np.mean(per_image) >= reported["person_iou_mean"] - 3 * reported["person_iou_std"] / math.sqrt(n)


def test_train_demo_fine_tunes_from_a_checkpoint_with_a_wider_scale_range(tmp_path):
    first = tmp_path / "a.pth"
    assert _run(["train-demo", "--synthetic", *TINY, "--output", str(first)]).exit_code == 0
    second = tmp_path / "b.pth"
    result = _run(["train-demo", "--synthetic", *TINY, "--init-from", str(first), "--scale-range", "1,2",
                   "--output", str(second)])
    assert result.exit_code == 0, result.output
    assert "fine-tuning from" in result.output
    meta = load_checkpoint(second).meta
    assert meta["init_from"] == str(first) and "--scale-range 1.0,2.0" in meta["command"]
    bad = _run(["train-demo", "--synthetic", *TINY, "--scale-range", "2,1", "--output", str(tmp_path / "c.pth")])
    assert bad.exit_code == 2 and "LO <= HI" in bad.output
