#!/usr/bin/env bash
# Post-deploy script of every environment in envs/ (each <env>.post-deploy.sh links here):
# Snakemake runs it inside the environment it has just created.  It installs the checkout
# being run (the Snakefile exports its path as BMODESEP_SOURCE), editable and without
# dependencies: the environment file lists those.
set -euo pipefail
src="${BMODESEP_SOURCE:?BMODESEP_SOURCE is not set: run this through the bmodesep Snakefile}"
python -m pip install --quiet --no-deps -e "$src"
python -c "import bmodesep; print('bmodesep', bmodesep.__version__, 'installed from', '$src')"
