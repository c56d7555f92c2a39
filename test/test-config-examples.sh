#!/bin/sh
# konnektord --check-config against the shipped configurations (make check).
#
# Documented behaviour (konnektord(8), konnektor.conf(5)):
#   konnektord --check-config --config FILE
# exits 0 for a valid file, and 78 (EX_CONFIG) for an invalid one after
# printing "FILE:LINE: message" on stderr.
#
# Every conf/*.conf must be valid; a broken copy must be refused with the
# right file and line. Skips (77) when konnektord has not been built.
set -u

: "${top_srcdir:?top_srcdir must be set (make check exports it)}"
: "${top_builddir:?top_builddir must be set (make check exports it)}"

bin=$top_builddir/konnektord
if [ ! -x "$bin" ]; then
        echo "test-config-examples: $bin not built, skipped"
        exit 77
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/konnektor-conf.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM

failed=0
fail() {
        echo "FAIL: $*"
        failed=$((failed + 1))
}

# 1. The shipped configurations are valid.
found=0
for conf in "$top_srcdir"/conf/*.conf; do
        [ -f "$conf" ] || continue
        found=$((found + 1))
        "$bin" --check-config --config "$conf" >"$tmp/out" 2>"$tmp/err"
        rc=$?
        if [ "$rc" -ne 0 ]; then
                fail "$conf: --check-config exited $rc, expected 0"
                sed 's/^/  stderr: /' "$tmp/err"
        else
                echo "ok: $conf"
        fi
done
[ "$found" -gt 0 ] || fail "no conf/*.conf found in $top_srcdir"

# 2. An unknown key is refused with exit 78 and "file:line: ..." on stderr.
bad=$tmp/bad.conf
{
        echo "# a broken copy of the demo configuration"
        echo "[core]"
        echo "no_such_key = 1"
} >"$bad"
"$bin" --check-config --config "$bad" >"$tmp/out" 2>"$tmp/err"
rc=$?
if [ "$rc" -ne 78 ]; then
        fail "$bad: --check-config exited $rc, expected 78 (EX_CONFIG)"
        sed 's/^/  stderr: /' "$tmp/err"
elif ! grep -F "$bad:3: " "$tmp/err" | grep -q 'no_such_key'; then
        fail "$bad: stderr does not name $bad:3 and the key"
        sed 's/^/  stderr: /' "$tmp/err"
else
        echo "ok: unknown key refused with $bad:3"
fi

# 3. So is a bad value, with its line.
printf '[log]\n\nlevel = loud\n' >"$bad"
"$bin" --check-config --config "$bad" >"$tmp/out" 2>"$tmp/err"
rc=$?
if [ "$rc" -ne 78 ]; then
        fail "$bad: --check-config exited $rc for a bad value, expected 78"
        sed 's/^/  stderr: /' "$tmp/err"
elif ! grep -qF "$bad:3: " "$tmp/err"; then
        fail "$bad: stderr does not name $bad:3 for a bad value"
        sed 's/^/  stderr: /' "$tmp/err"
else
        echo "ok: bad value refused with $bad:3"
fi

[ "$failed" -eq 0 ] || exit 1
exit 0
