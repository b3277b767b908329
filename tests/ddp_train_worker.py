"""Run by tests/test_training.py under ``python -m torch.distributed.run --nproc_per_node 2``.

Each rank builds its model from a *different* seed (DDP must broadcast rank 0's weights), trains
two steps on tiny synthetic images and saves its final state dict as ``OUT/rank<R>.pt``.
"""

import dataclasses
import json
import os
import sys
from pathlib import Path

import torch

from alisnet_export.config import load_config
from alisnet_export.data import SyntheticPeople, TrainTransform
from alisnet_export.modeling import build_model
from alisnet_export.train.trainer import TrainOptions, train


def main(out: Path) -> None:
    rank = int(os.environ["RANK"])
    cfg = load_config("alisnet_mnasnet")
    cfg = dataclasses.replace(cfg, conv_dims=32, point_rend=dataclasses.replace(cfg.point_rend, fc_dim=32, train_num_points=256))
    torch.manual_seed(100 + rank)
    model = build_model(cfg)
    options = TrainOptions(steps=2, batch_size=2, lr=1e-3, warmup_steps=0, bn_momentum=0.1, device="cpu", threads=1,
                           output_dir=out / "states", progress=False, log_every=1)
    result = train(model, SyntheticPeople(16, 64, 64, seed=0), TrainTransform((64, 64), cfg.input.mean, cfg.input.std),
                   options)
    torch.save(model.state_dict(), out / f"rank{rank}.pt")
    (out / f"rank{rank}.json").write_text(json.dumps({"world_size": result.world_size, "rank": result.rank,
                                                      "losses": result.losses}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
