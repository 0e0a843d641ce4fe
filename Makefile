# Every target sets itself up: a virtualenv in .venv with the package and its extras.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo space bench clean fresh-install docs

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,data,space,interop,figures,serve]'
	# timm (parity tests) imports torchvision, whose PyPI build needs CUDA torch and breaks transformers' imports
	# beside our CPU torch: keep both out of the environment, in a folder only
	# tests/support/timm_reference.py puts on its path.
	$(BIN)/pip install -q --no-deps --target $(VENV)/timm-site 'timm>=1.0,<2' 'torchvision==0.28.0'
	# TFDS (the catalog's TFDS-only sources) likewise, with the dependencies the environment lacks.
	$(BIN)/pip install -q --no-deps --target $(VENV)/tfds-site 'tensorflow-datasets==4.9.10' 'array-record==0.8.6' \
		'dm-tree==0.1.10' 'promise==2.3' 'simple-parsing==0.1.9' 'docstring-parser==0.18.0' 'tensorflow-metadata==1.21.0' \
		'googleapis-common-protos==1.76.0' 'termcolor==3.3.0' 'toml==0.10.2' 'wrapt==2.5.2' 'immutabledict==4.3.1' \
		'einops==0.8.2' 'requests==2.34.2' 'urllib3==2.8.0' 'charset-normalizer==3.5.3' 'six==1.17.0' 'attrs==26.1.0'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The wheel from this tree, base dependencies only, in a fresh virtualenv: loads + predicts a task from a loopback Hub
# repo with nothing else installed (needs a package registry for pip; about 2 minutes).
fresh-install: $(STAMP)
	$(BIN)/python tests/fresh_install.py

# The API reference of mu2hub.__all__ from the docstrings, strictly (a warning or an undocumented name fails):
# build/api/mu2hub.html.
docs: $(STAMP)
	$(BIN)/python docs/api.py build/api

clean:
	rm -rf $(VENV) runs .pytest_cache

demo: $(STAMP)
	$(BIN)/python training/demo.py --workdir runs/quickstart

# The demo Space, offline on the `make demo` export (or MU2HUB_REPO=org/name, MU2HUB_DEMO_DIR=folder).
space: $(STAMP)
	$(BIN)/python spaces_app/app.py
