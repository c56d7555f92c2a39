#!/bin/sh
# test-pki.sh - checks for certs/gen-test-pki.sh (run by `make check').
# Exit 0: all passed, 1: a check failed, 77: skipped (no openssl).
# Many checks run `sh -c '...' sh ARGS': the single quotes are intended.
# shellcheck disable=SC2016

: "${top_srcdir:=$(cd "$(dirname "$0")/.." && pwd)}"
GEN="$top_srcdir/certs/gen-test-pki.sh"

if ! command -v openssl >/dev/null 2>&1; then
	echo "# SKIP: openssl not found"
	exit 77
fi
if [ ! -f "$GEN" ]; then
	echo "not ok - $GEN missing"
	echo "0 passed, 1 failed"
	exit 1
fi

T=$(mktemp -d "${TMPDIR:-/tmp}/test-pki.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
trap 'exit 1' INT TERM
P="$T/pki"
OUTF="$T/.out"
CACHE="$T/.cache"

ALGS="rsa ecc"
CAS="komp-ca smcb-ca hba-ca egk-ca"
LEAVES="konnektor-tls konnektor-vpn konnektor-ct kt-1 kt-2 kt-3 vpn-zugd ti-services"

PASS=0
FAIL=0
ok() {
	PASS=$((PASS + 1))
	echo "ok - $*"
}
not_ok() {
	FAIL=$((FAIL + 1))
	echo "not ok - $*"
}
# check DESCRIPTION COMMAND...: run COMMAND, report, show its output on failure.
check() {
	_d=$1
	shift
	if "$@" >"$OUTF" 2>&1; then
		ok "$_d"
	else
		not_ok "$_d"
		sed 's/^/#   /' "$OUTF" | head -n 20
	fi
}

gen() {
	rm -rf "$CACHE"
	sh "$GEN" "$@"
}

now_ms() {
	_t=$(date +%s%N 2>/dev/null)
	case $_t in
	*N*|"") echo $(($(date +%s) * 1000)) ;;
	*) echo $((_t / 1000000)) ;;
	esac
}

fp() {
	openssl x509 -in "$1" -noout -fingerprint -sha256 2>/dev/null
}

# x509 FILE ARGS...: text output of a certificate
# (cached per file; gen() empties the cache)
text() {
	_c="$CACHE/$(printf '%s' "$1" | tr '/' '_')"
	if [ ! -f "$_c" ]; then
		mkdir -p "$CACHE" &&
			openssl x509 -in "$1" -noout -text >"$_c.tmp" &&
			mv "$_c.tmp" "$_c" || return 1
	fi
	cat "$_c"
}

# has FILE PATTERN...: the certificate text contains every (fixed) pattern
has() {
	_f=$1
	shift
	_t=$(text "$_f") || return 1
	for _p in "$@"; do
		case $_t in
		*"$_p"*) ;;
		*) echo "$_f: missing '$_p'"; return 1 ;;
		esac
	done
}

# verify_chain ROOT INTERMEDIATE LEAF
verify_chain() {
	_r=$(openssl verify -CAfile "$1" -untrusted "$2" "$3" 2>&1)
	[ "$_r" = "$3: OK" ] || { echo "$_r"; return 1; }
}

verify_with() {
	_r=$(openssl verify "$@" 2>&1)
	for _last in "$@"; do :; done
	[ "$_r" = "$_last: OK" ] || { echo "$_r"; return 1; }
}

must_fail_verify() {
	if openssl verify "$@" >/dev/null 2>&1; then
		echo "verification unexpectedly succeeded"
		return 1
	fi
}

key_matches() {
	_ka=$(openssl pkey -in "$1" -pubout 2>&1) || { echo "$_ka"; return 1; }
	_kb=$(openssl x509 -in "$2" -noout -pubkey 2>&1) || { echo "$_kb"; return 1; }
	if [ -z "$_ka" ] || [ "$_ka" != "$_kb" ]; then
		echo "public keys differ"
		return 1
	fi
}

