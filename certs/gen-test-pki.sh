#!/bin/sh
# gen-test-pki.sh - generate the Virtual Konnektor TEST PKI.
#
# Every key this script writes is a freshly generated TEST key.  None of them
# is, or stands in for, a real gematik key.  See certs/README.
#
# Usage:
#   gen-test-pki.sh --out DIR [--quiet] [--force] [--hostname NAME]
#   gen-test-pki.sh --out DIR [--quiet] [--force] issue --ca CA --name NAME
#       --subject DN [--key FILE | --pubkey FILE | --algo rsa|ecc] [--days N]
#       [--eku LIST|none] [--ku LIST] [--san LIST] [--addext LINE]...
#       [--dest DIR]
#
# Only the `openssl` command (OpenSSL 3.0) and POSIX tools are used.

set -u
PROG=gen-test-pki
# Bump PKI_FORMAT whenever the set of files or a certificate profile changes:
# a DIR whose marker names another format is regenerated.
PKI_FORMAT=1

ALGS="rsa ecc"
SUB_CAS="komp-ca smcb-ca hba-ca egk-ca"
LEAVES="konnektor-tls konnektor-vpn konnektor-ct kt-1 kt-2 kt-3 vpn-zugd ti-services"
ORG="Virtual Konnektor TEST-ONLY"
OCSP_BASE="http://ocsp.ti.ktest"
ROOT_DAYS=3650
SUBCA_DAYS=2920
LEAF_DAYS=730

usage() {
	cat <<'EOF'
usage: gen-test-pki.sh --out DIR [--quiet] [--force] [--hostname NAME]
       gen-test-pki.sh --out DIR [--quiet] [--force] issue --ca CA --name NAME
           --subject DN [--key FILE | --pubkey FILE | --algo rsa|ecc]
           [--days N] [--eku LIST|none] [--ku LIST] [--san LIST]
           [--addext LINE]... [--dest DIR]

Generates the Virtual Konnektor TEST PKI (RSA-2048 and brainpoolP256r1) into
DIR.  Does nothing if DIR already holds a complete PKI, unless --force.
The `issue' sub-command issues one more certificate from an existing PKI.
TEST KEYS ONLY - see certs/README.
EOF
}

die() {
	printf '%s: %s\n' "$PROG" "$*" >&2
	exit 1
}

usage_error() {
	printf '%s: %s\n' "$PROG" "$*" >&2
	usage >&2
	exit 2
}

say() {
	[ "$QUIET" = 1 ] || printf '%s\n' "$*"
}

# ---------------------------------------------------------------- arguments
OUT=
QUIET=0
FORCE=0
HOST=
MODE=generate
I_CA=
I_NAME=
I_SUBJ=
I_KEY=
I_PUB=
I_ALGO=
I_DAYS=
I_EKU=
I_KU=
I_SAN=
I_DEST=
I_ADDEXT=
nl='
'

while [ $# -gt 0 ]; do
	opt=$1
	case $opt in
	--out|--hostname|--ca|--name|--subject|--key|--pubkey|--algo|--days|\
	--eku|--ku|--san|--addext|--dest)
		[ $# -ge 2 ] || usage_error "option $opt needs a value"
		val=$2
		shift 2
		case $val in
		*"$nl"*) usage_error "value of $opt must not contain a newline" ;;
		esac
		;;
	*)
		val=
		shift
		;;
	esac
	case $opt in
	--out) OUT=$val ;;
	--hostname) HOST=$val ;;
	--quiet|-q) QUIET=1 ;;
	--force|-f) FORCE=1 ;;
	-h|--help) usage; exit 0 ;;
	issue) MODE=issue ;;
	--ca) I_CA=$val ;;
	--name) I_NAME=$val ;;
	--subject) I_SUBJ=$val ;;
	--key) I_KEY=$val ;;
	--pubkey) I_PUB=$val ;;
	--algo) I_ALGO=$val ;;
	--days) I_DAYS=$val ;;
	--eku) I_EKU=$val ;;
	--ku) I_KU=$val ;;
	--san) I_SAN=$val ;;
	--addext) I_ADDEXT="$I_ADDEXT$val$nl" ;;
	--dest) I_DEST=$val ;;
	*) usage_error "unknown argument: $opt" ;;
	esac
done

[ -n "$OUT" ] || usage_error "--out DIR is required"
if [ "$MODE" = generate ]; then
	for v in "$I_CA" "$I_NAME" "$I_SUBJ" "$I_KEY" "$I_PUB" "$I_ALGO" \
		"$I_DAYS" "$I_EKU" "$I_KU" "$I_SAN" "$I_DEST" "$I_ADDEXT"; do
		[ -z "$v" ] || usage_error "issue options given without the issue sub-command"
	done
fi

command -v openssl >/dev/null 2>&1 || die "openssl not found in PATH"

# Strip trailing slashes so that dirname/basename name DIR itself.
while :; do
	case $OUT in
	?*/) OUT=${OUT%/} ;;
	*) break ;;
	esac
done
PARENT=$(dirname -- "$OUT")
BASE=$(basename -- "$OUT")
case $BASE in
/|.|..) die "unusable output directory: $OUT" ;;
esac

# ------------------------------------------------------------------ helpers
LOG=/dev/null      # replaced by a file once a work directory exists
OPENSSL_CNF=       # minimal config for `openssl req'

# ossl ARGS...: run openssl, keep its chatter in $LOG, fail loudly.
ossl() {
	if ! openssl "$@" >>"$LOG" 2>&1; then
		printf '%s: openssl %s failed:\n' "$PROG" "$1" >&2
		if [ "$LOG" != /dev/null ]; then
			tail -n 15 "$LOG" >&2
		fi
		return 1
	fi
}

# keygen_exec FILE ALG: replace the current (sub)shell by the openssl
# process that writes a new private key (PEM PKCS#8, mode 0600).  Run it in
# a subshell or background job: then $! is openssl itself and can be killed.
keygen_exec() {
	umask 077
	case $2 in
	rsa) exec openssl genpkey -quiet -algorithm RSA \
		-pkeyopt rsa_keygen_bits:2048 -out "$1" ;;
	ecc) exec openssl genpkey -quiet -algorithm EC \
		-pkeyopt ec_paramgen_curve:brainpoolP256r1 \
		-pkeyopt ec_param_enc:named_curve -out "$1" ;;
	esac
	echo "$PROG: unknown algorithm $2" >&2
	exit 1
}

