#!/bin/sh
# Replays every fuzz corpus through its target (make check).
#
# Each fuzz/fuzz_<name> program in the build tree that has a corpus
# directory fuzz/corpus/<name>/ in the source tree is run over that corpus.
# With gcc the targets are linked with fuzz/replay.c, which feeds each file
# once; a libFuzzer build accepts the same command line and also just runs
# the given inputs. Fails if any target fails; skips (77) if none is built.
set -u

: "${top_srcdir:?top_srcdir must be set (make check exports it)}"
: "${top_builddir:?top_builddir must be set (make check exports it)}"

ran=0
failed=0
for bin in "$top_builddir"/fuzz/fuzz_*; do
        if [ ! -f "$bin" ] || [ ! -x "$bin" ]; then
                continue
        fi
        name=${bin##*/fuzz_}
        case $name in
        *.*) continue ;;        # objects, logs and other build droppings
        esac
        corpus=$top_srcdir/fuzz/corpus/$name
        if [ ! -d "$corpus" ]; then
                echo "fuzz-replay: no corpus for fuzz_$name ($corpus), skipped"
                continue
        fi
        echo "fuzz-replay: fuzz_$name $corpus"
        # -runs=0: a libFuzzer build only runs the corpus; replay.c ignores it.
        if "$bin" -runs=0 "$corpus"; then
                ran=$((ran + 1))
        else
                echo "fuzz-replay: FAIL: fuzz_$name (exit status $?)"
                failed=$((failed + 1))
        fi
done

if [ "$failed" -gt 0 ]; then
        echo "fuzz-replay: $failed target(s) failed"
        exit 1
fi
if [ "$ran" -eq 0 ]; then
        echo "fuzz-replay: no fuzz target built"
        exit 77
fi
echo "fuzz-replay: $ran target(s) passed"
exit 0
