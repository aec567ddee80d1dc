#!/usr/bin/env bash
# Generates the test TLS material in this folder: a CA, a server certificate for localhost and
# 127.0.0.1, and a client certificate for mutual TLS. Test-only keys: never use them elsewhere.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
days=3650

openssl req -x509 -newkey rsa:2048 -nodes -days "$days" -subj "/CN=natty test CA" \
  -keyout ca-key.pem -out ca.pem \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"

issue() { # name, subject, extensions
  openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$1-key.pem" -out "$1.csr"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days "$days" \
    -out "$1-cert.pem" -extfile <(printf '%s\n' "$3")
  rm -f "$1.csr"
}

issue server "/CN=localhost" "subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth
keyUsage=critical,digitalSignature,keyEncipherment"
issue client "/CN=natty-client" "extendedKeyUsage=clientAuth
keyUsage=critical,digitalSignature,keyEncipherment"
rm -f ca.srl