# genkey FILE ALG: new private key in the foreground.
genkey() {
	if ! (keygen_exec "$1" "$2") >>"$LOG" 2>&1; then
		printf '%s: openssl genpkey failed:\n' "$PROG" >&2
		[ "$LOG" = /dev/null ] || tail -n 15 "$LOG" >&2
		return 1
	fi
	chmod 600 "$1"
}

# A random positive 128-bit serial number.
serial() {
	s=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
	[ ${#s} -eq 32 ] || return 1
	printf '0x%s\n' "$s"
}

# key_type KEYFILE [pub]: prints rsa, ecc or other.
key_type() {
	if [ "${2-}" = pub ]; then
		t=$(openssl pkey -pubin -in "$1" -noout -text 2>/dev/null)
	else
		t=$(openssl pkey -in "$1" -noout -text_pub 2>/dev/null)
	fi || return 1
	case $t in
	*Modulus*) echo rsa ;;
	*"ASN1 OID"*) echo ecc ;;
	*) echo other ;;
	esac
}

# write_ext FILE LINE...: an extension file with one section [ext].
write_ext() {
	f=$1
	shift
	{
		echo "[ext]"
		for l in "$@"; do
			printf '%s\n' "$l"
		done
	} >"$f"
}

# write_openssl_cnf FILE: the minimal configuration `openssl req' needs,
# plus the extension section for self-signed roots.
write_openssl_cnf() {
	cat >"$1" <<'EOF'
[ req ]
distinguished_name = req_dn
string_mask = utf8only
utf8 = yes
[ req_dn ]
[ v3_root ]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EOF
}

