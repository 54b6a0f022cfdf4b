#!/usr/bin/env bash
# Install learn2learn 0.2.0 (the optional second meta-learning engine) into the active environment.
#
# learn2learn is unmaintained since 2023: its sdist's Cython-generated C does not build on Python 3.11, and
# letting pip resolve its dependencies pulls an old torchvision that breaks transformers and peft. So:
# regenerate the C with a current Cython, install without dependencies, then add only what it imports.
set -euo pipefail
python -m pip install -q cython setuptools wheel
python -m pip install -q --no-deps --no-build-isolation --use-pep517 \
    --config-settings=--global-option=build_ext learn2learn==0.2.0
python -m pip install -q scipy gym requests
python -c "import learn2learn; print('learn2learn', learn2learn.__version__)" 2>&1 | grep -v -i "gym\|numpy" || true