mode_is() {
	# shellcheck disable=SC2012  # known paths; only the mode column is used
	_m=$(ls -ld "$2" | cut -c1-10)
	[ "$_m" = "$1" ] || { echo "$2: mode $_m, want $1"; return 1; }
}

keys_mode_600() {
	for _k in "$1"/*.key; do
		[ -f "$_k" ] || { echo "no keys in $1"; return 1; }
		mode_is -rw------- "$_k" || return 1
	done
}

ecc_key_ok() {
	_t=$(openssl pkey -in "$1" -noout -text 2>&1) || { echo "$_t"; return 1; }
	case $_t in
	*"ASN1 OID: brainpoolP256r1"*) ;;
	*) echo "$1: not a named brainpoolP256r1 key"; return 1 ;;
	esac
}

rsa_key_ok() {
	_t=$(openssl pkey -in "$1" -noout -text 2>&1) || { echo "$_t"; return 1; }
	case $_t in
	"Private-Key: (2048 bit"*) ;;
	*) echo "$1: not RSA-2048: $(echo "$_t" | head -n 1)"; return 1 ;;
	esac
}

no_temp_left() {
	for _e in "$T"/.[!.]* "$T"/*; do
		[ -e "$_e" ] || continue
		case ${_e##*/} in
		pki|.out|.cache|other*|keep|int) ;;
		*) echo "left behind in $T: ${_e##*/}"; return 1 ;;
		esac
	done
}

all_files_present() {
	for _a in $ALGS; do
		for _n in root-ca $CAS ocsp-komp ocsp-smcb ocsp-hba ocsp-egk $LEAVES; do
			[ -s "$1/$_n-$_a.crt" ] || { echo "missing $_n-$_a.crt"; return 1; }
			[ -s "$1/private/$_n-$_a.key" ] || { echo "missing private/$_n-$_a.key"; return 1; }
		done
		for _n in ocsp-komp ocsp-smcb ocsp-hba ocsp-egk $LEAVES; do
			[ -s "$1/$_n-$_a-chain.pem" ] || { echo "missing $_n-$_a-chain.pem"; return 1; }
		done
		[ -s "$1/ca-bundle-$_a.pem" ] || { echo "missing ca-bundle-$_a.pem"; return 1; }
	done
	[ -s "$1/ca-bundle.pem" ] && [ -s "$1/trust-anchors.pem" ] &&
		[ -f "$1/.complete" ]
}

# ---------------------------------------------------------------- generation
t0=$(now_ms)
check "generate a fresh PKI" gen --out "$P" --quiet --hostname test-host.example
t1=$(now_ms)
echo "# generation took $((t1 - t0)) ms"
check "all files present, marker written" all_files_present "$P"
check "no temp directories left behind" no_temp_left
check "--quiet prints nothing" sh -c '[ ! -s "$1" ]' sh "$OUTF"

