# make demo   install what is missing into .venv, then run the whole workflow on the embedded demo
# make test   install what is missing, then run the test suite
#
# The real run, with your own config (an overlay of a shipped one, README), one CONFIG for all:
#   make weights                   the pretrained files, into torch's hub cache
#   make preflight                 blockers, and the run's time and disk projected on this machine
#   make run                       the workflow on this machine, then <results_dir>/report.html
#   make cluster                   the same through SLURM (workflow/profiles/slurm)
#   make dry-run / make report     the DAG without running it / the report alone
# CONFIG is one file or several, merged in order (default configs/local/celebahq.yaml):
#   make run CONFIG="configs/local/celebahq.yaml configs/seed_report.yaml"
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

.PHONY: install demo demo-places2 test dry-run weights preflight run cluster report mmcv clean

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
demo-places2:
	$(MAKE) --no-print-directory run CONFIG=configs/demo_places2.yaml

# VGG19, AlexNet and Inception-v3, hash-checked, into $TORCH_HOME/hub/checkpoints (WEIGHTS_ARGS:
# --dir DIR, --mirror URL, --timeout S, --tries N, names)
WEIGHTS_ARGS ?=
weights: install
	$(BIN)/python -m ndmha fetch-weights $(WEIGHTS_ARGS)

# your study: one config file or several, merged in order, each an overlay naming its base
CONFIG ?= configs/local/celebahq.yaml
PREFLIGHT_ARGS ?=
# every file of CONFIG there, or one line that says what to do
CONFIG_THERE = for f in $(CONFIG); do test -f "$$f" || { echo "error: CONFIG: $$f does not \
exist: write your overlay there (README: Real data) or give CONFIG=FILE"; exit 1; }; done
# the report, into the config's own results_dir
REPORT = $(BIN)/snakemake --report \
	"$$($(BIN)/python -m ndmha config --configfile $(CONFIG) --get results_dir)/report.html" \
	--configfile $(CONFIG)

# the checks and the cost of a real run before it starts (PREFLIGHT_ARGS: --config overrides, ...)
preflight: install
	@$(CONFIG_THERE)
	$(BIN)/python -m ndmha preflight --configfile $(CONFIG) $(PREFLIGHT_ARGS)

dry-run: install
	@$(CONFIG_THERE)
	$(BIN)/snakemake -n --configfile $(CONFIG) $(SNAKEMAKE_ARGS)

run: install
	@$(CONFIG_THERE)
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG) $(SNAKEMAKE_ARGS)
	$(REPORT)

# the same through SLURM (your overlay sets cluster.partition, cluster.account, resources)
cluster: install
	@$(CONFIG_THERE)
	$(BIN)/snakemake --workflow-profile workflow/profiles/slurm --configfile $(CONFIG) $(SNAKEMAKE_ARGS)
	$(REPORT)

report: install
	@$(CONFIG_THERE)
	$(REPORT)

# mmcv's compiled ops (the deformable convs' mmcv backend) built against the venv's torch (~10-20 min)
mmcv: install
	bash tools/build_mmcv.sh $(VENV)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf results .snakemake
