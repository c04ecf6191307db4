# The two commands of the README: `make demo` and `make test` (and `make demo-cls`). Each runs
# the set-up first (tools/setup_env.sh: .venv with the pinned OpenMMLab stack; seconds once done).
# `make test-compat` runs the suite on the second tested stack (torch 2.1, numpy 1.x) in
# .venv-torch2.1 (docs/installation.md).
PY := .venv/bin/python
COMPAT_PY := .venv-torch2.1/bin/python
DEMO_CONFIG ?= configs/demo/mask-rcnn_xcit-n-p8_precond_fpn_shapes.py
DEMO_CLS_CONFIG ?= configs/demo/xcit-n-p8_precond_shapes-cls.py
STAMP := $(shell date +%Y%m%d_%H%M%S)
DEMO_DIR ?= work_dirs/demo/$(STAMP)
DEMO_CLS_DIR ?= work_dirs/demo-cls/$(STAMP)
PYTEST_ARGS ?=

.PHONY: setup setup-compat test test-fast test-compat lint demo demo-cls data data-cls
setup:
	@bash tools/setup_env.sh

setup-compat:
	@bash tools/setup_env.sh --stack torch2.1

data: setup
	@$(PY) tools/misc/generate_dataset.py coco data/shapes_coco

# 3 x 128 train / 3 x 32 val images of 32 px with large shapes (a tiny transformer learns them)
data-cls: setup
	@$(PY) tools/misc/generate_dataset.py imagenet data/shapes_imagenet32 --num-train 128 \
		--num-val 32 --img-size 32 --shape-size 0.4 0.8

# The real Fashion-MNIST (60k train / 10k test, 28 px) from the Debian package
# dataset-fashion-mnist (installed when missing), un-gzipped into data/fashion_mnist/ for
# mmpretrain's FashionMNIST, IDX headers checked (tools/misc/prepare_fashion_mnist.py)
.PHONY: data-fmnist
data-fmnist: setup
	@$(PY) tools/misc/prepare_fashion_mnist.py data/fashion_mnist

# Mask R-CNN with a preconditioned XCiT, trained and evaluated (COCO box / mask AP).
demo: data
	$(PY) tools/train.py $(DEMO_CONFIG) --work-dir $(DEMO_DIR)

# An ImageNet-style classifier with a preconditioned XCiT, trained and evaluated (top-1).
demo-cls: data-cls
	$(PY) tools/train.py $(DEMO_CLS_CONFIG) --work-dir $(DEMO_CLS_DIR)

# The whole suite (CI's command); `make test-fast`: the unit tests alone (no `slow` / `e2e`
# marker: no training, no tool run as a command), for the inner loop.
test: setup
	$(PY) -m pytest tests $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest tests -m "not slow and not e2e" $(PYTEST_ARGS)

# OpenMMLab's lint set-up (setup.cfg; .pre-commit-config.yaml runs the same on each commit)
LINT_PATHS := mmcondattn tools tests configs setup.py
lint: setup
	$(PY) -m flake8 $(LINT_PATHS)
	$(PY) -m isort --check-only --diff $(LINT_PATHS)
	$(PY) -m yapf --diff --recursive $(LINT_PATHS)

test-compat: setup-compat
	$(COMPAT_PY) -m pytest tests $(PYTEST_ARGS)

# Real detection data: tree crowns in NEON aerial photographs (the deepforest wheel's annotated
# examples, MIT) in 400 px tiles, spatial train / val / test splits (docs/trees.md); a RetinaNet
# with a tiny XCiT trained from scratch on them and evaluated (COCO box AP).
.PHONY: data-trees demo-trees
data-trees: setup
	@$(PY) tools/misc/prepare_trees.py data/trees

demo-trees: data-trees
	$(PY) tools/train.py configs/trees/retinanet_xcit-tiny-p8_fpn_trees.py --work-dir work_dirs/demo-trees/$(STAMP)
