#!/usr/bin/env bash
# Download the wheels bench/device_check.sh installs on a GPU image that has torch but not these
# (Python 3.12, x86-64). Run where PyPI is reachable; the wheels land in .whl/ (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any -d .whl \
    taming-transformers-rom1504==0.0.6 omegaconf==2.3.1 antlr4-python3-runtime==4.9.3