# sign_csr CERT CSR CA_CRT CA_KEY DAYS EXTFILE [-force_pubkey PUB]
sign_csr() {
	c_out=$1 c_csr=$2 c_ca=$3 c_cakey=$4 c_days=$5 c_ext=$6
	shift 6
	c_ser=$(serial) || { echo "$PROG: no random serial" >&2; return 1; }
	ossl x509 -req -in "$c_csr" -CA "$c_ca" -CAkey "$c_cakey" \
		-set_serial "$c_ser" -days "$c_days" -sha256 \
		-extfile "$c_ext" -extensions ext "$@" -out "$c_out" &&
		chmod 644 "$c_out"
}

# make_cert CERT KEY SUBJECT CA_CRT CA_KEY DAYS EXTFILE
make_cert() {
	ossl req -new -config "$OPENSSL_CNF" -utf8 -key "$2" -subj "$3" \
		-out "$1.csr" &&
		sign_csr "$1" "$1.csr" "$4" "$5" "$6" "$7" &&
		rm -f "$1.csr"
}

# Comma separated SAN list for the Konnektor TLS identity.
tls_san() {
	san="DNS:konnektor.konlan,DNS:localhost"
	case $HOST in
	konnektor.konlan|localhost) ;;
	*[!0-9.]*) san="$san,DNS:$HOST" ;;
	*) san="$san,IP:$HOST" ;;
	esac
	[ "$HOST" = 127.0.0.1 ] || san="$san,IP:127.0.0.1"
	printf '%s,IP:::1\n' "$san"
}

