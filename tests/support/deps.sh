#!/usr/bin/env bash
# Installs the third-party parts some tests run against, pinned, when they
# are missing; safe to run from several tests at once (one lock).
#
#   tests/support/deps.sh PART...
#
# PART is one of:
#   go       Go toolchain (Debian golang-go 2:1.19)
#   tomcat   Tomcat 10.1 jars (Debian libtomcat10-java) and a JDK's javac
#   express  Express 4.21.2 from the npm registry, as locked in
#            tests/support/backends/express/package-lock.json (npm ci)
#   curl     curl and openssl (Debian)
# Debian packages need root (CI runs as root on Debian 12).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
exec 9>"${TMPDIR:-/tmp}/tollgate-test-deps.lock"
flock 9

apt_updated=
apt_install() { # package=version-glob...
    if [[ -z $apt_updated ]]; then
        apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

for part in "$@"; do
    case $part in
    go)
        command -v go >/dev/null || apt_install 'golang-go=2:1.19*'
        ;;
    tomcat)
        [[ -f /usr/share/java/tomcat10-catalina.jar ]] || apt_install 'libtomcat10-java=10.1.*'
        command -v javac >/dev/null || apt_install 'openjdk-17-jdk-headless=17.*'
        ;;
    express)
        dir=$HERE/backends/express
        if [[ ! -f $dir/node_modules/express/package.json ]] ||
            ! grep -q '"version": "4.21.2"' "$dir/node_modules/express/package.json"; then
            command -v npm >/dev/null || apt_install nodejs npm
            (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
        fi
        ;;
    curl)
        command -v curl >/dev/null || apt_install curl
        command -v openssl >/dev/null || apt_install openssl
        ;;
    *)
        echo "deps.sh: unknown part $part" >&2
        exit 2
        ;;
    esac
done
