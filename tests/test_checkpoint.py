"""Checkpoint loading: native, detectron2 (.pth and numpy .pkl), and every bad-checkpoint case."""

import os
import pickle
import stat

import numpy as np
import pytest
import torch

from alisnet_export.checkpoint import (
    atomic_write,
    detectron2_to_native,
    load_checkpoint,
    native_to_detectron2,
    save_checkpoint,
)
from alisnet_export.config import load_config
from alisnet_export.errors import CheckpointError, OutputError
from alisnet_export.modeling import build_model

X = torch.randn(1, 3, 128, 96, generator=torch.Generator().manual_seed(3))


def _out(model):
    with torch.inference_mode():
        return model(X)


def test_native_round_trip_gives_identical_outputs(native_ckpt, random_model):
    loaded = load_checkpoint(native_ckpt)
    assert loaded.source_format == "native" and loaded.config.name == "alisnet_mnasnet"
    assert len(loaded.sha256) == 64 and loaded.meta["description"] == "random test model"
    torch.testing.assert_close(_out(loaded.build_model()), _out(random_model), rtol=0, atol=0)


def test_fp16_storage_halves_the_file_and_stays_close(tmp_path, random_model, mnasnet_config, native_ckpt):
    path = save_checkpoint(tmp_path / "half.pth", random_model.state_dict(), mnasnet_config, half=True)
    assert path.stat().st_size < 0.55 * native_ckpt.stat().st_size
    loaded = load_checkpoint(path)
    assert loaded.stored_dtypes.get("float16", 0) > 100
    assert all(v.dtype != torch.float16 for v in loaded.state_dict.values())
    torch.testing.assert_close(_out(loaded.build_model()), _out(random_model), rtol=0, atol=0.05)


@pytest.mark.parametrize("name", ["alisnet_mnasnet", "mobilenetv3_fpn_pointrend"])
def test_detectron2_round_trip_gives_identical_outputs(tmp_path, name):
    cfg = load_config(name)
    torch.manual_seed(0)
    model = build_model(cfg)
    d2 = native_to_detectron2(model.state_dict(), cfg)
    assert all(k.startswith(("backbone.", "sem_seg_head.")) for k in d2)
    assert any(k.startswith("sem_seg_head.point_head.fc1.") for k in d2)
    assert any(k.startswith("sem_seg_head.coarse_sem_seg_head.") for k in d2)
    if cfg.top_down:
        assert "backbone.fpn_lateral2.weight" in d2 and any(k.startswith("backbone.bottom_up.") for k in d2)
        assert "sem_seg_head.coarse_sem_seg_head.p5.4.norm.running_var" in d2
    path = tmp_path / "model_final.pth"
    torch.save({"model": d2, "iteration": 90000, "scheduler": {}, "optimizer": {}}, path)
    loaded = load_checkpoint(path)  # no config in the file: inferred from keys and shapes
    assert loaded.source_format == "detectron2" and loaded.config.name == name
    torch.testing.assert_close(_out(loaded.build_model()), _out(model), rtol=0, atol=0)


def test_detectron2_numpy_pkl_loads(tmp_path, random_model, mnasnet_config):
    d2 = {k: v.numpy() for k, v in native_to_detectron2(random_model.state_dict(), mnasnet_config).items()}
    path = tmp_path / "model_final.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": d2, "__author__": "Detectron2 Model Zoo", "matching_heuristics": True}, f)
    loaded = load_checkpoint(path, "alisnet_mnasnet")
    assert loaded.source_format == "detectron2-pkl"
    torch.testing.assert_close(_out(loaded.build_model()), _out(random_model), rtol=0, atol=0)


def test_resnext_keys_use_detectron2_resnet_names():
    cfg = load_config("resnext101_fpn_pointrend")
    with torch.device("meta"):
        from alisnet_export.modeling.alisnet import ALiSNet

        sd = ALiSNet(cfg).state_dict()
    d2 = native_to_detectron2(sd, cfg)
    for key in ["backbone.bottom_up.stem.conv1.weight", "backbone.bottom_up.stem.conv1.norm.running_mean",
                "backbone.bottom_up.res2.0.conv2.weight", "backbone.bottom_up.res5.2.conv3.norm.weight",
                "backbone.bottom_up.res3.0.shortcut.weight", "backbone.bottom_up.res3.0.shortcut.norm.bias"]:
        assert key in d2, key
    back = detectron2_to_native(d2, cfg)
    assert set(back) == {k for k in sd if not k.endswith("num_batches_tracked")}


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_that_runs_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "payload": _Evil(marker)}, path)
    with pytest.raises(CheckpointError, match=r"refused to load.*(os\.system|posix\.system).*Nothing from it was executed"):
        load_checkpoint(path)
    assert not marker.exists()


def test_pickle_that_runs_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"model": _Evil(marker)}))
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(path)
    assert not marker.exists()


