#!/usr/bin/env bash
# Prepares what the test suite talks to, then runs the given command with the
# variables the tests read:
#
#   scripts/test-services.sh cargo test --workspace
#
# - PostgreSQL: uses ONBOARD_TEST_PG_URL when set; otherwise the machine's server on
#   127.0.0.1:5432 (started when installed but stopped) when user postgres can log in
#   without a password; otherwise a private throwaway cluster under target/ on a free
#   loopback port. Installs PostgreSQL with apt when it is missing. Tests create and
#   drop their own uniquely named databases and never change the server's settings.
# - libfaketime (Debian faketime), preloaded into Mosquitto by the CRL expiry test.
# - Mosquitto: installed with apt when missing; tests start their own processes on
#   free ports (ONBOARD_TEST_MOSQUITTO names the binary).
# - Python tools the tests run as independent checkers (scripts/test-requirements.txt:
#   pkilint, pyzipper, kubernetes-validate, check-jsonschema), in a virtualenv
#   under target/testenv, put first on PATH.
# - kubectl and promtool for the deploy/ checks: the installed ones, or the
#   binaries of Debian's kubernetes-client and prometheus packages unpacked
#   under target/test-services/tools (nothing installed system-wide).
# Only loopback addresses are used.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
state="$root/target/test-services"
mkdir -p "$state"
log() { echo "test-services: $*" >&2; }

sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then $sudo_cmd apt-get update -qq; apt_updated=1; fi
  log "installing $*"
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "$@" >/dev/null
}

# --- packages -----------------------------------------------------------------
"$root/scripts/dev-deps.sh"
pg_bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
missing=()
[ -n "$(pg_bindir)" ] || missing+=(postgresql)
command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || missing+=(mosquitto-clients)
[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] || missing+=(faketime)
command -v sqlite3 >/dev/null 2>&1 || missing+=(sqlite3)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v groff >/dev/null 2>&1 || missing+=(groff-base)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
# The independent EST and OCSP clients (docs/testing.md): strongSwan's pki with its
# curl/openssl backends, and GnuTLS's ocsptool.
command -v pki >/dev/null 2>&1 || missing+=(strongswan-pki)
[ -e /usr/lib/ipsec/plugins/libstrongswan-pem.so ] || missing+=(libstrongswan-standard-plugins)
[ -e /usr/lib/ipsec/plugins/libstrongswan-curl.so ] || missing+=(libstrongswan-extra-plugins)
command -v ocsptool >/dev/null 2>&1 || missing+=(gnutls-bin)
# The console's browser tests: headless Chromium driven over WebDriver.
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
[ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"

bindir="$(pg_bindir)"
export ONBOARD_TEST_PG_BINDIR="$bindir"
export ONBOARD_TEST_MOSQUITTO="$(command -v mosquitto || echo /usr/sbin/mosquitto)"

# --- PostgreSQL ---------------------------------------------------------------
pg_ok() { psql "$1" -Atqc 'select 1' >/dev/null 2>&1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

if [ -z "${ONBOARD_TEST_PG_URL:-}" ]; then
  machine_url="postgres://postgres@127.0.0.1:5432/postgres"
  if ! pg_ok "$machine_url" && command -v pg_lsclusters >/dev/null 2>&1; then
    # Installed but stopped: start it as it is configured (never reconfigured here).
    pg_lsclusters --no-header 2>/dev/null | awk '$4 != "online" {print $1, $2}' | while read -r ver name; do
      log "starting the machine's PostgreSQL cluster $ver/$name"
      $sudo_cmd pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start || true
    done
  fi
  if pg_ok "$machine_url"; then
    export ONBOARD_TEST_PG_URL="$machine_url"
  else
    # A private cluster with trust auth on a free loopback port, reused while alive.
    data="$state/pg"
    url_file="$state/pg.url"
    if [ -f "$url_file" ] && pg_ok "$(cat "$url_file")"; then
      export ONBOARD_TEST_PG_URL="$(cat "$url_file")"
    else
      as_pg=()
      if [ "$(id -u)" -eq 0 ]; then as_pg=(runuser -u postgres --); fi
      rm -rf "$data"; mkdir -p "$data"
      [ "$(id -u)" -eq 0 ] && chown postgres "$data" "$state"
      "${as_pg[@]}" "$bindir/initdb" -D "$data" -A trust -U postgres >/dev/null
      port="$(free_port)"
      log "starting a private PostgreSQL on 127.0.0.1:$port"
      "${as_pg[@]}" "$bindir/pg_ctl" -D "$data" -l "$data/server.log" -w \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $data" start >/dev/null
      echo "postgres://postgres@127.0.0.1:$port/postgres" >"$url_file"
      export ONBOARD_TEST_PG_URL="$(cat "$url_file")"
    fi
  fi
fi
pg_ok "$ONBOARD_TEST_PG_URL" || { log "PostgreSQL at $ONBOARD_TEST_PG_URL does not answer"; exit 1; }

# --- Deployment checkers --------------------------------------------------------
# kubectl (kustomize) and promtool render and check deploy/. When they are not
# installed, the Debian packages' binaries are unpacked under target/ (no
# service is installed or started): kubernetes-client's kubectl, prometheus's
# promtool.
tools="$state/tools"
unpack_tool() { # binary package
  [ -x "$tools/$1" ] && return 0
  if [ -z "$apt_updated" ]; then $sudo_cmd apt-get update -qq; apt_updated=1; fi
  log "unpacking $1 from the Debian package $2 into $tools"
  local tmp; tmp="$(mktemp -d)"
  (cd "$tmp" && apt-get download -qq "$2" >/dev/null 2>&1 && dpkg-deb -x ./*.deb x)
  mkdir -p "$tools"; cp "$tmp/x/usr/bin/$1" "$tools/$1"; rm -rf "$tmp"
}
command -v kubectl >/dev/null 2>&1 || unpack_tool kubectl kubernetes-client
command -v promtool >/dev/null 2>&1 || unpack_tool promtool prometheus
export PATH="$PATH:$tools"

# --- Python checkers ------------------------------------------------------------
venv="$root/target/testenv"
reqs="$root/scripts/test-requirements.txt"
stamp="$venv/.requirements"
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$reqs" "$stamp"; then
  log "installing the Python checkers into $venv ($(grep -v '^#' "$reqs" | xargs))"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$reqs"
  cp "$reqs" "$stamp"
fi
export PATH="$venv/bin:$PATH"

log "PostgreSQL $ONBOARD_TEST_PG_URL, Mosquitto $ONBOARD_TEST_MOSQUITTO"
if [ $# -gt 0 ]; then exec "$@"; fi
