#!/bin/sh
# dev-certs.sh: a development CA and the certificates of the compose stack,
# in deploy/certs/ (gitignored). FOR DEVELOPMENT ONLY: the CA key sits next
# to the certificates it signs.
#
#   scripts/dev-certs.sh [--force] [DIR]      (make certs)
#
# Files (ECDSA P-256 keys, PEM; keys 0600, certificates 0644):
#   ca.pem, ca.key                 the development CA
#   nats-server.pem/.key           nats-server (server auth; nats, localhost, 127.0.0.1)
#   rotatord-server.pem/.key       rotatord's HTTPS listener (server auth; rotatord, localhost, 127.0.0.1)
#   rotatord-client.pem/.key       rotatord's connection to NATS (client auth)
#   resolver.pem/.key              nats-server's calls to rotatord's resolver (client auth)
#   postgres.pem/.key              PostgreSQL (server auth; postgres, localhost, 127.0.0.1)
#   admin.pem/.key                 an operator calling the admin API (client auth; its own
#                                  identity, URI spiffe://rotatord.dev/admin, the one
#                                  ROTATORD_TLS_CLIENT_ALLOWED lets in)
#   agent-kate.pem/.key            an example agent connecting to NATS (client auth)
#
# Existing files that still verify are kept (a running stack keeps working);
# --force makes a new CA and everything again. Every certificate is checked with
# `openssl verify` against the CA, for its purpose, at the end.
set -eu

force=0
if [ "${1:-}" = "--force" ]; then
	force=1
	shift
fi
dir=${1:-deploy/certs}
openssl=${OPENSSL:-openssl}
ca_days=3650
leaf_days=825

command -v "$openssl" >/dev/null 2>&1 || {
	echo "dev-certs: openssl not found (set OPENSSL=/path/to/openssl)" >&2
	exit 1
}
umask 077
mkdir -p "$dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [ "$force" = 1 ]; then
	rm -f "$dir"/*.pem "$dir"/*.key "$dir"/*.srl
fi

newkey() {
	"$openssl" genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
	chmod 600 "$1"
}

if [ ! -s "$dir/ca.pem" ] || [ ! -s "$dir/ca.key" ]; then
	newkey "$dir/ca.key"
	"$openssl" req -x509 -new -key "$dir/ca.key" -sha256 -days "$ca_days" \
		-subj "/O=rotatord dev/CN=rotatord development CA" \
		-addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
		-addext "keyUsage=critical,keyCertSign,cRLSign" \
		-addext "subjectKeyIdentifier=hash" \
		-out "$dir/ca.pem"
	chmod 644 "$dir/ca.pem"
	echo "dev-certs: new CA $dir/ca.pem" >&2
fi

# has_names FILE SAN: whether the certificate carries every DNS: and URI:
# entry of SAN (a comma-separated subjectAltName value).
has_names() {
	names=$("$openssl" x509 -in "$1" -noout -ext subjectAltName 2>/dev/null || true)
	old_ifs=$IFS
	IFS=,
	for want in $2; do
		case $want in
		DNS:* | URI:*)
			case $names in
			*"$want"*) ;;
			*)
				IFS=$old_ifs
				return 1
				;;
			esac
			;;
		esac
	done
	IFS=$old_ifs
	return 0
}

# issue NAME CN USAGE [SAN]: USAGE is serverAuth or clientAuth.
issue() {
	name=$1 cn=$2 usage=$3 san=${4:-}
	# Keep a certificate that exists, still verifies against the CA (a new
	# CA means new certificates) and carries the DNS and URI names asked for
	# (an older admin.pem has no identity of its own yet).
	if [ -s "$dir/$name.pem" ] && [ -s "$dir/$name.key" ] &&
		"$openssl" verify -CAfile "$dir/ca.pem" "$dir/$name.pem" >/dev/null 2>&1 &&
		has_names "$dir/$name.pem" "$san"; then
		return
	fi
	newkey "$dir/$name.key"
	{
		echo "basicConstraints=critical,CA:FALSE"
		echo "keyUsage=critical,digitalSignature"
		echo "extendedKeyUsage=$usage"
		echo "subjectKeyIdentifier=hash"
		echo "authorityKeyIdentifier=keyid"
		if [ -n "$san" ]; then echo "subjectAltName=$san"; fi
	} >"$tmp/$name.ext"
	"$openssl" req -new -key "$dir/$name.key" -subj "/O=rotatord dev/CN=$cn" -out "$tmp/$name.csr"
	"$openssl" x509 -req -in "$tmp/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
		-set_serial "0x$("$openssl" rand -hex 16)" -days "$leaf_days" -sha256 \
		-extfile "$tmp/$name.ext" -out "$dir/$name.pem" 2>/dev/null
	chmod 644 "$dir/$name.pem"
	echo "dev-certs: issued $dir/$name.pem ($cn, $usage)" >&2
}

local_sans="DNS:localhost,IP:127.0.0.1,IP:::1"
issue nats-server nats serverAuth "DNS:nats,$local_sans"
issue rotatord-server rotatord serverAuth "DNS:rotatord,$local_sans"
issue rotatord-client rotatord clientAuth
issue resolver nats-resolver clientAuth
issue postgres postgres serverAuth "DNS:postgres,$local_sans"
issue admin admin clientAuth "URI:spiffe://rotatord.dev/admin"
issue agent-kate agent-kate clientAuth

for name in nats-server rotatord-server postgres; do
	"$openssl" verify -CAfile "$dir/ca.pem" -purpose sslserver "$dir/$name.pem" >/dev/null
done
for name in rotatord-client resolver admin agent-kate; do
	"$openssl" verify -CAfile "$dir/ca.pem" -purpose sslclient "$dir/$name.pem" >/dev/null
done
echo "dev-certs: every certificate in $dir verifies against $dir/ca.pem" >&2
