"""The shared training loop: learning, resume, hooks, BN helpers, metrics, and 2-process DDP."""

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from alisnet_export.config import load_config
from alisnet_export.data import SyntheticPeople, TrainTransform
from alisnet_export.errors import CheckpointError
from alisnet_export.evaluate.metrics import evaluate_miou
from alisnet_export.modeling import build_model
from alisnet_export.train.trainer import (
    TrainOptions,
    load_training_state,
    lr_factor,
    recompute_bn_stats,
    set_bn_momentum,
    train,
)

TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def tiny_config():
    """ALiSNet-MnasNet with a narrow head and few points: the same code paths, fast at 64 px."""
    cfg = load_config("alisnet_mnasnet")
    return dataclasses.replace(cfg, conv_dims=32,
                               point_rend=dataclasses.replace(cfg.point_rend, fc_dim=32, train_num_points=256))


def _model(cfg, seed=0):
    torch.manual_seed(seed)
    return build_model(cfg)


def _options(**kw):
    base = dict(steps=6, batch_size=2, lr=2e-3, warmup_steps=2, bn_momentum=0.1, device="cpu", progress=False)
    base.update(kw)
    return TrainOptions(**base)


def _transform(cfg, **kw):
    return TrainTransform((64, 64), cfg.input.mean, cfg.input.std, **kw)


def test_loss_decreases_when_overfitting_one_batch(tiny_config):
    model = _model(tiny_config)
    still = _transform(tiny_config, scale_range=(1.0, 1.0), hflip=0.0, color_jitter=0.0)
    result = train(model, SyntheticPeople(4, 64, 64, seed=5), still,
                   _options(steps=40, batch_size=4, lr=3e-3, warmup_steps=0, schedule="constant"))
    losses = [loss for _, loss in result.losses]
    assert len(losses) == 40 and [s for s, _ in result.losses] == list(range(1, 41))
    assert np.mean(losses[-5:]) < 0.6 * losses[0], losses


def test_resume_continues_at_the_right_step_with_identical_results(tiny_config, tmp_path):
    data, transform = SyntheticPeople(12, 64, 64, seed=1), _transform(tiny_config)
    calls_full: list[int] = []
    full = _model(tiny_config)
    full_result = train(full, data, transform, _options(output_dir=tmp_path / "a", checkpoint_every=3),
                        hooks=[lambda step, m: calls_full.append(step)])
    states = sorted(p.name for p in (tmp_path / "a").glob("train_state_*.pth"))
    assert states == ["train_state_0000003.pth", "train_state_0000006.pth"]
    assert full_result.last_state == tmp_path / "a" / "train_state_0000006.pth"

    calls_resumed: list[int] = []
    resumed = _model(tiny_config, seed=99)  # other initial weights: everything must come from the state
    result = train(resumed, data, transform, _options(output_dir=tmp_path / "b"),
                   resume=tmp_path / "a" / "train_state_0000003.pth",
                   hooks=[lambda step, m: calls_resumed.append(step)])
    assert result.start_step == 3 and [s for s, _ in result.losses] == [4, 5, 6]
    assert calls_full == list(range(6)) and calls_resumed == list(range(6))  # 0..2 replayed, then 3..5 trained
    for (s, a), (_, b) in zip(full_result.losses[3:], result.losses):
        assert math.isclose(a, b, rel_tol=1e-5), (s, a, b)
    full_sd, resumed_sd = full.state_dict(), resumed.state_dict()
    for key in full_sd:
        torch.testing.assert_close(resumed_sd[key], full_sd[key], rtol=1e-5, atol=1e-6, msg=key)


def test_training_state_is_weights_only_loadable_and_validated(tiny_config, tmp_path, native_ckpt):
    model = _model(tiny_config)
    train(model, SyntheticPeople(4, 64, 64), _transform(tiny_config), _options(steps=1, output_dir=tmp_path, log_every=1))
    path = tmp_path / "train_state_0000001.pth"
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "alisnet-export-training-state" and raw["step"] == 1
    assert {"model", "optimizer", "scheduler", "rng", "options", "config"} <= set(raw)
    assert raw["config"]["conv_dims"] == 32 and len(raw["rng"]["torch"]) == 1
    assert json.loads((tmp_path / "train_log.jsonl").read_text().splitlines()[0])["step"] == 1
    assert load_training_state(tmp_path)["path"] == str(path)  # a folder means its latest state
    with pytest.raises(CheckpointError, match="not a training state"):
        load_training_state(native_ckpt)
    with pytest.raises(CheckpointError, match="holds no training state"):
        load_training_state(tmp_path / "train_log.jsonl").__class__  # a file that is not a state
    with pytest.raises(CheckpointError, match="already at step 1"):
        train(model, SyntheticPeople(4, 64, 64), _transform(tiny_config), _options(steps=1), resume=path)
    other = _model(load_config("alisnet_mnasnet"))
    with pytest.raises(CheckpointError, match="does not fit this model"):
        train(other, SyntheticPeople(4, 64, 64), _transform(tiny_config), _options(steps=2), resume=path)


def test_dataset_smaller_than_a_batch_is_a_clear_error(tiny_config):
    from alisnet_export.errors import DataError

    with pytest.raises(DataError, match="too few for one batch of 8"):
        train(_model(tiny_config), SyntheticPeople(3, 64, 64), _transform(tiny_config), _options(batch_size=8))


