"""`alisnet-export eval`: the paper's per-image person IoU on ground truth, checkpoints and artifacts side by side."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from alisnet_export.data.coco_masks import mask_to_rle
from alisnet_export.data.synthetic import write_synthetic_dataset
from alisnet_export.evaluate.paper import EvalItem, EvalTarget, evaluate_targets
from alisnet_export.preprocess import crop_box, person_box

PTL = "alisnet_mobilenetv2-float32.ptl"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("people") / "set", 4, height=256, width=192, seed=3)


@pytest.fixture(scope="module")
def coco(dataset):
    """The same images and exact masks as a COCO file (one person instance each, with its bbox)."""
    images, annotations = [], []
    for i, path in enumerate(sorted((dataset / "images").iterdir())):
        mask = np.asarray(Image.open(dataset / "masks" / path.name)) > 127
        x0, y0, x1, y1 = person_box(mask)
        images.append({"id": i, "file_name": path.name, "height": mask.shape[0], "width": mask.shape[1]})
        annotations.append({"id": 100 + i, "image_id": i, "category_id": 1, "iscrowd": 0, "bbox": [x0, y0, x1 - x0, y1 - y0],
                            "segmentation": mask_to_rle(mask)})
    path = dataset.parent / "coco.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 1, "name": "person"}]}))
    return path


@pytest.fixture(scope="module")
def float_ptl(tmp_path_factory, random_mbv2_ckpt):
    from alisnet_export.cli import main

    out = tmp_path_factory.mktemp("export")
    with pytest.raises(SystemExit) as info:
        main(["ptl", str(random_mbv2_ckpt), "--float", "--height", "256", "-o", str(out), "--no-parity"])
    assert info.value.code == 0
    return out / PTL


def _fixed(value: float):
    """A target that predicts the same logits everywhere: all person (value > 0) or all background."""
    def run(x):
        out = np.zeros((1, 2, *x.shape[2:]), np.float32)
        out[0, 1] = value
        return out
    return EvalTarget("fixed", None, "artifact", "test", "float32", (0.5,) * 3, (0.25,) * 3, run=run)


def test_protocol_crops_to_the_mask_box_with_margin_and_scores_at_the_crop():
    mask = np.zeros((200, 120), bool)
    mask[40:160, 30:70] = True  # a 40 x 120 person
    image = np.full((200, 120, 3), 128, np.uint8)
    everything = _fixed(5.0)
    result = evaluate_targets([everything], [EvalItem("a", image, mask)], height=128, margin=0.10)
    row = result.images[0]
    x0, y0, x1, y1 = crop_box(person_box(mask), mask.shape, 0.10)
    assert row["crop"] == [x0, y0, x1, y1] == [26, 28, 74, 172]
    assert row["input_hw"][0] == 128 and row["input_hw"][1] % 32 == 0
    # "all person" on the crop: IoU = person pixels / crop pixels
    expected = mask.sum() / ((x1 - x0) * (y1 - y0))
    assert row["iou"]["fixed"] == pytest.approx(expected)
    m = result.scores[0].metrics
    assert m.foreground_iou_mean == pytest.approx(expected) and m.foreground_iou_std == 0
    # a given box (here the whole image) replaces the mask's box
    whole = evaluate_targets([everything], [EvalItem("a", image, mask, box=(0, 0, 120, 200))], height=128, margin=0.0)
    assert whole.images[0]["crop"] == [0, 0, 120, 200]
    assert whole.images[0]["iou"]["fixed"] == pytest.approx(mask.mean())


def test_protocol_mean_and_std_over_images_and_ignored_crowd_pixels():
    mask = np.zeros((100, 100), np.uint8)
    mask[20:80, 30:70] = 1  # 2400 person pixels
    crowd = mask.copy()
    crowd[:, :10] = 255  # 1000 crowd pixels: ignored, they count for neither side
    image = np.zeros((100, 100, 3), np.uint8)
    nothing, everything = _fixed(-5.0), _fixed(5.0)
    nothing.label = "nothing"
    whole = (0, 0, 100, 100)
    result = evaluate_targets([nothing, everything], [EvalItem("p", image, mask, whole), EvalItem("q", image, crowd, whole)],
                              height=64, margin=0.0)
    by = {s.target.label: s.metrics for s in result.scores}
    assert by["nothing"].foreground_iou_mean == 0 and by["nothing"].iou_background == pytest.approx(14200 / 19000)
    ious = [2400 / 10000, 2400 / 9000]
    assert [r["iou"]["fixed"] for r in result.images] == pytest.approx(ious)
    assert by["fixed"].foreground_iou_mean == pytest.approx(np.mean(ious))
    assert by["fixed"].foreground_iou_std == pytest.approx(np.std(ious))
    assert by["fixed"].miou == pytest.approx((4800 / 19000 + 0) / 2)
    assert f"| fixed | test | float32 | 2 | {100 * np.mean(ious):.2f} ± {100 * np.std(ious):.2f} |" in result.markdown()
    assert result.csv().splitlines()[0].endswith("iou:nothing,iou:fixed")


def test_checkpoint_and_its_float_ptl_side_by_side(run_cli, dataset, float_ptl, random_mbv2_ckpt, tmp_path):
    code, out, err = run_cli("eval", random_mbv2_ckpt, float_ptl, "--data", dataset, "--height", "256",
                             "-o", tmp_path / "report", "--json")
    assert code == 0, err
    result = json.loads(out)
    ckpt, ptl = result["targets"]
    assert (ckpt["kind"], ptl["kind"], ptl["format"], ptl["preprocessing"]) == ("checkpoint", "artifact", "ptl", "manifest")
    assert ckpt["metrics"]["num_images"] == ptl["metrics"]["num_images"] == 4
    for key in ("foreground_iou_mean", "foreground_iou_std", "miou"):
        assert ptl["metrics"][key] == pytest.approx(ckpt["metrics"][key], abs=1e-3)
    for row in result["images"]:
        assert row["input_hw"][0] == 256 and row["box_source"] == "mask"
        assert row["iou"][PTL] == pytest.approx(row["iou"][random_mbv2_ckpt.name], abs=2e-3)
    table = (tmp_path / "report" / "eval.md").read_text()
    assert f"| {random_mbv2_ckpt.name} | torch | float32 | 4 |" in table and f"| {PTL} | ptl | float32 | 4 |" in table
    assert len((tmp_path / "report" / "per_image.csv").read_text().splitlines()) == 5
    assert "mean ± std" in err  # the table is printed for people too


def test_coco_file_gives_the_same_numbers_as_the_folder(run_cli, dataset, coco, random_mbv2_ckpt):
    boxes = dataset.parent / "boxes.json"  # the masks' own boxes, given as a box file
    boxes.write_text(json.dumps({p.stem: list(person_box(np.asarray(Image.open(p)) > 127))
                                 for p in sorted((dataset / "masks").iterdir())}))
    runs = {}
    for name, args in (("folder", ["--data", dataset]), ("box-file", ["--data", dataset, "--boxes", boxes]), ("coco", ["--coco", coco, "--images", dataset / "images"]),
                       ("coco-boxes", ["--coco", coco, "--images", dataset / "images", "--coco-boxes"])):
        code, out, err = run_cli("eval", random_mbv2_ckpt, *args, "--height", "256", "--json", "--max-images", "2")
        assert code == 0, err
        runs[name] = json.loads(out)
    ious = {k: [r["iou"][random_mbv2_ckpt.name] for r in v["images"]] for k, v in runs.items()}
    assert len(ious["folder"]) == 2
    for name in ("coco", "coco-boxes", "box-file"):
        assert ious[name] == pytest.approx(ious["folder"])
        assert [r["crop"] for r in runs[name]["images"]] == [r["crop"] for r in runs["folder"]["images"]]
    assert {r["box_source"] for r in runs["box-file"]["images"]} == {"given"}


def test_demo_data_root_is_scored_on_its_heldout_set(run_cli, dataset, random_mbv2_ckpt, tmp_path):
    root = tmp_path / "demo"
    shutil.copytree(dataset, root / "heldout")
    code, out, err = run_cli("eval", random_mbv2_ckpt, "--data", root, "--height", "128", "--max-images", "1", "--json")
    assert code == 0, err
    assert "heldout" in json.loads(out)["data"]


def test_bad_inputs_are_clear_errors(run_cli, dataset, random_mbv2_ckpt, tmp_path):
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "masks").mkdir()
    code, out, err = run_cli("eval", random_mbv2_ckpt, "--data", empty)
    assert code == 3 and "holds no image files" in err

    odd = tmp_path / "odd"
    shutil.copytree(dataset, odd)
    (odd / "masks" / "000000.png").rename(odd / "masks" / "other.png")
    code, out, err = run_cli("eval", random_mbv2_ckpt, "--data", odd)
    assert code == 3 and "do not pair up" in err and "000000.png" in err

    small = tmp_path / "small"
    shutil.copytree(dataset, small)
    Image.new("L", (96, 128)).save(small / "masks" / "000001.png")
    code, out, err = run_cli("eval", random_mbv2_ckpt, "--data", small, "--json")
    assert code == 3 and "differ in size" in err and json.loads(out)["exit_code"] == 3

    unknown = tmp_path / "model.tflite"
    unknown.write_bytes(b"x")
    code, out, err = run_cli("eval", unknown, "--data", dataset)
    assert code == 3 and "unknown artifact format '.tflite'" in err

    code, out, err = run_cli("eval", tmp_path / "missing.pth", "--data", dataset)
    assert code == 3 and "no such checkpoint, artifact" in err

    code, out, err = run_cli("eval", random_mbv2_ckpt)
    assert code == 3 and "--data DIR" in err

    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"000000": [0, 0, 50, 80]}))
    code, out, err = run_cli("eval", random_mbv2_ckpt, "--data", dataset, "--boxes", boxes)
    assert code == 3 and "no box for 3 image(s): 000001.png" in err
    boxes.write_text(json.dumps({"000000": [50, 0, 10, 80]}))
    code, out, err = run_cli("eval", random_mbv2_ckpt, "--data", dataset, "--boxes", boxes)
    assert code == 3 and "expected [x0, y0, x1, y1] with x1 > x0" in err

    code, out, err = run_cli("eval", random_mbv2_ckpt, "--data", dataset, "--height", "100")
    assert code == 3 and "multiple of 32" in err


def test_eval_on_the_testbed_writes_its_table_into_a_readme(run_cli, tmp_path, native_ckpt):
    """`--data testbed:heldout:N` scores on the exact-ground-truth testbed; --update-readme replaces the marked block."""
    from alisnet_export.checkpoint import load_checkpoint
    from alisnet_export.cli.eval_cmd import README_BEGIN, README_END

    readme = tmp_path / "README.md"
    readme.write_text(f"# t\n\nbefore\n{README_BEGIN}\nold table\n{README_END}\nafter\n")
    code, out, err = run_cli("eval", native_ckpt, "--data", "testbed:heldout:2", "--height", "128",
                             "--update-readme", readme, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["data"].startswith("testbed:heldout:2: 2 synthetic people") and len(result["images"]) == 2
    params = sum(p.numel() for p in load_checkpoint(native_ckpt).build_model().parameters())
    assert result["targets"][0]["size_bytes"] == 4 * params  # a checkpoint's size is its weights at float32
    text = readme.read_text()
    assert "old table" not in text and text.startswith("# t\n\nbefore\n") and text.endswith(f"{README_END}\nafter\n")
    assert "| size (MB) |" in text and "Generated by `alisnet-export eval" in text and "random.pth" in text
    bare = tmp_path / "bare.md"
    bare.write_text("no markers\n")
    code, _, err = run_cli("eval", native_ckpt, "--data", "testbed:heldout:1", "--height", "128", "--update-readme", bare)
    assert code == 3 and "eval:begin" in err and bare.read_text() == "no markers\n"
