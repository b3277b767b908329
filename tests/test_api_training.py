"""The training recipes from Python: `api.qat` (quantization-aware fine-tuning) and `api.train_demo`."""

import pytest
import torch

from alisnet_export import api
from alisnet_export.checkpoint import load_checkpoint
from alisnet_export.data import SyntheticData, write_synthetic_dataset
from alisnet_export.errors import CheckpointError, OutputError
from alisnet_export.quantize.qat import EXPORT_FIDELITY_MIN_IOU, load_qat_model

#: as tests/test_qat.py: 64 px crops of 128 px images, 2 calibration and 1 check image from the testbed
TINY = dict(batch_size=2, crop=(64, 64), warmup=0, progress=False, checkpoint_every=1, height=128,
            calibration_images=["testbed:calibration:2"], check_images=["testbed:heldout:1"])


def test_qat_from_python_writes_a_checkpoint_and_reports_what_it_measured(tmp_path, native_ckpt):
    people = write_synthetic_dataset(tmp_path / "people", 6, 96, 64, seed=3)
    out, lines = tmp_path / "q.pth", []
    result = api.qat(native_ckpt, str(people), out, steps=2, check_export_fidelity=True, log=lines.append, **TINY)

    assert result.checkpoint == out and result.size_bytes == out.stat().st_size and result.steps == 2
    assert result.training_state.name == "train_state_0000002.pth" and result.training_state.is_file()
    assert result.device == "cpu" and 0 < result.training_seconds <= result.seconds
    # what was measured is what the checkpoint records
    loaded = load_checkpoint(out)
    assert loaded.is_qat and loaded.qat["steps"] == 2 and loaded.qat["height"] == 128
    recorded = loaded.qat["agreement_with_float"]
    assert recorded["start"] == result.agreement_start and recorded["end"] == result.agreement_end
    assert recorded["ptq_int8"] == result.ptq_agreement and recorded["images"]["source"] == "testbed:heldout:1"
    assert result.check_set.source == "testbed:heldout:1" and result.agreement_end["images"] == 1
    assert result.improved == (result.agreement_end["mean_iou"] > result.agreement_start["mean_iou"])
    assert loaded.qat["command"] is None and result.info["calibration"]["source"] == "testbed:calibration:2"
    # the int8 model converted from it draws what the fake-quantized model draws, or says it does not
    fidelity = result.export_fidelity
    assert fidelity["images"] == 1 and fidelity["min_mean_iou"] == EXPORT_FIDELITY_MIN_IOU
    assert fidelity["passed"] == (fidelity["mean_iou"] >= EXPORT_FIDELITY_MIN_IOU)
    # progress went to log, nothing was printed by the library
    assert any("activation ranges seeded from PTQ calibration on" in m and "at 128 px (testbed:calibration:2)" in m
               for m in lines), lines
    assert any(m.startswith("before QAT, fake-quantized vs float on testbed:heldout:1") for m in lines)
    assert lines[0].startswith("warning: calibrating on 2 image(s)")
    assert any(m.startswith("QAT (qnnpack) of alisnet_mnasnet") and "2 steps x 2" in m for m in lines)
    # the observers were frozen by the schedule; the reference is the float model it started from
    prepared, reference, _ = load_qat_model(loaded)
    assert not any(m.observer_enabled.item() for m in prepared.modules() if hasattr(m, "observer_enabled"))
    start = load_checkpoint(native_ckpt).state_dict
    assert all(torch.equal(reference.state_dict()[k], v) for k, v in start.items())

    with pytest.raises(OutputError, match="already exists"):  # nothing is overwritten without force
        api.qat(native_ckpt, str(people), out, steps=1, **TINY)
    with pytest.raises(CheckpointError, match="already a QAT checkpoint"):
        api.qat(out, str(people), tmp_path / "q2.pth", steps=1, **TINY)


def test_train_demo_from_python(tmp_path):
    out, lines = tmp_path / "demo.pth", []
    result = api.train_demo(SyntheticData(), out, steps=2, batch_size=2, crop=(64, 64), eval_images=2, precise_bn=1,
                            warmup=0, progress=False, log=lines.append)
    assert result.checkpoint == out and result.steps == 2 and result.metrics.num_images == 2
    meta = load_checkpoint(out).meta
    assert meta == result.meta and meta["precise_bn_batches"] == 1 and meta["trained_on"].startswith("synthetic")
    assert meta["command"].startswith("alisnet-export train-demo --synthetic --config alisnet_mnasnet --steps 2 ")
    assert lines[0].startswith("training alisnet_mnasnet on synthetic people") and lines[-1].startswith("held-out:")