valid_hostname() {
	case $1 in
	""|*[!A-Za-z0-9.-]*|.*|-*) return 1 ;;
	esac
	[ ${#1} -le 253 ]
}

default_hostname() {
	h=
	if command -v hostname >/dev/null 2>&1; then
		if command -v timeout >/dev/null 2>&1; then
			h=$(timeout 3 hostname -f 2>/dev/null) || h=
		else
			h=$(hostname -f 2>/dev/null) || h=
		fi
	fi
	valid_hostname "$h" || h=konnektor-demo
	printf '%s\n' "$h"
}

# Does an existing DIR look like something this script may replace?
replaceable() {
	[ -d "$1" ] || return 1
	[ -f "$1/.complete" ] && return 0
	[ -f "$1/.gen-test-pki" ] && return 0
	# empty, or only make's stamp file
	for e in "$1"/* "$1"/.[!.]* "$1"/..?*; do
		[ -e "$e" ] || [ -L "$e" ] || continue
		[ "$e" = "$1/.stamp" ] && continue
		return 1
	done
	return 0
}

# ------------------------------------------------------------ issue command
upper() {
	printf '%s\n' "$1" | tr '[:lower:]' '[:upper:]'
}

do_issue() {
	[ -f "$OUT/.complete" ] || die "$OUT does not hold a complete test PKI (run without 'issue' first)"
	[ -n "$I_CA" ] || usage_error "issue: --ca is required"
	[ -n "$I_NAME" ] || usage_error "issue: --name is required"
	[ -n "$I_SUBJ" ] || usage_error "issue: --subject is required"
	case $I_NAME in
	*[!A-Za-z0-9._-]*|.*) usage_error "issue: --name may only contain A-Z a-z 0-9 . _ - and must not start with '.'" ;;
	esac
	case $I_CA in
	*[!A-Za-z0-9._-]*|.*) usage_error "issue: bad --ca value" ;;
	esac
	ca_crt="$OUT/$I_CA.crt"
	ca_key="$OUT/private/$I_CA.key"
	if [ ! -f "$ca_crt" ] || [ ! -f "$ca_key" ]; then
		die "issue: no CA '$I_CA' in $OUT (expected $ca_crt and $ca_key)"
	fi
	openssl x509 -in "$ca_crt" -noout -ext basicConstraints 2>/dev/null |
		grep -q 'CA:TRUE' || die "issue: $I_CA is not a CA certificate"

	n=0
	[ -z "$I_KEY" ] || n=$((n + 1))
	[ -z "$I_PUB" ] || n=$((n + 1))
	[ -z "$I_ALGO" ] || n=$((n + 1))
	[ $n -le 1 ] || usage_error "issue: --key, --pubkey and --algo exclude each other"
	days=${I_DAYS:-$LEAF_DAYS}
	case $days in
	""|*[!0-9]*|0) usage_error "issue: --days needs a positive number" ;;
	esac
	case $I_EKU in
	*[!A-Za-z0-9.,]*) usage_error "issue: bad --eku list" ;;
	esac
	case $I_KU in
	*[!A-Za-z,]*) usage_error "issue: bad --ku list" ;;
	esac

	dest=${I_DEST:-$OUT/issued}
	if [ ! -d "$dest" ]; then
		(umask 077 && mkdir -p "$dest") || die "issue: cannot create $dest"
	fi
	crt="$dest/$I_NAME.crt"
	chain="$dest/$I_NAME-chain.pem"
	key="$dest/$I_NAME.key"
	if [ "$FORCE" != 1 ] && [ -e "$crt" ]; then
		die "issue: $crt exists (use --force to replace it)"
	fi

	work=$(mktemp -d "$dest/.issue.$I_NAME.XXXXXX") || die "issue: mktemp failed"
	trap 'rm -rf "$work"' EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	LOG="$work/log"
	OPENSSL_CNF="$work/openssl.cnf"
	write_openssl_cnf "$OPENSSL_CNF"

	newkey=0
	if [ -n "$I_KEY" ]; then
		# Copied once, so that a pipe or process substitution works too.
		(umask 077 && cat -- "$I_KEY" >"$work/given.key") 2>/dev/null ||
			die "issue: cannot read key $I_KEY"
		signkey="$work/given.key"
		ktype=$(key_type "$signkey") || die "issue: $I_KEY is not a private key openssl can read"
	elif [ -n "$I_PUB" ]; then
		cat -- "$I_PUB" >"$work/given.pub" 2>/dev/null ||
			die "issue: cannot read public key $I_PUB"
		I_PUB="$work/given.pub"
		ktype=$(key_type "$I_PUB" pub) || die "issue: $I_PUB is not a public key openssl can read"
		# The CSR only carries the subject; its throwaway key is replaced.
		genkey "$work/csr.key" ecc || die "issue: key generation failed"
		signkey="$work/csr.key"
	else
		algo=$I_ALGO
		if [ -z "$algo" ]; then
			case $I_CA in
			*-rsa) algo=rsa ;;
			*) algo=ecc ;;
			esac
		fi
		case $algo in
		rsa|ecc) ;;
		*) usage_error "issue: --algo must be rsa or ecc" ;;
		esac
		genkey "$work/new.key" "$algo" || die "issue: key generation failed"
		ktype=$algo
		signkey="$work/new.key"
		newkey=1
	fi

	ku=$I_KU
	if [ -z "$ku" ]; then
		ku=digitalSignature
		[ "$ktype" != rsa ] || ku="digitalSignature,keyEncipherment"
	fi
	set -- "basicConstraints = critical,CA:FALSE" \
		"keyUsage = critical,$ku" \
		"subjectKeyIdentifier = hash" \
		"authorityKeyIdentifier = keyid:always"
	case $I_EKU in
	""|none) ;;
	*) set -- "$@" "extendedKeyUsage = $I_EKU" ;;
	esac
	[ -z "$I_SAN" ] || set -- "$@" "subjectAltName = $I_SAN"
	case $I_CA in
	root-ca-*) ;;
	*) set -- "$@" "authorityInfoAccess = OCSP;URI:$OCSP_BASE/$I_CA" ;;
	esac
	write_ext "$work/ext.cnf" "$@"
	if [ -n "$I_ADDEXT" ]; then
		printf '%s' "$I_ADDEXT" >>"$work/ext.cnf"
	fi

	ossl req -new -config "$OPENSSL_CNF" -utf8 -key "$signkey" \
		-subj "$I_SUBJ" -out "$work/req.csr" || die "issue: bad subject or key"
	if [ -n "$I_PUB" ]; then
		sign_csr "$work/new.crt" "$work/req.csr" "$ca_crt" "$ca_key" \
			"$days" "$work/ext.cnf" -force_pubkey "$I_PUB"
	else
		sign_csr "$work/new.crt" "$work/req.csr" "$ca_crt" "$ca_key" \
			"$days" "$work/ext.cnf"
	fi || die "issue: signing failed"

	if [ "${I_CA#root-ca-}" != "$I_CA" ]; then
		cat "$work/new.crt" >"$work/new-chain.pem"
	else
		cat "$work/new.crt" "$ca_crt" >"$work/new-chain.pem"
	fi || die "issue: cannot write chain"
	chmod 644 "$work/new-chain.pem"

	if [ $newkey = 1 ]; then
		mv -f "$work/new.key" "$key" || die "issue: cannot write $key"
	fi
	if ! mv -f "$work/new-chain.pem" "$chain" || ! mv -f "$work/new.crt" "$crt"; then
		die "issue: cannot write $crt"
	fi
	if [ "$QUIET" != 1 ]; then
		echo "$crt"
		[ $newkey != 1 ] || echo "$key"
		echo "$chain"
	fi
	exit 0
}

[ "$MODE" = issue ] && do_issue

# --------------------------------------------------------------- generation
if [ "$FORCE" != 1 ] && [ -f "$OUT/.complete" ] &&
	grep -qx "format=$PKI_FORMAT" "$OUT/.complete"; then
	say "$PROG: $OUT already holds a complete test PKI (use --force to regenerate)"
	exit 0
fi
if [ -e "$OUT" ] || [ -L "$OUT" ]; then
	replaceable "$OUT" ||
		die "refusing to replace $OUT: it is not a directory written by this script"
fi

if [ -n "$HOST" ]; then
	valid_hostname "$HOST" || usage_error "--hostname: not a valid host name: $HOST"
else
	HOST=$(default_hostname)
fi

mkdir -p -- "$PARENT" || die "cannot create $PARENT"

# Remove temp dirs left behind by runs that were killed (pid no longer alive).
for d in "$PARENT/.$BASE".tmp.* "$PARENT/.$BASE".old.*; do
	[ -d "$d" ] || continue
	p=${d##*/."$BASE".}
	p=${p#tmp.}
	p=${p#old.}
	p=${p%%.*}
	case $p in
	""|*[!0-9]*) continue ;;
	esac
	kill -0 "$p" 2>/dev/null || rm -rf -- "$d"
done

TMP=$(mktemp -d "$PARENT/.$BASE.tmp.$$.XXXXXX") || die "cannot create a temp dir in $PARENT"
JOBS=
# shellcheck disable=SC2317  # invoked from the EXIT trap
cleanup() {
	for p in $JOBS; do
		kill "$p" 2>/dev/null
	done
	wait 2>/dev/null
	# A killed job's last openssl may still write a file while rm runs.
	rm -rf -- "$TMP" 2>/dev/null || { sleep 1; rm -rf -- "$TMP"; }
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "Virtual Konnektor TEST PKI - generated by certs/gen-test-pki.sh" >"$TMP/.gen-test-pki"
WORK="$TMP/.work"
mkdir "$WORK" || die "cannot create $WORK"
(umask 077 && mkdir "$TMP/private") || die "cannot create $TMP/private"
chmod 700 "$TMP/private"
LOG="$WORK/log"
: >"$LOG"
OPENSSL_CNF="$WORK/openssl.cnf"
write_openssl_cnf "$OPENSSL_CNF"

# leaf_ext NAME ALG FILE CA: write the extension file (profile) of one
# end-entity certificate issued by CA-ALG.
leaf_ext() {
	name=$1 alg=$2 file=$3 ca=$4
	if [ "$alg" = rsa ]; then
		tls_ku="keyUsage = critical,digitalSignature,keyEncipherment"
	else
		tls_ku="keyUsage = critical,digitalSignature"
	fi
	set -- "basicConstraints = critical,CA:FALSE" \
		"subjectKeyIdentifier = hash" \
		"authorityKeyIdentifier = keyid:always" \
		"authorityInfoAccess = OCSP;URI:$OCSP_BASE/$ca-$alg"
	case $name in
	konnektor-tls)
		set -- "$@" "$tls_ku" "extendedKeyUsage = serverAuth,clientAuth" \
			"subjectAltName = $(tls_san)" ;;
	konnektor-vpn)
		set -- "$@" "$tls_ku" \
			"extendedKeyUsage = serverAuth,clientAuth,ipsecIKE" \
			"subjectAltName = DNS:konnektor.vpn.ktest" ;;
	konnektor-ct)
		set -- "$@" "$tls_ku" "extendedKeyUsage = clientAuth" \
			"subjectAltName = DNS:konnektor.konlan" ;;
	kt-[0-9]*)
		set -- "$@" "$tls_ku" "extendedKeyUsage = serverAuth" \
			"subjectAltName = DNS:$name.konlan" ;;
	vpn-zugd)
		set -- "$@" "$tls_ku" \
			"extendedKeyUsage = serverAuth,clientAuth,ipsecIKE" \
			"subjectAltName = DNS:vpn-zugd.ktest" ;;
	ti-services)
		set -- "$@" "$tls_ku" "extendedKeyUsage = serverAuth" \
			"subjectAltName = DNS:*.ti.ktest,DNS:ti.ktest,DNS:localhost,IP:127.0.0.1,IP:::1" ;;
	ocsp-*)
		set -- "basicConstraints = critical,CA:FALSE" \
			"subjectKeyIdentifier = hash" \
			"authorityKeyIdentifier = keyid:always" \
			"keyUsage = critical,digitalSignature" \
			"extendedKeyUsage = critical,OCSPSigning" \
			"noCheck = ignored" ;;
	*) echo "$PROG: no profile for $name" >&2; return 1 ;;
	esac
	write_ext "$file" "$@"
}