def test_lr_schedule_warms_up_then_decays():
    opt = TrainOptions(steps=100, warmup_steps=10, min_lr_ratio=0.01)
    assert lr_factor(0, opt) == pytest.approx(0.001)
    assert lr_factor(5, opt) == pytest.approx(0.5005)
    assert lr_factor(10, opt) == pytest.approx(1.0)
    assert lr_factor(55, opt) == pytest.approx(0.505)
    assert lr_factor(100, opt) == pytest.approx(0.01)
    poly = dataclasses.replace(opt, schedule="poly")
    assert lr_factor(100, poly) == 0.0 and 0 < lr_factor(50, poly) < 1


def test_bn_momentum_override_and_precise_bn():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, momentum=0.0003))
    assert set_bn_momentum(net, 0.1) == 1 and net[1].momentum == 0.1
    batches = [torch.randn(2, 3, 8, 8) * (i + 1) + i for i in range(3)]
    net[1].running_mean.fill_(123.0)
    net.eval()
    assert recompute_bn_stats(net, [(b, None) for b in batches] * 5, num_batches=3) == 3
    with torch.no_grad():
        outs = [net[0](b) for b in batches]
    expected_mean = torch.stack([o.mean(dim=(0, 2, 3)) for o in outs]).mean(0)
    expected_var = torch.stack([o.var(dim=(0, 2, 3), unbiased=True) for o in outs]).mean(0)
    torch.testing.assert_close(net[1].running_mean, expected_mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(net[1].running_var, expected_var, rtol=1e-4, atol=1e-5)
    assert net[1].momentum == 0.1 and not net.training  # restored


class _RedChannelModel(nn.Module):
    """Predicts "person" wherever the (normalised) red channel is bright: a model with known output."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return torch.cat([torch.zeros_like(x[:, :1]), x[:, :1]], dim=1)


def test_evaluate_miou_on_known_masks():
    def image_with(pred):
        im = np.zeros((64, 64, 3), dtype=np.uint8)
        im[pred, 0] = 255
        return im

    a = np.zeros((64, 64), dtype=bool)
    a[:32, :32] = True
    half = np.zeros((64, 64), dtype=bool)
    half[:32, :16] = True
    empty = np.zeros((64, 64), dtype=bool)
    data = [(image_with(a), a), (image_with(a), half), (image_with(empty), empty)]
    m = evaluate_miou(_RedChannelModel(), data)
    # per image IoU: 1, 512/1024 and 1 (nothing to find, nothing found)
    assert m.num_images == 3
    assert m.foreground_iou_mean == pytest.approx(2.5 / 3)
    assert m.foreground_iou_std == pytest.approx(np.std([1.0, 0.5, 1.0]))
    # pixels: tp 1536, fp 512, fn 0, tn 3072 + 3072 + 4096
    assert m.iou_person == pytest.approx(1536 / 2048)
    assert m.iou_background == pytest.approx(10240 / 10752)
    assert m.miou == pytest.approx((1536 / 2048 + 10240 / 10752) / 2)
    ignored = np.where(half, 1, 0).astype(np.uint8)
    ignored[:32, 16:32] = 255  # the false positives fall in an ignore region
    assert evaluate_miou(_RedChannelModel(), [(image_with(a), ignored)]).foreground_iou_mean == 1.0
    x = torch.stack([torch.from_numpy(image_with(a)).permute(2, 0, 1).float() - 100.0])
    batched = evaluate_miou(_RedChannelModel(), [(x, torch.from_numpy(half).long().unsqueeze(0))])
    assert batched.foreground_iou_mean == pytest.approx(0.5)


@pytest.mark.slow
def test_two_process_ddp_ends_with_identical_weights(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(TESTS / "ddp_train_worker.py"), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    infos = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [i["world_size"] for i in infos] == [2, 2] and [i["rank"] for i in infos] == [0, 1]
    assert infos[0]["losses"] == infos[1]["losses"]  # the logged loss is the mean over ranks
    sd0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    sd1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert sd0.keys() == sd1.keys()
    for key in sd0:
        assert torch.equal(sd0[key], sd1[key]), key
    assert [p.name for p in (tmp_path / "states").glob("train_state_*.pth")] == ["train_state_0000002.pth"]
    assert len((tmp_path / "states" / "train_log.jsonl").read_text().splitlines()) == 2  # rank 0 only


def test_backbone_lr_mult_scales_only_the_backbone_groups(tiny_config):
    from alisnet_export.train.trainer import _build_optimizer

    model = build_model(tiny_config)
    opt = _build_optimizer(model, TrainOptions(steps=10, lr=1e-3, backbone_lr_mult=0.1))
    backbone_ids = {id(p) for n, p in model.named_parameters() if n.startswith("backbone.")}
    seen = 0
    for group in opt.param_groups:
        in_backbone = {id(p) in backbone_ids for p in group["params"]}
        assert len(in_backbone) == 1  # a group is all backbone or all head
        assert group["lr"] == pytest.approx(1e-4 if in_backbone.pop() else 1e-3)
        seen += len(group["params"])
    assert seen == sum(1 for p in model.parameters() if p.requires_grad)
    # the schedule keeps the ratio
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5)
    assert {round(g["lr"] / g["lr_mult"], 12) for g in opt.param_groups} == {5e-4}
    del scheduler
