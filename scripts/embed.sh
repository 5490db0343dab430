#!/usr/bin/env sh
# Turns a file into C: scripts/embed.sh NAME HEADER IN OUT writes OUT with
#   const unsigned char NAME[] = {...bytes of IN..., 0};  const size_t NAME_len;
# (HEADER, included first, declares both). Used by the Makefile to embed
# web/dashboard.html into the binary (no CDN, no file to install).
set -eu
name=$1 header=$2 in=$3 out=$4
tmp=$out.tmp.$$
{
    printf '/* Generated from %s by scripts/embed.sh: do not edit. */\n' "$in"
    printf '#include "%s"\n\n' "$header"
    printf 'const unsigned char %s[] = {\n' "$name"
    od -An -v -tx1 "$in" | sed -e 's/  */ /g' -e 's/^ //' -e 's/ $//' -e '/^$/d' \
        -e 's/\([0-9a-f][0-9a-f]\)/0x\1,/g'
    printf '0x00};\n'
    printf 'const size_t %s_len = %s;\n' "$name" "$(wc -c < "$in" | tr -d ' ')"
} > "$tmp"
mv "$tmp" "$out"
