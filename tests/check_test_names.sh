#!/usr/bin/env bash
# CTest splits a doctest case name at ';' (a CMake list separator), and each half then matches no
# case and "passes" having run nothing. Fail if any test case name has one.
set -euo pipefail
cd "$(dirname "$0")"
if grep -rn --include='*.cc' 'TEST_CASE("[^"]*;' .; then
  echo "test case names above contain ';': CTest would run none of them" >&2
  exit 1
fi
echo "no test case name contains ';'"