# ----------------------------------------------------------- per-algorithm
for a in $ALGS; do
	root="$P/root-ca-$a.crt"
	check "root-ca-$a is self-signed and verifies" verify_with -CAfile "$root" "$root"
	check "root-ca-$a basicConstraints CA:TRUE, keyCertSign" \
		has "$root" "CA:TRUE" "Certificate Sign, CRL Sign" "Subject Key Identifier" \
		"TEST"
	for ca in $CAS; do
		c="$P/$ca-$a.crt"
		check "$ca-$a verifies against root-ca-$a" verify_with -CAfile "$root" "$c"
		check "$ca-$a basicConstraints CA:TRUE pathlen:0, SKID/AKID" \
			has "$c" "CA:TRUE, pathlen:0" "Certificate Sign, CRL Sign" \
			"Subject Key Identifier" "Authority Key Identifier"
	done
	for ca in $CAS; do
		o="ocsp-${ca%-ca}"
		set -- "$o"
		# shellcheck disable=SC2086
		[ "$ca" != komp-ca ] || set -- "$o" $LEAVES
		for n in "$@"; do
			l="$P/$n-$a.crt"
			check "$n-$a verifies against root-ca-$a via $ca-$a" \
				verify_chain "$root" "$P/$ca-$a.crt" "$l"
			check "$n-$a is an end entity with SKID/AKID" \
				has "$l" "CA:FALSE" "Subject Key Identifier" "Authority Key Identifier"
			check "$n-$a chain file is leaf + $ca-$a and verifies" \
				sh -c 'cat "$2" "$4" | cmp - "$1" &&
					[ "$(openssl verify -CAfile "$3" -untrusted "$1" "$2" 2>&1)" = "$2: OK" ]' \
				sh "$P/$n-$a-chain.pem" "$l" "$root" "$P/$ca-$a.crt"
		done
		check "$o-$a has EKU OCSPSigning" has "$P/$o-$a.crt" "OCSP Signing" "OCSP No Check"
	done
	for n in root-ca $CAS ocsp-komp ocsp-smcb ocsp-hba ocsp-egk $LEAVES; do
		check "private/$n-$a.key matches $n-$a.crt" \
			key_matches "$P/private/$n-$a.key" "$P/$n-$a.crt"
	done
	check "ca-bundle-$a.pem holds root + 4 intermediates" \
		sh -c '[ "$(grep -c BEGIN "$1")" = 5 ]' sh "$P/ca-bundle-$a.pem"
	check "konnektor-tls-$a verifies against ca-bundle.pem (sslserver)" \
		verify_with -CAfile "$P/ca-bundle.pem" -purpose sslserver "$P/konnektor-tls-$a.crt"
	check "konnektor-ct-$a verifies as TLS client" \
		verify_with -CAfile "$P/ca-bundle-$a.pem" -purpose sslclient "$P/konnektor-ct-$a.crt"
	check "kt-1-$a verifies as TLS server" \
		verify_with -CAfile "$P/ca-bundle-$a.pem" -purpose sslserver "$P/kt-1-$a.crt"
done

check "ca-bundle.pem holds 10 certificates, trust-anchors.pem 2" \
	sh -c '[ "$(grep -c BEGIN "$1")" = 10 ] && [ "$(grep -c BEGIN "$2")" = 2 ]' \
	sh "$P/ca-bundle.pem" "$P/trust-anchors.pem"
check "RSA leaf does not verify against the ECC root" \
	must_fail_verify -CAfile "$P/root-ca-ecc.crt" -untrusted "$P/komp-ca-ecc.crt" \
	"$P/konnektor-tls-rsa.crt"
check "komp-ca leaf does not verify via smcb-ca" \
	must_fail_verify -CAfile "$P/root-ca-rsa.crt" -untrusted "$P/smcb-ca-rsa.crt" \
	"$P/kt-1-rsa.crt"