leaf_cn() {
	case $1 in
	konnektor-tls|konnektor-ct) echo "konnektor.konlan" ;;
	konnektor-vpn) echo "konnektor.vpn.ktest" ;;
	kt-*) echo "$1.konlan" ;;
	vpn-zugd) echo "vpn-zugd.ktest" ;;
	ti-services) echo "ti.ktest" ;;
	ocsp-*) echo "VK TEST OCSP Signer $(upper "${1#ocsp-}")-CA" ;;
	esac
}

leaf_ou() {
	case $1 in
	konnektor-tls) echo "Konnektor TLS" ;;
	konnektor-vpn) echo "Konnektor VPN" ;;
	konnektor-ct) echo "Konnektor Kartenterminal-Client" ;;
	kt-*) echo "Kartenterminal" ;;
	vpn-zugd) echo "VPN-Zugangsdienst" ;;
	ti-services) echo "TI-Dienste" ;;
	ocsp-*) echo "OCSP" ;;
	esac
}

subca_ou() {
	case $1 in
	komp-ca) echo "Komponenten-PKI" ;;
	smcb-ca) echo "SMC-B-PKI" ;;
	hba-ca) echo "HBA-PKI" ;;
	egk-ca) echo "eGK-PKI" ;;
	esac
}

# Everything for one algorithm: keys (in parallel), then certificates.
build_alg() {
	alg=$1
	ALG=$(upper "$alg")
	names="root-ca"
	for ca in $SUB_CAS; do
		names="$names $ca ocsp-${ca%-ca}"
	done
	names="$names $LEAVES"

	kpids=
	trap 'kill $kpids 2>/dev/null; exit 143' TERM
	for n in $names; do
		keygen_exec "$TMP/private/$n-$alg.key" "$alg" >>"$LOG" 2>&1 &
		kpids="$kpids $!"
	done
	rc=0
	for p in $kpids; do
		wait "$p" || rc=1
	done
	kpids=
	if [ $rc != 0 ]; then
		printf '%s: openssl genpkey failed:\n' "$PROG" >&2
		tail -n 15 "$LOG" >&2
		return 1
	fi
	for n in $names; do
		chmod 600 "$TMP/private/$n-$alg.key" || return 1
	done

	root="$TMP/root-ca-$alg"
	rootkey="$TMP/private/root-ca-$alg.key"
	ser=$(serial) || return 1
	ossl req -x509 -new -config "$OPENSSL_CNF" -extensions v3_root \
		-key "$rootkey" -set_serial "$ser" -days "$ROOT_DAYS" -sha256 \
		-subj "/C=DE/O=$ORG/CN=VK TEST Root CA $ALG" \
		-out "$root.crt" || return 1
	chmod 644 "$root.crt"

	for ca in $SUB_CAS; do
		ext="$WORK/$ca-$alg.ext"
		write_ext "$ext" "basicConstraints = critical,CA:TRUE,pathlen:0" \
			"keyUsage = critical,keyCertSign,cRLSign" \
			"subjectKeyIdentifier = hash" \
			"authorityKeyIdentifier = keyid:always"
		make_cert "$TMP/$ca-$alg.crt" "$TMP/private/$ca-$alg.key" \
			"/C=DE/O=$ORG/OU=$(subca_ou "$ca")/CN=VK TEST $(upper "$ca") $ALG" \
			"$root.crt" "$rootkey" "$SUBCA_DAYS" "$ext" || return 1
	done

	for ca in $SUB_CAS; do
		set -- "ocsp-${ca%-ca}:$ca"
		if [ "$ca" = komp-ca ]; then
			for l in $LEAVES; do
				set -- "$@" "$l:$ca"
			done
		fi
		for pair in "$@"; do
			name=${pair%%:*}
			ext="$WORK/$name-$alg.ext"
			leaf_ext "$name" "$alg" "$ext" "$ca" || return 1
			make_cert "$TMP/$name-$alg.crt" "$TMP/private/$name-$alg.key" \
				"/C=DE/O=$ORG/OU=$(leaf_ou "$name")/CN=$(leaf_cn "$name")" \
				"$TMP/$ca-$alg.crt" "$TMP/private/$ca-$alg.key" \
				"$LEAF_DAYS" "$ext" || return 1
			cat "$TMP/$name-$alg.crt" "$TMP/$ca-$alg.crt" \
				>"$TMP/$name-$alg-chain.pem" || return 1
		done
	done

	{
		cat "$root.crt"
		for ca in $SUB_CAS; do
			cat "$TMP/$ca-$alg.crt"
		done
	} >"$TMP/ca-bundle-$alg.pem"
}

