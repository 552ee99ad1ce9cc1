PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test test-all demo check-report lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ''

demo: $(STAMP)
	$(BIN)/scorefield demo

# the demo page in headless Chromium (Debian: apt-get install chromium) at 1280 and 400 pixels:
# no sideways scrolling, every image loaded, every equation rendered, no console error
check-report: $(STAMP)
	$(BIN)/python tools/check_report.py runs/demo/report.html

lint: $(STAMP)
	$(BIN)/ruff check src tests bench tools docs/hooks examples
	$(BIN)/ruff format --check src tests bench tools docs/hooks examples

bench: $(STAMP)
	$(BIN)/python -m bench

# the documentation site: site/, built offline (open site/index.html; search works from file://)
.PHONY: docs docs-serve docs-check check-docs
DOCS_STAMP := $(VENV)/.installed-docs
MKDOCS := NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs

$(DOCS_STAMP): $(STAMP)
	$(BIN)/pip install -q -c constraints.txt -e '.[dev,docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(MKDOCS) build

docs-serve: $(DOCS_STAMP)
	$(MKDOCS) serve

# CI: a broken link, a missing reference or a docstring that does not render fails the build
docs-check: $(DOCS_STAMP)
	$(MKDOCS) build --strict

# the built site in headless Chromium (apt-get install chromium): layout at 1280 and 400 px, search
check-docs: docs
	$(BIN)/python tools/check_docs.py

clean:
	rm -rf $(VENV) runs .pytest_cache site
