"""The Kotlin harness core (android_harness/core) on the JVM, against the Python side.

One session compiles the core and its JUnit tests with kotlinc (cached by source hash under
build/harness-core/), exports a small float .ptl bundle with `alisnet-export ptl`, and writes
Python-computed preprocessing references. The JUnit suite must then pass with no test skipped, the
Kotlin self-check CLI must pass on the bundle, and a bundle whose manifest normalisation was changed
must fail both the Python and the Kotlin checks. Skipped, with the reason, where kotlinc/java/junit4
are absent (`make harness-deps` installs them on Debian).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from alisnet_export.golden import read_golden, write_golden
from alisnet_export.manifest import check_preprocessing, read_manifest, validate_manifest
from alisnet_export.preprocess import (
    Preprocessed,
    crop_box,
    load_rgb_image,
    logits_to_mask,
    mask_to_original,
    normalize,
    preprocess,
    resize_rgb,
    target_size,
)

pytestmark = pytest.mark.slow  # compiles the Kotlin harness core with kotlinc and exports a demo bundle

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "android_harness" / "core"
JAVA_LIBS = Path("/usr/share/java")
JARS = {name: JAVA_LIBS / f"{name}.jar" for name in ("junit4", "hamcrest-core", "kotlin-stdlib")}
#: step 1 of the contract's self-check; the Kotlin resize must match torch within this after normalisation
PREPROCESSING_ATOL = 1e-4


def _toolchain_problem() -> str | None:
    missing = [tool for tool in ("kotlinc", "java") if shutil.which(tool) is None]
    missing += [str(p) for p in JARS.values() if not p.is_file()]
    if missing:
        return f"Kotlin/JVM toolchain absent ({', '.join(missing)}); run `make harness-deps` (Debian: apt-get install kotlin junit4)"
    return None


@pytest.fixture(scope="session")
def core_jar() -> Path:
    """The core + its tests compiled once, cached by a hash of the sources."""
    problem = _toolchain_problem()
    if problem:
        pytest.skip(problem)
    sources = sorted((CORE / "src").rglob("*.kt"))
    digest = hashlib.sha256()
    for src in sources:
        digest.update(str(src.relative_to(CORE)).encode() + b"\0" + src.read_bytes())
    out_dir = REPO / "build" / "harness-core" / digest.hexdigest()[:16]
    jar = out_dir / "core-tests.jar"
    if jar.is_file():
        return jar
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".core-tests.{os.getpid()}.jar"
    proc = subprocess.run(["kotlinc", *map(str, sources), "-cp", str(JARS["junit4"]), "-d", str(tmp)],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        pytest.fail(f"kotlinc failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    os.replace(tmp, jar)
    return jar


def _java(jar: Path, main: str, *args: str, props: dict[str, Path] | None = None) -> subprocess.CompletedProcess:
    cp = os.pathsep.join([str(jar), *(str(p) for p in JARS.values())])
    defines = [f"-D{k}={v}" for k, v in (props or {}).items()]
    return subprocess.run(["java", *defines, "-cp", cp, main, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="session")
def demo_bundle(tmp_path_factory) -> Path:
    """A real export of the embedded demo checkpoint: float .ptl at 256 px with its manifest and golden vectors."""
    from alisnet_export.zoo import default_checkpoint

    out = tmp_path_factory.mktemp("harness-bundle")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "alisnet_export", "ptl", str(default_checkpoint().path), "--float", "--height", "256",
                           "--no-person-crops", "-o", str(out), "--json"], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _manifest_path(bundle: Path) -> Path:
    (path,) = bundle.glob("*.manifest.json")
    return path


@pytest.fixture(scope="session")
def reference_file(tmp_path_factory, demo_bundle, data_dir) -> Path:
    """Python's answers for the Kotlin core: target sizes, crop boxes, resizes, a full preprocess, masks."""
    manifest = read_manifest(_manifest_path(demo_bundle))
    mean, std = manifest["input"]["normalization"]["mean"], manifest["input"]["normalization"]["std"]
    margin = manifest["input"]["resize"]["crop_margin"]
    image = np.ascontiguousarray(load_rgb_image(data_dir / "astronaut.png")[60:105, 140:201])  # 45 x 61, odd sizes
    t: dict[str, np.ndarray] = {"image": image}
    cases = [(h, w, height) for h, w, height in [(400, 300, 1024), (400, 300, 256), (64, 80, 64), (64, 112, 64),
                                                  (1000, 10, 64), (333, 517, 1024), (1080, 1920, 1024), (45, 61, 96),
                                                  (641, 479, 512), (7, 3, 32)]]
    t["target_sizes"] = np.array([(h, w, height, target_size(h, w, height)[1]) for h, w, height in cases], np.int32)
    boxes = [((10, 20, 30, 40), (100, 100)), ((0, 0, 50, 60), (60, 50)), ((3, 7, 41, 44), (45, 61)),
             ((101, 13, 377, 590), (600, 400)), ((5, 5, 6, 6), (10, 10))]
    t["crop_boxes"] = np.array([(*b, h, w, *crop_box(b, (h, w), margin)) for b, (h, w) in boxes], np.int32)
    t["crop_margin_permille"] = np.array([round(margin * 1000)], np.int32)
    assert round(margin * 1000) / 1000.0 == margin
    for size in [(64, 96), (32, 64), (20, 30), (45, 61), (128, 160)]:
        resized = resize_rgb(image, size)
        t[f"resized.{size[0]}x{size[1]}"] = resized.numpy()
        t[f"input.{size[0]}x{size[1]}"] = normalize(resized, mean, std).numpy()
    box = (12, 6, 50, 40)
    pre = preprocess(image, mean=mean, std=std, height=64, box=box, margin=margin)
    t["pre.box"] = np.array(box, np.int32)
    t["pre.crop"] = np.array(pre.crop, np.int32)
    t["pre.input"] = pre.tensor.numpy()
    logits = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 2, *pre.tensor.shape[2:])).astype(np.float32))
    t["pre.logits"] = logits.numpy()
    t["pre.mask"] = logits_to_mask(logits).astype(np.uint8)
    t["pre.mask_original"] = mask_to_original(logits, Preprocessed(pre.tensor, pre.crop, pre.original_hw)).astype(np.uint8)
    path = tmp_path_factory.mktemp("harness-ref") / "reference.algv"
    write_golden(path, t)
    return path


