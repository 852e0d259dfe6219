#!/usr/bin/env bash
# setup.sh installs what Tandem's integration tests and `make demo` need on a
# Debian/Ubuntu machine: MariaDB server+client, Redis, libfaketime (clock-skew
# tests) and sysbench (load generator), then downloads the Go modules.
#
# It is idempotent: packages already present are left alone and `apt-get
# update` runs only when something is missing. It never starts, stops or
# reconfigures the system's default MariaDB/Redis services; tests start their
# own servers on free loopback ports (internal/testenv).
#
# Not root? Set SUDO (default: sudo when not root), e.g. SUDO="sudo -E".
set -euo pipefail

if [[ ${EUID:-$(id -u)} -eq 0 ]]; then
	SUDO=${SUDO-}
else
	SUDO=${SUDO-sudo}
fi

log() { printf 'setup: %s\n' "$*"; }

# package:probe — the probe is a command name, or a file path (glob) when it
# starts with '/'. dpkg -s is the authority; the probe catches a package that is
# "installed" but whose files are gone.
want=(
	"mariadb-server:/usr/sbin/mariadbd"
	"mariadb-client:mariadb"
	"mariadb-backup:mariadb-backup"
	"redis-server:redis-server"
	"faketime:faketime"
	"libfaketime:/usr/lib/*/faketime/libfaketime.so.1"
	"sysbench:sysbench"
)

present() {
	local pkg=$1 probe=$2
	dpkg -s "$pkg" >/dev/null 2>&1 || return 1
	if [[ $probe == /* ]]; then
		# A glob covers the multiarch directory (x86_64-linux-gnu, ...).
		compgen -G "$probe" >/dev/null
	else
		command -v "$probe" >/dev/null 2>&1
	fi
}

missing=()
for entry in "${want[@]}"; do
	pkg=${entry%%:*}
	probe=${entry#*:}
	if present "$pkg" "$probe"; then
		log "$pkg: already installed"
	else
		missing+=("$pkg")
	fi
done

if ((${#missing[@]} > 0)); then
	if ! command -v apt-get >/dev/null 2>&1; then
		log "missing ${missing[*]} and apt-get is not available; install them by hand" >&2
		exit 1
	fi
	log "installing: ${missing[*]}"
	# Keep the package scripts from starting (or restarting) system services:
	# policy-rc.d answering 101 tells invoke-rc.d "not allowed". A pre-existing
	# policy file is left untouched.
	policy=/usr/sbin/policy-rc.d
	own_policy=0
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
		$SUDO chmod 0755 "$policy"
		own_policy=1
	fi
	cleanup() { if ((own_policy)); then $SUDO rm -f "$policy"; fi; }
	trap cleanup EXIT
	export DEBIAN_FRONTEND=noninteractive
	log "running apt-get update"
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
	cleanup
	trap - EXIT
	for entry in "${want[@]}"; do
		pkg=${entry%%:*}
		probe=${entry#*:}
		if ! present "$pkg" "$probe"; then
			log "$pkg: still missing after apt-get install" >&2
			exit 1
		fi
	done
	log "installed: ${missing[*]}"
else
	log "all system packages present; apt-get not run"
fi

if command -v go >/dev/null 2>&1; then
	root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
	log "go mod download in $root"
	(cd "$root" && go mod download)
else
	log "go not found in PATH; skipping go mod download" >&2
fi

log "versions:"
/usr/sbin/mariadbd --version | sed 's/^/setup:   /'
redis-server --version | sed 's/^/setup:   /'
sysbench --version | sed 's/^/setup:   /'
lib=$(compgen -G "/usr/lib/*/faketime/libfaketime.so.1" | head -n1)
log "  libfaketime: $lib"
log "done"
