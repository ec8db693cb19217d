#!/bin/sh
# Installs embedpipe into the virtual environment /opt/embedpipe, offline, from a wheelhouse: every image
# (base, train, dataflow) runs these same two steps, so they all hold the same package and versions.
#   install.sh dependencies WHEELHOUSE   every wheel of the wheelhouse: the pinned closure of embedpipe's
#                                        dependencies (containers/local.sh makes it from constraints.txt)
#   install.sh embedpipe                 the embedpipe wheel (build/wheels) on top, then a check that the
#                                        environment is consistent, every package imports and every extra
#                                        (`embedpipe[all]`: the wheelhouse holds them all) is there
# Two steps, two layers: a new commit rebuilds only the second. See containers/README.md.
set -eu
pip=/opt/embedpipe/bin/pip
case "${1:-}" in
    dependencies)
        python3 -m venv /opt/embedpipe
        $pip install --no-cache-dir --no-index --no-deps "${2:-/tmp/embedpipe/wheelhouse}"/*.whl ;;
    embedpipe)
        $pip install --no-cache-dir --no-index --no-deps /tmp/embedpipe/wheels/embedpipe-*.whl
        # Every requirement of the wheel met at the pinned versions (pip check), and no module missing from it.
        $pip check
        /opt/embedpipe/bin/python -c "import embedpipe.cli, embedpipe.vectorstore, embedpipe.components, embedpipe.pipelines, embedpipe.examples"
        # pip check does not look at extras: every module of every extra must import (MissingExtra names it).
        /opt/embedpipe/bin/python -c "from embedpipe.extras import EXTRAS, require; [require(m, e) for e, ms in EXTRAS.items() for m in ms]" ;;
    *) echo "usage: install.sh dependencies WHEELHOUSE | install.sh embedpipe" >&2; exit 2 ;;
esac