# ------------------------------------------------------------ key material
all_ecc_ok() {
	for _ek in "$P"/private/*-ecc.key; do ecc_key_ok "$_ek" || return 1; done
	for _ec in "$P"/*-ecc.crt; do has "$_ec" "ASN1 OID: brainpoolP256r1" "ecdsa-with-SHA256" || return 1; done
}
all_rsa_ok() {
	for _rk in "$P"/private/*-rsa.key; do rsa_key_ok "$_rk" || return 1; done
	for _rc in "$P"/*-rsa.crt; do has "$_rc" "Public-Key: (2048 bit)" "sha256WithRSAEncryption" || return 1; done
}
check "all ECC keys and certificates are brainpoolP256r1" all_ecc_ok
check "all RSA keys and certificates are 2048 bit" all_rsa_ok
check "private keys are mode 0600" keys_mode_600 "$P/private"
check "private directory is mode 0700" mode_is drwx------ "$P/private"

# ------------------------------------------------------------- profiles
for a in $ALGS; do
	c="$P/konnektor-tls-$a.crt"
	check "konnektor-tls-$a SAN konnektor.konlan, localhost, hostname, 127.0.0.1, ::1" \
		has "$c" "DNS:konnektor.konlan" "DNS:localhost" "DNS:test-host.example" \
		"IP Address:127.0.0.1" "IP Address:0:0:0:0:0:0:0:1"
	check "konnektor-tls-$a EKU serverAuth + clientAuth" \
		has "$c" "TLS Web Server Authentication" "TLS Web Client Authentication"
	check "konnektor-ct-$a EKU clientAuth only" \
		sh -c 't=$(openssl x509 -in "$1" -noout -ext extendedKeyUsage) &&
			case $t in *"Client Authentication"*) ;; *) exit 1 ;; esac &&
			case $t in *"Server Authentication"*) exit 1 ;; esac' sh "$P/konnektor-ct-$a.crt"
	check "kt-2-$a SAN kt-2.konlan, EKU serverAuth" \
		has "$P/kt-2-$a.crt" "DNS:kt-2.konlan" "TLS Web Server Authentication"
	check "konnektor-vpn-$a SAN konnektor.vpn.ktest" \
		has "$P/konnektor-vpn-$a.crt" "DNS:konnektor.vpn.ktest"
	check "vpn-zugd-$a SAN vpn-zugd.ktest" has "$P/vpn-zugd-$a.crt" "DNS:vpn-zugd.ktest"
	check "ti-services-$a SAN *.ti.ktest, localhost, 127.0.0.1" \
		has "$P/ti-services-$a.crt" "DNS:*.ti.ktest" "DNS:localhost" "IP Address:127.0.0.1"
	check "leaf certificates carry an OCSP URL" \
		has "$P/kt-3-$a.crt" "OCSP - URI:http://ocsp.ti.ktest/komp-ca-$a"
done

# -------------------------------------------------------------- idempotency
marker_id() {
	# shellcheck disable=SC2012  # inode numbers of known paths
	ls -id "$P" "$P/.complete" | awk '{print $1}' | tr '\n' ' '
	cksum <"$P/.complete"
	fp "$P/konnektor-tls-rsa.crt"
	fp "$P/root-ca-ecc.crt"
}
before=$(marker_id)
check "second run without --force succeeds" gen --out "$P" --quiet
after=$(marker_id)
check "second run is a no-op (marker and certificates untouched)" \
	test "$before" = "$after"

# ---------------------------------------------------------------- issue
check "issue: ECC card certificate from smcb-ca-ecc" \
	gen --out "$P" --quiet issue --ca smcb-ca-ecc --name smcb-test \
	--subject "/C=DE/O=Praxis Dr. Test TEST-ONLY/CN=Zahnarztpraxis Test" \
	--algo ecc --eku clientAuth --days 30
I="$P/issued"
check "issue: new certificate verifies against smcb-ca-ecc" \
	verify_chain "$P/root-ca-ecc.crt" "$P/smcb-ca-ecc.crt" "$I/smcb-test.crt"
check "issue: new key is brainpoolP256r1, mode 0600, matches the certificate" \
	sh -c 't=$(openssl pkey -in "$1" -noout -text) &&
		case $t in *brainpoolP256r1*) ;; *) exit 1 ;; esac &&
		[ "$(ls -l "$1" | cut -c1-10)" = -rw------- ] &&
		[ "$(openssl pkey -in "$1" -pubout)" = "$(openssl x509 -in "$2" -noout -pubkey)" ]' \
	sh "$I/smcb-test.key" "$I/smcb-test.crt"
check "issue: EKU clientAuth, CA:FALSE, subject as given" \
	has "$I/smcb-test.crt" "TLS Web Client Authentication" "CA:FALSE" \
	"CN = Zahnarztpraxis Test" "Authority Key Identifier"
check "issue: chain file is leaf + smcb-ca-ecc" \
	verify_with -CAfile "$P/root-ca-ecc.crt" -untrusted "$I/smcb-test-chain.pem" "$I/smcb-test.crt"
check "issue: refuses to overwrite without --force" \
	sh -c '! sh "$1" --out "$2" --quiet issue --ca smcb-ca-ecc --name smcb-test \
		--subject /CN=x 2>/dev/null' sh "$GEN" "$P"

cp "$P/private/kt-3-rsa.key" "$T/keep" && chmod 600 "$T/keep"
check "issue: RSA certificate for an existing key from hba-ca-rsa" \
	gen --out "$P" --quiet issue --ca hba-ca-rsa --name hba-test \
	--subject "/C=DE/CN=Dr. Test TEST-ONLY" --key "$T/keep"
check "issue: existing key certified, no key copy written" \
	sh -c '[ ! -e "$3" ]' sh "$T/keep" "$I/hba-test.crt" "$I/hba-test.key"
check "issue: certificate for the existing key matches it" key_matches "$T/keep" "$I/hba-test.crt"
check "issue: hba-test verifies against hba-ca-rsa" \
	verify_chain "$P/root-ca-rsa.crt" "$P/hba-ca-rsa.crt" "$I/hba-test.crt"

openssl pkey -in "$P/private/kt-3-ecc.key" -pubout -out "$T/other.pub" 2>/dev/null
check "issue: --pubkey (public key only) from egk-ca-ecc" \
	gen --out "$P" --quiet issue --ca egk-ca-ecc --name egk-test \
	--subject "/C=DE/CN=Versicherter Test" --pubkey "$T/other.pub" --dest "$T/other-dest"
check "issue: --pubkey certificate carries that key and verifies" \
	sh -c '[ "$(openssl pkey -pubin -in "$1")" = "$(openssl x509 -in "$2" -noout -pubkey)" ] &&
		[ "$(openssl verify -CAfile "$3" -untrusted "$4" "$2" 2>&1)" = "$2: OK" ]' \
	sh "$T/other.pub" "$T/other-dest/egk-test.crt" "$P/root-ca-ecc.crt" "$P/egk-ca-ecc.crt"
check "issue: unknown CA is rejected" \
	sh -c '! sh "$1" --out "$2" --quiet issue --ca nope-ca --name x --subject /CN=x 2>/dev/null' \
	sh "$GEN" "$P"
check "issue: marker untouched by issue" test "$before" = "$(marker_id)"

# ----------------------------------------------------------------- --force
check "--force regenerates" gen --out "$P" --quiet --force
after=$(marker_id)
check "--force changed the certificates" test "$before" != "$after"
check "--force: new konnektor-tls-rsa verifies" \
	verify_chain "$P/root-ca-rsa.crt" "$P/komp-ca-rsa.crt" "$P/konnektor-tls-rsa.crt"
check "--force: old issued certificates are gone" test ! -e "$P/issued"
check "--force: default hostname recorded in marker" grep -q '^hostname=..*' "$P/.complete"
check "no temp directories left behind after --force" no_temp_left

# --------------------------------------------------------------- truncated
before=$(marker_id)
rm -f "$P/.complete" "$P/kt-2-ecc.crt"
check "truncated PKI (no marker) is regenerated" gen --out "$P" --quiet
check "truncated PKI: all files back" all_files_present "$P"
check "truncated PKI: regenerated from scratch" test "$before" != "$(marker_id)"
check "truncated PKI: kt-2-ecc verifies" \
	verify_chain "$P/root-ca-ecc.crt" "$P/komp-ca-ecc.crt" "$P/kt-2-ecc.crt"

# ------------------------------------------------------------------ safety
mkdir "$T/other-dir" && echo precious >"$T/other-dir/file"
check "refuses to replace a directory it did not write" \
	sh -c '! sh "$1" --out "$2" --quiet 2>/dev/null && [ "$(cat "$2/file")" = precious ]' \
	sh "$GEN" "$T/other-dir"
check "unknown option is a usage error (exit 2)" \
	sh -c 'sh "$1" --out "$2" --bogus 2>/dev/null; [ $? = 2 ]' sh "$GEN" "$T/x"

# An interrupted run must leave either nothing or a complete PKI.
sh "$GEN" --out "$T/int" --quiet &
ipid=$!
sleep 0.5 2>/dev/null || sleep 1
kill -TERM "$ipid" 2>/dev/null
wait "$ipid" 2>/dev/null
check "interrupted run leaves no half PKI" \
	sh -c '[ ! -e "$1" ] || [ -f "$1/.complete" ]' sh "$T/int"
sleep 0.3 2>/dev/null || sleep 1
check "interrupted run leaves no temp directories" no_temp_left

echo "$PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
