#!/usr/bin/env bash
# make lint: formatting (clang-format, .clang-format at the root) and the
# unbounded string functions we ban (curl checksrc style).
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
files=$(git ls-files 'src/*.[ch]' 'tests/*.[ch]' 'fuzz/*.[ch]' 2>/dev/null)
[ -n "$files" ] || files=$(find src tests fuzz -name '*.[ch]')
# shellcheck disable=SC2086
if ! clang-format --dry-run -Werror $files 2>/tmp/surge-lint.$$; then
    grep -E '^[^ ].*: error' /tmp/surge-lint.$$ | cut -d: -f1 | sort -u | sed 's/^/format: /'
    echo "lint: run 'make format' to fix formatting"
    status=1
fi
rm -f /tmp/surge-lint.$$
# shellcheck disable=SC2086
banned=$(grep -n -E '\b(sprintf|vsprintf|strcpy|strcat|strtok|atoi|atol|gets)\s*\(' $files |
         grep -v -E '(snprintf|vsnprintf)\s*\(' || true)
if [ -n "$banned" ]; then
    echo "$banned" | sed 's/^/banned: /'
    echo "lint: use snprintf, buf_printf, memcpy with lengths, strtol with checks"
    status=1
fi
[ $status -eq 0 ] && echo "lint: ok ($(echo "$files" | wc -w) files)"
exit $status
