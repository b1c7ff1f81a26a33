# Quick start: `make demo` (set up + run the main job on synthetic data), `make test` (set up + run the tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
METHOD ?= gru_ae

.PHONY: venv venv-cuda demo test test-slow test-all bench clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[tf,test]'
	touch $(STAMP)

venv: $(STAMP)

# the same venv plus JAX's CUDA 12 plugin; then `make bench` / `make demo` run on the GPU
venv-cuda: $(STAMP)
	$(PY) -m pip install -q -e '.[tf,test,cuda]'

demo: $(STAMP)
	$(PY) launch.py --method=$(METHOD)

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" --durations=25

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

test-all: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) launch.py --mode=benchmark --method=lstm,gru_ae,dense_ae,id_classifier --ensemble_sizes=1,8 \
		--config.benchmark.member_maps=map,vmap --output=bench.json
	$(PY) -m asd_jax.data.bench_features --output=bench_features.json

clean:
	rm -rf $(VENV) *.egg-info
