# edgekube developer entry points. `make run` and `make test` are all a fresh Debian machine needs:
# every target below installs what it is missing, once, and is quick when everything is there.
#
# Set-up is a chain of stamp files under .venv/ (so deleting .venv starts over):
#   system packages (apt, only when one is missing) -> .venv -> pip install -e '.[dev]' -> kube tools
# The pip stamp depends on pyproject.toml, so a new dependency reinstalls on the next run.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON_SYS ?= python3
VENV       := .venv
PY         := $(VENV)/bin/python
DATA_DIR   ?= .data
PYTEST_ARGS ?=
FUZZ_EXAMPLES ?= 20000
ARCH       ?=
ARM_ARCHES ?= arm64 armv7

# System packages: python3-venv/python3-dev for the venv and Nuitka; gcc, patchelf, ccache for
# Nuitka; the rest are used by the kubelet and network tests of later issues (installing them is
# cheap); faketime (libfaketime) for the clock tests; systemd for `systemd-analyze verify` of the
# unit (installed as a package only: it is not started). kubectl is NOT here: the machines ship it,
# and tools/fetch_kube_tools.py adds 1.36.
APT_PACKAGES := python3-venv python3-dev gcc patchelf ccache \
                runc umoci skopeo busybox-static docker-registry nftables iproute2 e2fsprogs faketime \
                systemd

STAMP_APT  := $(VENV)/.stamp-apt
STAMP_PIP  := $(VENV)/.stamp-pip

.PHONY: help setup run test fuzz bench lint binary release arm-test kube-tools clean distclean

help:
	@echo "make run     set up (apt, .venv, pip) and start 'edgekube server --data-dir $(DATA_DIR)'"
	@echo "make test    set up, fetch kubectl/helm into tools/bin, run the whole pytest suite"
	@echo "make fuzz    the API fuzz suites (generated bodies; schemathesis over /openapi/v3), long and random"
	@echo "             (FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) requests each; make test runs a bounded, seeded pass)"
	@echo "make bench   run benchmarks/run_all.py"
	@echo "make lint    ruff, mypy --strict, tools/check_layers.py"
	@echo "make binary  Nuitka onefile build into dist/edgekube"
	@echo "make release the binary, then dist/release/edgekube-<version>-linux-<arch>.tar.gz (install.sh, SHA256SUMS)"
	@echo "             ARCH=arm64|armv7 for either: built here with a cross compiler (dist/edgekube-linux-<arch>)"
	@echo "make arm-test  the ARM binaries under qemu-user (version, boot, kubectl)"

# --- set-up -----------------------------------------------------------------------------------

# Checking dpkg is quick, so the stamp only records that the *current list* was satisfied;
# `apt-get update` runs only when something is missing.
$(STAMP_APT): Makefile
	@missing=""; \
	for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo="sudo"; \
	  echo "make: installing system packages:$$missing"; \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq; \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing </dev/null; \
	fi
	@mkdir -p $(VENV) && touch $@

$(PY): | $(STAMP_APT)
	$(PYTHON_SYS) -m venv $(VENV)

# The apt stamp lives in .venv/, which the rule above may have made before the venv itself:
# create the venv when its python is missing, regardless of the directory's existence.
$(STAMP_PIP): pyproject.toml | $(STAMP_APT) $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

# No stamp: the script itself skips what is present (milliseconds), and re-fetches a binary
# that someone deleted.
kube-tools: setup
	@$(PY) tools/fetch_kube_tools.py

setup: $(STAMP_PIP)

# --- entry points -----------------------------------------------------------------------------

run: setup
	@mkdir -p $(DATA_DIR)
	@echo "edgekube: data dir $(abspath $(DATA_DIR)); the kubeconfig appears once the server is up:"
	@echo "    export KUBECONFIG=$(abspath $(DATA_DIR))/kubeconfig.yaml; kubectl get ns"
	exec $(VENV)/bin/edgekube server --data-dir $(DATA_DIR)

# `binary`-marked tests need dist/edgekube; .ci/run runs them after `make binary`. `arm`-marked
# ones need the ARM builds: make arm-test.
# pytest exit 5 (no tests collected) is a failure here, not a pass.
test: setup kube-tools
	@rc=0; $(PY) -m pytest -m 'not binary and not arm' $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	exit $$rc

# A fresh random run each time (EDGEKUBE_FUZZ_SEED=random); make test's bounded run is the same
# every time, so that CI is reproducible.
fuzz: setup
	EDGEKUBE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) EDGEKUBE_FUZZ_SEED=random $(PY) -m pytest tests/fuzz $(PYTEST_ARGS)

# The shipped binary is built first: the scoreboard has its boot and idle RSS beside the
# interpreted server's (a rebuild with unchanged C is mostly ccache hits).
bench: setup binary
	$(PY) benchmarks/run_all.py

lint: setup
	$(VENV)/bin/ruff check edgekube tests tools benchmarks
	$(VENV)/bin/mypy --strict edgekube tools/check_layers.py tools/fetch_kube_tools.py tools/gen_pbschema.py tools/gen_apischema.py tools/upstream_src.py
	$(PY) tools/check_layers.py

# ARCH=arm64 or ARCH=armv7: built here for that board (packaging/cross.sh installs the cross
# compiler and the target's libraries), into dist/edgekube-linux-<arch>.
binary: setup
	PYTHON=$(abspath $(PY)) ARCH=$(ARCH) bash packaging/build.sh

# dist/release/edgekube-<version>-linux-<arch>.tar.gz: the binary, its unit, the default config,
# install.sh and SHA256SUMS (packaging/release.sh). ARCH as for binary.
release: binary
	bash packaging/release.sh $(if $(ARCH),dist/edgekube-linux-$(ARCH))

# The ARM binaries under qemu-user: version, boot, kubectl (tests/e2e/test_binary_arm.py); builds
# whichever is missing first (each about as long as `make binary`).
arm-test: setup kube-tools
	@for a in $(ARM_ARCHES); do [ -x dist/edgekube-linux-$$a ] || $(MAKE) binary ARCH=$$a; done
	EDGEKUBE_REQUIRE_ARM=1 $(PY) -m pytest -m arm tests/e2e/test_binary_arm.py $(PYTEST_ARGS)

clean:
	rm -rf build dist .pytest_cache .mypy_cache .ruff_cache

distclean: clean
	rm -rf $(VENV) tools/bin tools/cache $(DATA_DIR)