def _cli(jar: Path, bundle: Path) -> tuple[int, dict, str]:
    proc = _java(jar, "com.alisnet.harness.core.SelfCheckCli", str(bundle))
    report = json.loads(proc.stdout) if proc.stdout.strip() else {}
    return proc.returncode, report, proc.stderr


def test_kotlin_core_junit_suite_passes_on_python_golden_vectors(core_jar, demo_bundle, reference_file):
    validate_manifest(read_manifest(_manifest_path(demo_bundle)))  # the bundle follows the schema
    proc = _java(core_jar, "com.alisnet.harness.core.HarnessTestMainKt",
                 props={"alisnet.bundle": demo_bundle, "alisnet.reference": reference_file})
    summary_line = [line for line in proc.stdout.splitlines() if line.startswith("SUMMARY ")]
    assert summary_line, f"no JUnit summary (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    summary = json.loads(summary_line[-1][len("SUMMARY "):])
    assert proc.returncode == 0 and summary["failed"] == 0, f"{summary['failures']}\n{proc.stderr[-4000:]}"
    assert summary["skipped"] == 0, summary["skipped_tests"]  # the reference tests really ran
    assert summary["run"] >= 20
    metrics = dict(line.split(" ", 2)[1:] for line in proc.stdout.splitlines() if line.startswith("METRIC "))
    # the stated tolerance (contract step 1) holds; on this machine the Kotlin resize is bit-exact or ~1e-6
    worst = max(float(v) for k, v in metrics.items() if k.startswith("input_max_abs."))
    assert worst <= PREPROCESSING_ATOL
    print(f"Kotlin vs Python: worst normalised input max|diff| {worst:.3g}; metrics {metrics}")


def test_kotlin_self_check_cli_passes_on_the_demo_bundle(core_jar, demo_bundle):
    code, report, err = _cli(core_jar, demo_bundle)
    assert code == 0, err
    assert report["passed"] and {c["name"] for c in report["checks"]} >= {
        "preprocessing", "integrity.golden", "integrity.ptl-float32", "output.ptl-float32.reference_mask_iou"}
    pre = next(c for c in report["checks"] if c["name"] == "preprocessing")
    assert pre["value"] <= PREPROCESSING_ATOL


def test_changed_normalisation_breaks_the_contract_in_python_and_kotlin(core_jar, demo_bundle, tmp_path):
    tampered = tmp_path / "tampered"
    shutil.copytree(demo_bundle, tampered)
    manifest_path = _manifest_path(tampered)
    manifest = json.loads(manifest_path.read_text())
    manifest["input"]["normalization"]["mean"] = [0.5, 0.5, 0.5]
    manifest["input"]["normalization"]["std"] = [0.5, 0.5, 0.5]
    manifest_path.write_text(json.dumps(manifest, indent=2))
    validate_manifest(manifest)  # still schema-valid: only the golden check can catch it
    golden = read_golden(tampered / manifest["golden"]["file"])
    problems = check_preprocessing(manifest, golden)
    assert len(problems) == 1 and "normalisation" in problems[0]
    code, report, err = _cli(core_jar, tampered)
    assert code == 1 and not report["passed"], err
    failed = [c["name"] for c in report["checks"] if not c["passed"]]
    assert failed == ["preprocessing"], report
    assert "SELF-CHECK FAILED" in err and "normalisation" in err


def test_kotlin_self_check_catches_a_corrupted_artifact_and_a_missing_bundle(core_jar, demo_bundle, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(demo_bundle, broken)
    (artifact,) = broken.glob("*.ptl")
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))
    code, report, err = _cli(core_jar, broken)
    assert code == 1 and [c["name"] for c in report["checks"] if not c["passed"]] == ["integrity.ptl-float32"]
    code, report, err = _cli(core_jar, tmp_path / "nowhere")
    assert code == 3 and "no such bundle folder" in err
