# Two commands for a newcomer:  `make demo`  and  `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Ray binds every interface: tests run in a loopback-only network namespace when we can make one.
NETNS := $(shell unshare --net true 2>/dev/null && echo "unshare --net sh -c 'ip link set lo up && exec \"\$$0\" \"\$$@\"'")

.PHONY: setup demo test lint clean

$(BIN)/cameofarm: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip "setuptools<81" wheel
	$(BIN)/pip install -q -c constraints.txt -e ".[test]"
	touch $@

setup: $(BIN)/cameofarm

demo: setup
	$(NETNS) $(BIN)/cameofarm demo --out demo-output

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(NETNS) $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .farm demo-output .mypy_cache .ruff_cache .pytest_cache
