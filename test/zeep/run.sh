#!/bin/sh
# SOAP client tests with zeep (make check): clients generated from the
# official gematik WSDLs call a real konnektord; see test/zeep/konn.py.
#
#   sh test/zeep/run.sh [MODULE|MODULE.Class.test ...]
#
# make check exports top_srcdir and top_builddir. Exit 77 (skipped) when no
# Python 3 with zeep is found (Debian: python3-zeep) or the api-telematik
# schemas are not beside the clone; otherwise the exit code of run.py.
set -u

: "${top_srcdir:?top_srcdir must be set (make check exports it)}"
: "${top_builddir:?top_builddir must be set (make check exports it)}"
here=$top_srcdir/test/zeep

api=${API_TELEMATIK:-$top_srcdir/../shared/api-telematik}
if [ ! -f "$api/conn/EventService.wsdl" ]; then
        echo "zeep SOAP tests: skipped, no api-telematik schemas in $api"
        exit 77
fi
for bin in konnektord kt-ctl; do
        if [ ! -x "$top_builddir/$bin" ]; then
                echo "zeep SOAP tests: $top_builddir/$bin not built"
                exit 1
        fi
done

# Debian's interpreter first: a python3 earlier in PATH (pyenv, venv) does
# not see the python3-zeep package
py=
for cand in ${PYTHON:-} /usr/bin/python3 python3; do
        if "$cand" -c 'import zeep, lxml, requests' >/dev/null 2>&1; then
                py=$cand
                break
        fi
done
if [ -z "$py" ]; then
        echo "zeep SOAP tests: skipped, no python3 with zeep, lxml and requests (apt-get install python3-zeep)"
        exit 77
fi

export top_srcdir top_builddir
exec "$py" -B "$here/run.py" "$@"
