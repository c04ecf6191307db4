# The two commands of the README: `make demo` and `make test`. Each runs the set-up first
# (tools/setup_env.sh: .venv with the pinned OpenMMLab stack; seconds once it is done).
PY := .venv/bin/python
DEMO_CONFIG ?= configs/demo/mask-rcnn_r18_fpn_shapes.py
DEMO_DIR ?= work_dirs/demo/$(shell date +%Y%m%d_%H%M%S)
PYTEST_ARGS ?=

.PHONY: setup test demo data
setup:
	@bash tools/setup_env.sh

data: setup
	@$(PY) tools/misc/generate_dataset.py coco data/shapes_coco

demo: data
	$(PY) tools/train.py $(DEMO_CONFIG) --work-dir $(DEMO_DIR)

test: setup
	$(PY) -m pytest tests $(PYTEST_ARGS)