say "$PROG: generating TEST PKI in $OUT (hostname $HOST)"
for alg in $ALGS; do
	build_alg "$alg" &
	JOBS="$JOBS $!"
done
rc=0
for p in $JOBS; do
	wait "$p" || rc=1
done
JOBS=
[ $rc = 0 ] || die "generation failed (see messages above)"

cat "$TMP/ca-bundle-rsa.pem" "$TMP/ca-bundle-ecc.pem" >"$TMP/ca-bundle.pem" ||
	die "cannot write bundles"
cat "$TMP/root-ca-rsa.crt" "$TMP/root-ca-ecc.crt" >"$TMP/trust-anchors.pem" ||
	die "cannot write trust anchors"
chmod 644 "$TMP"/*.pem "$TMP"/*.crt "$TMP/.gen-test-pki"
rm -rf -- "$WORK"

# The marker is written last; the rename below publishes everything at once.
{
	echo "format=$PKI_FORMAT"
	echo "created=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "hostname=$HOST"
} >"$TMP/.complete" || die "cannot write marker"
chmod 644 "$TMP/.complete"
chmod 755 "$TMP"

OLD=
if [ -e "$OUT" ] || [ -L "$OUT" ]; then
	OLD="$PARENT/.$BASE.old.$$"
	mv -- "$OUT" "$OLD" || die "cannot move old $OUT aside"
fi
if ! mv -- "$TMP" "$OUT"; then
	[ -z "$OLD" ] || mv -- "$OLD" "$OUT"
	die "cannot move new PKI into $OUT"
fi
[ -z "$OLD" ] || rm -rf -- "$OLD"
say "$PROG: done; trust anchors: $OUT/root-ca-rsa.crt $OUT/root-ca-ecc.crt"
exit 0
