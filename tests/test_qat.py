"""`alisnet-export qat`: QNNPACK fake-quantized fine-tuning, its schedule, resume, DDP, and `ptl` on its output."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alisnet_export.checkpoint import load_checkpoint
from alisnet_export.cli.qat_cmd import qat_steps, schedule_steps
from alisnet_export.data import write_synthetic_dataset
from alisnet_export.quantize.qat import load_qat_model

REPO = Path(__file__).resolve().parents[1]
TINY = ["--batch-size", "2", "--crop", "64x64", "--warmup", "0", "--no-progress", "--checkpoint-every", "1",
        "--height", "128", "--calibration-images", "testbed:calibration:2", "--check-images", "testbed:heldout:1"]


@pytest.fixture(scope="module")
def people(tmp_path_factory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("people"), 6, 96, 64, seed=3)


def test_steps_and_schedule():
    assert qat_steps(epochs=2, steps=None, num_images=10, batch_size=4, world_size=1) == 5
    assert qat_steps(epochs=1, steps=None, num_images=10, batch_size=4, world_size=2) == 2  # ranks share an epoch
    assert qat_steps(epochs=5, steps=7, num_images=10, batch_size=4, world_size=1) == 7
    assert schedule_steps(100, 0.5, 0.75) == (50, 75)
    assert schedule_steps(4, 0.9, 0.1) == (3, 3)  # observers never freeze before BN, both inside the run
    assert schedule_steps(1, 0.5, 0.75) == (0, 1)  # one step: the observers see it (never frozen in the run)
    assert schedule_steps(4, 0.0, 0.0) == (0, 1)


@pytest.mark.slow
def test_qat_writes_a_checkpoint_that_ptl_converts_and_resumes(run_cli, tmp_path, native_ckpt, people):
    out = tmp_path / "q.pth"
    code, stdout, err = run_cli("qat", native_ckpt, "--data", people, "--steps", "2", *TINY, "-o", out, "--json")
    assert code == 0, err
    info = json.loads(stdout)
    assert info["ok"] and info["qat"]["steps"] == 2 and info["qat"]["freeze_bn_step"] == 0
    # the recipe: ranges seeded from PTQ calibration at the deployment height, distillation, agreement before/after
    assert info["qat"]["calibrated_start"] and info["qat"]["height"] == 128
    assert info["qat"]["calibration"]["source"] == "testbed:calibration:2" and info["qat"]["loss"]["distillation"]
    agreement = info["qat"]["agreement_with_float"]
    assert set(agreement) == {"images", "start", "end", "ptq_int8"} and 0 <= agreement["end"]["mean_iou"] <= 1
    # activation ranges were equalized before the fake quantizers went in; the reference stays the original
    assert info["qat"]["equalization"]["applied"] and info["qat"]["equalization"]["chains"] > 10
    loaded = load_checkpoint(out)
    assert loaded.is_qat and loaded.qat["engine"] == "qnnpack" and loaded.qat["options"]["per_channel"] is True
    prepared, reference, _ = load_qat_model(loaded)
    # the fake-quant observers were frozen by the schedule and stay frozen in the checkpoint
    flags = [m.observer_enabled.item() for m in prepared.modules() if hasattr(m, "observer_enabled")]
    assert flags and not any(flags)
    # the reference is the float model the fine-tune started from, unchanged
    start = load_checkpoint(native_ckpt).state_dict
    assert all(torch.equal(reference.state_dict()[k], v) for k, v in start.items())

    # refused before any work when the output exists; --resume continues to more steps
    code, _, err = run_cli("qat", native_ckpt, "--data", people, "--steps", "2", *TINY, "-o", out)
    assert code == 3 and "already exists" in err
    code, stdout, err = run_cli("qat", native_ckpt, "--data", people, "--steps", "3", *TINY, "-o", out, "--force",
                                "--resume", tmp_path / "q.train", "--json")
    assert code == 0, err
    assert json.loads(stdout)["qat"]["steps"] == 3

    # ptl converts the QAT model (no calibration) and says so in the manifest
    code, stdout, err = run_cli("ptl", out, "--height", "128", "--no-person-crops", "-o", tmp_path / "ptl", "--json")
    assert code in (0, 1), err  # a random network's int8 masks may fail the gate; the conversion is what is tested
    result = json.loads(stdout)
    assert result["quantization"] == "eager-qat"
    manifest = json.loads(Path(result["manifest"]).read_text())
    assert manifest["artifacts"][0]["quantization"]["scheme"] == "eager-qat"
    assert manifest["artifacts"][0]["quantization"]["steps"] == 3


def test_qat_refuses_a_qat_checkpoint_and_bad_datasets(run_cli, tmp_path, native_ckpt, people):
    # image and mask stems that do not match
    bad = tmp_path / "bad"
    (bad / "images").mkdir(parents=True)
    (bad / "masks").mkdir()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(bad / "images" / "a.png")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(bad / "masks" / "b.png")
    out = tmp_path / "q.pth"
    code, _, err = run_cli("qat", native_ckpt, "--data", bad, "--steps", "1", *TINY, "-o", out)
    assert code == 3 and "a.png" in err and not out.exists()
    # a mask whose size differs from its image
    Image.fromarray(np.zeros((32, 64), np.uint8)).save(bad / "masks" / "a.png")
    (bad / "masks" / "b.png").unlink()
    code, _, err = run_cli("qat", native_ckpt, "--data", bad, "--steps", "1", *TINY, "-o", out)
    assert code == 3 and "size" in err and not out.exists()
    # no data source at all
    code, _, err = run_cli("qat", native_ckpt, "--steps", "1", *TINY, "-o", out)
    assert code == 2 and "choose exactly one of" in err
    # a QAT checkpoint as input
    q = tmp_path / "q1.pth"
    assert run_cli("qat", native_ckpt, "--data", people, "--steps", "1", *TINY, "-o", q)[0] == 0
    code, _, err = run_cli("qat", q, "--data", people, "--steps", "1", *TINY, "-o", tmp_path / "q2.pth")
    assert code == 3 and "already a QAT checkpoint" in err


@pytest.mark.slow
def test_qat_under_torchrun_with_two_cpu_processes(tmp_path, native_ckpt, people):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", PYTHONPATH=str(REPO))
    out = tmp_path / "ddp.pth"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "alisnet_export",
           "qat", str(native_ckpt), "--data", str(people), "--steps", "2", *TINY, "--device", "cpu", "-o", str(out), "--json"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    loaded = load_checkpoint(out)
    assert loaded.is_qat and loaded.qat["hardware"]["processes"] == 2
    assert loaded.qat["batch_size"] == 4  # 2 per process x 2 processes
    assert sorted(p.name for p in (tmp_path / "ddp.train").glob("train_state_*.pth"))[-1] == "train_state_0000002.pth"


def test_seeded_qat_model_starts_where_ptq_is():
    """Seeded from PTQ calibration (and frozen), the fake-quantized model agrees with the float model as well as
    the PTQ int8 model does, instead of starting from empty observers; checking it does not move its ranges;
    distillation then trains only the student."""
    from alisnet_export.data.testbed import SPLITS
    from alisnet_export.preprocess import preprocess
    from alisnet_export.quantize import eager
    from alisnet_export.quantize.qat import DistillationLoss, agreement, as_runner, seed_activation_ranges
    from alisnet_export.zoo import fixture_checkpoint

    float_model = load_checkpoint(fixture_checkpoint().path).build_model()
    people = SPLITS["calibration"].dataset(4, height=256, width=192)
    mean, std = float_model.config.input.mean, float_model.config.input.std
    calibration = [preprocess(people[i][0], mean=mean, std=std, height=256).tensor for i in range(4)]
    observed = eager.prepare(float_model, qat=False)
    eager.calibrate(observed, calibration)
    ptq = eager.convert(observed)
    seeded = eager.prepare(float_model, qat=True)
    assert seed_activation_ranges(seeded, observed) > 50
    eager.disable_activation_observers(seeded)
    with pytest.raises(ValueError, match="no activation quantizer"):
        seed_activation_ranges(seeded, float_model)
    inputs = [(f"x{i}", x.numpy()) for i, x in enumerate(calibration)]
    reference = as_runner(float_model)
    start, again = agreement(reference, as_runner(seeded), inputs), agreement(reference, as_runner(seeded), inputs)
    assert start == again  # frozen ranges: measuring does not calibrate
    assert start["mean_iou"] >= agreement(reference, as_runner(ptq), inputs)["mean_iou"] - 0.01, start
    cold = eager.prepare(float_model, qat=True)
    eager.disable_activation_observers(cold)  # empty observers, frozen: the ranges a cold start uses first
    assert start["mean_iou"] > agreement(reference, as_runner(cold), inputs)["mean_iou"] + 0.1

    seeded.train()
    loss = DistillationLoss(seeded, float_model)
    batch = torch.cat(calibration[:2])
    parts = loss(batch, torch.zeros(2, *batch.shape[2:], dtype=torch.long))
    assert set(parts) == {"loss_distill_coarse", "loss_distill_point"} and all(torch.isfinite(v) for v in parts.values())
    sum(parts.values()).backward()
    assert all(p.grad is None for p in float_model.parameters())  # the teacher is never trained
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in seeded.parameters())
    assert not float_model.training
