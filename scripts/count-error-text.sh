#!/usr/bin/env bash
# Counts, in a crate's production code (each .rs file up to its first `#[cfg(test)]`), the error
# causes turned into text (`e.to_string()`, `{e}`/`{err}`/... in a format!) against the causes
# kept as sources (`#[source]`, `#[from]`): issue 16's measure of errors that lose their chain.
#   scripts/count-error-text.sh [DIR]   (default builder/src, from the current directory)
set -euo pipefail
dir=${1:-builder/src}
text=0
kept=0
while IFS= read -r f; do
  n=$(grep -n '^#\[cfg(test)\]' "$f" | head -1 | cut -d: -f1 || true)
  [ -z "$n" ] && n=$(wc -l <"$f")
  body=$(head -n "$n" "$f" | grep -v '^\s*//' || true)
  t=$(grep -cE '(\b(e|err|error|why|cause)\.to_string\(\))|format!\([^)]*\{(e|err|error|why|cause)(:\?)?\}|to_string\(\)\)\)?\?' <<<"$body" || true)
  k=$(grep -cE '#\[(source|from)\]' <<<"$body" || true)
  text=$((text + t))
  kept=$((kept + k))
done < <(find "$dir" -name '*.rs' | sort)
echo "causes as text: $text, causes kept: $kept"
