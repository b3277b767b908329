import json

import pytest

from alisnet_export.config import ModelConfig, list_configs, load_config
from alisnet_export.errors import ConfigError

PAPER_VARIANTS = {"alisnet_mnasnet", "alisnet_mobilenetv2", "mnasnet_fpn_pointrend", "mobilenetv3_fpn_pointrend",
                  "resnext101_fpn_pointrend"}


def test_all_paper_variants_ship():
    assert PAPER_VARIANTS <= set(list_configs())


@pytest.mark.parametrize("name", sorted(PAPER_VARIANTS))
def test_config_round_trips_through_dict(name):
    cfg = load_config(name)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    json.dumps(cfg.to_dict())


def test_alisnet_has_no_top_down_and_baselines_do():
    assert load_config("alisnet_mnasnet").top_down is False
    assert load_config("mnasnet_fpn_pointrend").top_down is True
    pr = load_config("alisnet_mnasnet").point_rend
    assert (pr.subdivision_steps, pr.subdivision_num_points, pr.oversample_ratio, pr.importance_sample_ratio) == (2, 8192, 3.0, 0.75)


def test_with_pointrend_toggles_and_renames():
    cfg = load_config("alisnet_mnasnet").with_pointrend(False)
    assert not cfg.point_rend.enabled and cfg.name == "alisnet_mnasnet-no-pointrend"
    assert cfg.with_pointrend(True).name == "alisnet_mnasnet"


def test_unknown_config_lists_shipped_ones():
    with pytest.raises(ConfigError, match="alisnet_mnasnet"):
        load_config("no_such_variant")


def test_bad_config_files_give_clear_errors(tmp_path):
    p = tmp_path / "c.json"
    p.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(p)
    p.write_text(json.dumps({"name": "x", "backbone": "mnasnet1_0", "colour": "red"}))
    with pytest.raises(ConfigError, match="unknown key.*colour"):
        load_config(p)
    p.write_text(json.dumps({"name": "x", "backbone": "vgg16"}))
    with pytest.raises(ConfigError, match="unknown backbone 'vgg16'"):
        load_config(p)
    p.write_text(json.dumps({"name": "x", "backbone": "mnasnet1_0", "point_rend": {"importance_sample_ratio": 2}}))
    with pytest.raises(ConfigError, match="importance_sample_ratio"):
        load_config(p)
