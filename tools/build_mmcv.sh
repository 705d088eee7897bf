#!/usr/bin/env bash
# Build mmcv's compiled ops (mmcv.ops: deformable convolution and the rest) against the torch in
# a virtual environment, so that the deformable convs' mmcv backend runs.
#
#   make mmcv                       # = bash tools/build_mmcv.sh .venv
#   bash tools/build_mmcv.sh PATH_TO_VENV [MMCV_VERSION]
#
# Why a script: mmcv 2.2.0 is published as a source distribution only, and its setup.py asks the
# compiler for C++14 / C++17, while the headers of torch >= 2.10 stop with "#error C++20 or later
# compatible compiler is required to use ATen". The script downloads the sdist, raises every
# -std=c++14 / -std=c++17 of setup.py to -std=c++20, and builds it in the venv against the torch
# already there (--no-build-isolation: a build environment would pull another torch), CPU ops
# always, CUDA ops too where nvcc and a CUDA torch are present. Then it installs mmengine, which
# `import mmcv.ops` needs, and checks that the ops import. About 20 minutes on 2 cores.
set -euo pipefail
venv=${1:-.venv}
version=${2:-2.2.0}
python="$venv/bin/python"
[ -x "$python" ] || { echo "error: no python in $venv (run make install first)" >&2; exit 1; }
if "$python" -c "import mmcv.ops" 2>/dev/null; then
    echo "mmcv.ops already imports in $venv: $("$python" -c 'import mmcv; print(mmcv.__version__)')"
    exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# mmcv's setup.py imports pkg_resources, which setuptools 81 removed
"$python" -m pip install --quiet wheel "setuptools<81" ninja
"$python" -m pip download --quiet --no-deps --no-binary :all: --no-build-isolation \
    --dest "$work" "mmcv==$version"
tar -xzf "$work"/mmcv-"$version".tar.gz -C "$work"
src="$work/mmcv-$version"
sed -i -e 's/-std=c++14/-std=c++20/g' -e 's/-std=c++17/-std=c++20/g' "$src/setup.py"
grep -q -- '-std=c++20' "$src/setup.py" || { echo "error: no -std flag found to raise in $src/setup.py" >&2; exit 1; }
echo "building mmcv $version's ops against torch $("$python" -c 'import torch; print(torch.__version__)') (about 20 minutes on 2 cores)"
(cd "$src" && MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} nice -n 10 \
    "$OLDPWD/$python" -m pip install --no-build-isolation --no-deps --quiet .)
"$python" -m pip install --quiet "mmengine>=0.10"
"$python" -c "import mmcv, mmcv.ops; from mmcv.ops import modulated_deform_conv2d; print('mmcv', mmcv.__version__, 'ops import')"
