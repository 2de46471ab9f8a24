#!/usr/bin/env bash
# Fails when git tracks a file that must never be committed: a compiled
# binary (ELF, Mach-O, PE, an ar archive), or a run artefact (a log, a pid
# file, a core dump, a test binary). Build outputs go to bin/ and dist/,
# which .gitignore keeps out.
set -euo pipefail
cd "$(dirname "$0")/.."
git rev-parse --is-inside-work-tree >/dev/null 2>&1 || exit 0
bad=0
while IFS= read -r -d '' f; do
	[ -f "$f" ] || continue
	base=${f##*/}
	if [[ $base =~ ^(.*\.(log|pid|test|out)|core(\.[0-9]+)?|(log|pid)[0-9]*)$ ]]; then
		echo "tracked run artefact: $f"
		bad=1
		continue
	fi
	magic=$(head -c 4 "$f" | od -An -tx1 | tr -d ' \n')
	case "$magic" in
	7f454c46 | cffaedfe | cefaedfe | feedface | feedfacf | 213c6172 | 4d5a*)
		echo "tracked binary: $f"
		bad=1 ;;
	esac
done < <(git ls-files -z)
if [ "$bad" != 0 ]; then
	echo >&2; echo "remove these with 'git rm --cached' (build outputs belong in bin/ or dist/)" >&2
	exit 1
fi
