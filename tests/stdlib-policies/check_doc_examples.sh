#!/usr/bin/env bash
# Extracts every ```mpol block of a markdown file and runs `mrpc-polc check` on each: the user
# reference promises that every such block is a complete, valid file, without warnings. A block whose first line
# is `// file: NAME` is saved as NAME (other blocks import it); the others as example_N.mpol.
# Usage: check_doc_examples.sh MRPC_POLC DOC.md PROTO_PATH
set -euo pipefail
polc=$1
doc=$2
proto_path=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

awk -v dir="$work" '
  /^```mpol[[:space:]]*$/ { inside = 1; n += 1; name = sprintf("example_%02d.mpol", n); first = 1; next }
  inside && /^```[[:space:]]*$/ { inside = 0; close(dir "/" name); print name > (dir "/order"); next }
  inside {
    if (first && match($0, /^\/\/ file: [A-Za-z0-9_.-]+$/)) { name = substr($0, 10) }
    first = 0
    print > (dir "/" name)
  }
' "$doc"

if [[ ! -s $work/order ]]; then
  echo "no mpol blocks found in $doc" >&2
  exit 1
fi

failed=0
count=0
while read -r name; do
  count=$((count + 1))
  if ! "$polc" check "$work/$name" --warnings-as-errors --proto-path "$proto_path"; then
    echo "FAILED: block $name of $doc (numbered in order of appearance):" >&2
    cat -n "$work/$name" >&2
    failed=$((failed + 1))
  fi
done < "$work/order"
echo "$count blocks checked, $failed failed"
[[ $failed -eq 0 ]]
