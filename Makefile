# Two commands for a newcomer:  `make demo`  and  `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Ray binds every interface: tests run in a loopback-only network namespace when we can make one.
NETNS := $(shell unshare --net true 2>/dev/null && echo "unshare --net sh -c 'ip link set lo up && exec \"\$$0\" \"\$$@\"'")

.PHONY: setup demo test lint typecheck clean

# resemblyzer (the GE2E speaker encoder) installs without its metadata's dependencies: they
# ask for webrtcvad (compiled from C) and the obsolete `typing` backport; webrtcvad-wheels
# (ours) provides the same module prebuilt. flite comes from Debian (.ci/debian). The person
# segmentation weights come out of the mediapipe wheel (see models/reference/segmentation.py).
$(BIN)/cameofarm: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip "setuptools<81" wheel
	$(BIN)/pip install -q -c constraints.txt -e ".[test,neural]"
	$(BIN)/pip install -q --no-deps "resemblyzer==0.1.4"
	$(BIN)/python -m cameofarm.models.reference.segmentation fetch
	bash .ci/debian flite
	touch $@

setup: $(BIN)/cameofarm

demo: setup
	$(NETNS) $(BIN)/cameofarm demo --out demo-output

ROOMS := actors cameos cluster configs models monitoring pipelines service storage

lint: setup typecheck
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy sees the package as installed: cameofarm.<room> is a link to the room's folder.
typecheck: setup
	@rm -rf .typecheck/cameofarm && mkdir -p .typecheck/cameofarm
	@for room in $(ROOMS); do ln -s ../../$$room .typecheck/cameofarm/$$room; done
	cd .typecheck && ../$(BIN)/mypy --config-file ../pyproject.toml -p cameofarm

# Debian's prometheus (with promtool) runs the observability tests: the shipped scrape
# config against a real farm, every dashboard query, the alert rules' unit tests.
# The database tests run on SQLite and on a throwaway PostgreSQL (.ci/postgres: Debian's
# server, installed if missing, on a Unix socket the loopback-only namespace can reach).
# Outside CI, a machine that cannot run PostgreSQL (no root for apt) skips those variants.
test: lint
	@bash .ci/debian prometheus
	@url=$$(bash .ci/postgres up) || { \
	  if [ -n "$$CI" ]; then echo "could not start PostgreSQL (see above)"; exit 1; fi; \
	  echo "PostgreSQL unavailable: its test variants are skipped"; url=""; }; \
	CAMEOFARM_TEST_POSTGRES="$$url" $(NETNS) $(BIN)/python -m pytest -q; status=$$?; \
	[ -z "$$url" ] || bash .ci/postgres down "$$url"; exit $$status

clean:
	rm -rf $(VENV) .farm demo-output .typecheck .mypy_cache .ruff_cache .pytest_cache
