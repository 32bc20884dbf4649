#!/usr/bin/env bash
# Checks the committed run-time data against data/nse-data.sha256 (sources and licences are in
# data/README.md). A missing file or one with another sum is refused, naming the file, the
# expected sum and how to restore it. Called by scripts/setup.sh; takes another data directory
# as its argument (the tests use that).
set -euo pipefail
if [ $# -eq 0 ]; then
  cd "$(dirname "$0")/.."
  dir=data
else
  dir="$1"
fi
sums="$dir/nse-data.sha256"
if [ ! -f "$sums" ]; then
  echo "check-data: $sums is missing; restore it with: git checkout -- data/nse-data.sha256" >&2
  exit 1
fi
bad=0
while read -r want rel; do
  [ -n "$want" ] || continue
  f="$dir/$rel"
  if [ ! -f "$f" ]; then
    echo "check-data: $f is missing (expected sha256 $want); restore it with: git checkout -- data/$rel" >&2
    bad=1
    continue
  fi
  got=$(sha256sum "$f" | cut -d' ' -f1)
  if [ "$got" != "$want" ]; then
    echo "check-data: $f has sha256 $got, expected $want (data/nse-data.sha256); refusing to use it. Restore it with: git checkout -- data/$rel" >&2
    bad=1
  fi
done < "$sums"
if [ "$bad" != 0 ]; then
  exit 1
fi
