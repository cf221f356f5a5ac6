#!/usr/bin/env bash
# Draw the pipeline's rule graph (without the `all` target) to docs/img/rulegraph.svg for the README.
# Needs Graphviz's `dot` (Debian: apt-get install graphviz). Usage: bash scripts/rulegraph.sh
set -euo pipefail
cd "$(dirname "$0")/.."
snakemake --rulegraph 2>/dev/null | python3 -c '
import re, sys
dot = sys.stdin.read()
target = re.search(r"^\s*(\d+)\[label = \"all\"", dot, re.M).group(1)
keep = [line for line in dot.splitlines()
        if not re.match(rf"^\s*{target}\[", line) and not re.search(rf"-> {target}\s*$", line)]
print("\n".join(keep))' | dot -Tsvg > docs/img/rulegraph.svg
echo "docs/img/rulegraph.svg written"
