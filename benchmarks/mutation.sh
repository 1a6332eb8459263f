#!/bin/bash
# Mutation testing of one module with mutmut 3 (pip install mutmut), against the named tests only.
# usage: benchmarks/mutation.sh NAME SOURCE TEST_ARGS...   e.g.
#   benchmarks/mutation.sh guard compress/guard.py tests/compress/test_guard.py
# The worktree is copied to $MUTMUT_WORK/NAME (default /tmp/mut/NAME), where run.log and results.txt land.
# Run it with the project's virtualenv active; the copy is a throwaway, the worktree is never mutated.
set -e
name=$1; src=$2; shift 2
dst=${MUTMUT_WORK:-/tmp/mut}/$name
rm -rf $dst; mkdir -p $dst
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
git ls-files -co --exclude-standard | grep -v '^benchmarks/results' | tar -cf - -T - | tar -xf - -C $dst
cd $dst
# mutmut reads [tool.mutmut] from pyproject.toml when present: keep the project's file out of the copy's way.
mv pyproject.toml pyproject.project.toml
cat > setup.cfg <<CFG
[mutmut]
source_paths=$src
pytest_add_cli_args_test_selection=
$(printf '    %s\n' "$@")
pytest_add_cli_args=
    -p
    no:cacheprovider
    -q
also_copy=
    compress
    export
    runtime
    models
    tests
CFG
export COMPRESS_CACHE=${MUTMUT_WORK:-/tmp/mut}/cache OMP_NUM_THREADS=1
unset PYTHONPATH
nice -n 10 python -m mutmut run --max-children 1 > run.log 2>&1 || true
python -m mutmut results --all true > results.txt 2>&1 || true
for state in killed timeout survived "no tests"; do printf '%s %s\n' "$(grep -c ": $state\$" results.txt)" "$state"; done