def test_missing_empty_directory_and_non_checkpoint_files(tmp_path, data_dir):
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "nope.pth")
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(tmp_path)
    empty = tmp_path / "empty.pth"
    empty.touch()
    with pytest.raises(CheckpointError, match=r"empty \(0 bytes\)"):
        load_checkpoint(empty)
    text = tmp_path / "notes.pth"
    text.write_text("these are not weights")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(text)
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(data_dir / "astronaut.png")
    holds_list = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], holds_list)
    with pytest.raises(CheckpointError, match="holds a list"):
        load_checkpoint(holds_list)


@pytest.mark.parametrize("fraction", [0.5, 0.98])
def test_truncated_checkpoint_names_the_problem(tmp_path, native_ckpt, fraction):
    data = native_ckpt.read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(CheckpointError, match=f"{path.name}.*truncated or corrupt"):
        load_checkpoint(path)


def test_missing_unexpected_and_mismatched_keys_are_listed(tmp_path, random_model, mnasnet_config):
    sd = dict(random_model.state_dict())
    del sd["head.predictor.weight"]
    sd["head.extra.weight"] = torch.zeros(3)
    sd["point_rend.point_head.predictor.bias"] = torch.zeros(5)
    path = save_checkpoint(tmp_path / "bad.pth", sd, mnasnet_config)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert "bad.pth" in msg
    assert "point_rend.point_head.predictor.bias checkpoint (5,) vs model (2,)" in msg
    assert "1 missing keys, e.g. head.predictor.weight" in msg
    assert "1 unexpected keys, e.g. head.extra.weight" in msg


def test_wrong_variant_suggests_the_matching_config(tmp_path):
    cfg = load_config("alisnet_mobilenetv2")
    path = save_checkpoint(tmp_path / "mbv2.pth", build_model(cfg).state_dict(), cfg)
    with pytest.raises(CheckpointError, match="is for variant 'alisnet_mobilenetv2', not 'alisnet_mnasnet'.*--config alisnet_mobilenetv2"):
        load_checkpoint(path, "alisnet_mnasnet")


def test_coarse_only_checkpoint_loads_as_the_no_pointrend_ablation(tmp_path, random_model, mnasnet_config):
    sd = {k: v for k, v in random_model.state_dict().items() if not k.startswith("point_rend.")}
    path = save_checkpoint(tmp_path / "coarse.pth", sd, mnasnet_config)
    loaded = load_checkpoint(path)
    assert not loaded.config.point_rend.enabled
    dropped = load_checkpoint(tmp_path / "coarse.pth", pointrend=False)
    assert dropped.build_model().point_rend is None


def test_atomic_write_refuses_existing_and_unwritable_outputs(tmp_path):
    target = tmp_path / "a.bin"
    atomic_write(target, lambda p: p.write_bytes(b"1"))
    with pytest.raises(OutputError, match="already exists.*--force"):
        atomic_write(target, lambda p: p.write_bytes(b"2"))
    assert target.read_bytes() == b"1"
    atomic_write(target, lambda p: p.write_bytes(b"2"), force=True)
    assert target.read_bytes() == b"2"
    # a normal file's permissions (what open() would give under this umask), not mkstemp's private 0600
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "mode.bin", lambda p: p.write_bytes(b"m"))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "mode.bin").stat().st_mode) == 0o644
    (tmp_path / "mode.bin").unlink()

    def boom(p):
        p.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "b.bin", boom)
    assert sorted(os.listdir(tmp_path)) == ["a.bin"]  # no partial file left behind
    with pytest.raises(OutputError, match="cannot create folder"):  # parent is a file: unwritable even for root
        atomic_write(target / "c.bin", lambda p: p.write_bytes(b"x"))
    if os.geteuid() != 0:  # root can write into read-only folders
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
        with pytest.raises(OutputError, match="not writable"):
            atomic_write(ro / "c.bin", lambda p: p.write_bytes(b"x"))


def test_native_checkpoints_carry_a_format_version_and_old_layouts_migrate(tmp_path, random_model, mnasnet_config):
    from alisnet_export.checkpoint import CHECKPOINT_FORMAT, migrate_container, save_checkpoint

    path = save_checkpoint(tmp_path / "new.pth", random_model.state_dict(), mnasnet_config)
    assert torch.load(path, weights_only=True)["format"] == CHECKPOINT_FORMAT
    # a file written before the key existed (format 0) still loads, migrated
    old = torch.load(path, weights_only=True)
    del old["format"]
    torch.save(old, tmp_path / "old.pth")
    loaded = load_checkpoint(tmp_path / "old.pth")
    assert loaded.config.name == mnasnet_config.name and loaded.source_format == "native"
    assert migrate_container(tmp_path / "old.pth", old)["format"] == CHECKPOINT_FORMAT
    # a file from a newer alisnet-export is refused with what to do
    newer = {**old, "format": CHECKPOINT_FORMAT + 1}
    torch.save(newer, tmp_path / "newer.pth")
    with pytest.raises(CheckpointError, match="newer than this alisnet-export reads"):
        load_checkpoint(tmp_path / "newer.pth")
