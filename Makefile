# make demo   install what is missing into .venv, then run the whole workflow on the embedded demo
# make test   install what is missing, then run the test suite
#
# The real run: make weights (the pretrained files, into torch's hub cache), point a config at
# the data, make preflight CONFIG=configs/paper_celebahq.yaml, then snakemake with that config.
#
# TORCH_SPEC picks the PyTorch build installed before the package. The default pair is the one that
# runs here (CPU machines with the local wheels; the same build uses a GPU where there is one).
# With your own CUDA torch already in the venv:  make demo TORCH_SPEC=
PYTHON     ?= $(shell command -v python3.11 || command -v python3)
VENV       ?= .venv
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
CORES      ?= all
SNAKEMAKE_ARGS ?=

BIN   := $(VENV)/bin
STAMP := $(VENV)/.ndmha-installed

.PHONY: install demo demo-places2 test dry-run weights preflight cluster mmcv clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (set PYTHON=...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(if $(strip $(TORCH_SPEC)),$(BIN)/python -m pip install --quiet $(TORCH_SPEC))
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: install
	$(BIN)/snakemake --cores $(CORES) $(SNAKEMAKE_ARGS)
	$(BIN)/snakemake --report results/report.html $(SNAKEMAKE_ARGS)

# the paper's second protocol (Places2 layout, NVIDIA-style masks, two shards) on the demo
demo-places2: install
	$(BIN)/snakemake --cores $(CORES) --configfile configs/demo_places2.yaml $(SNAKEMAKE_ARGS)

# VGG19, AlexNet and Inception-v3, hash-checked, into $TORCH_HOME/hub/checkpoints (WEIGHTS_ARGS:
# --dir DIR, --mirror URL, names)
WEIGHTS_ARGS ?=
weights: install
	$(BIN)/python -m ndmha fetch-weights $(WEIGHTS_ARGS)

# the checks and the cost of a real run before it starts (PREFLIGHT_ARGS: --config overrides, ...)
CONFIG ?= configs/paper_celebahq.yaml
PREFLIGHT_ARGS ?=
preflight: install
	$(BIN)/python -m ndmha preflight --configfile $(CONFIG) $(PREFLIGHT_ARGS)

dry-run: install
	$(BIN)/snakemake -n --configfile configs/paper_celebahq.yaml $(SNAKEMAKE_ARGS)

# the full reproduction on a SLURM cluster (edit the cluster / resources keys of the config first)
CLUSTER_CONFIG ?= configs/paper_celebahq.yaml
cluster: install
	$(BIN)/snakemake --workflow-profile workflow/profiles/slurm --configfile $(CLUSTER_CONFIG) $(SNAKEMAKE_ARGS)

# mmcv's compiled ops (ndmha.deform_backend: mmcv) built against the venv's torch (~10-20 min)
mmcv: install
	bash tools/build_mmcv.sh $(VENV)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf results .snakemake
