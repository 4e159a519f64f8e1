#!/usr/bin/env bash
# tollgate's changes to glommio, re-applied to the published crate.
#
#   check.sh
#       Applies patches/000N-*.diff in order to the published glommio 0.9.0
#       and compares the result with vendor/glommio. Exit 0: identical.
#       Exit 1: prints what differs (or which patch failed to apply exactly).
#
#   check.sh --apply DIR [UPSTREAM]
#       Writes the patched tree to DIR (new or empty). UPSTREAM is another
#       upstream to patch, a .crate file or an unpacked source directory;
#       without it, the published 0.9.0. Every patch is tried; rejected
#       hunks stay in DIR as *.rej and the exit status is 1.
#
# The 0.9.0 crate comes from cargo's download cache when it is there, else
# from static.crates.io, and must match the sha256 below.
set -euo pipefail

VERSION=0.9.0
# sha256 of glommio-0.9.0.crate, the "cksum" of its crates.io index entry.
# (Cargo.lock has no checksum to read it from: a dependency replaced by a
# [patch] path has none.)
SHA256=e1f8bc1fce949d18098dc0a4e861314e40351a0144ebf61e59bdb5254a2273b2
URL=https://static.crates.io/crates/glommio/glommio-$VERSION.crate

PATCHES=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VENDOR=$(dirname "$PATCHES")
# Files in vendor/glommio that are tollgate's, not the crate's.
TOLLGATE_ONLY=(TOLLGATE-PATCH.md patches)

usage() {
    sed -n '2,13s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit 2
}

mode=check
out=
upstream=
case $# in
0) ;;
2 | 3)
    [[ $1 == --apply ]] || usage
    mode=apply
    out=$2
    upstream=${3:-}
    ;;
*) usage ;;
esac

if [[ $mode == apply && -e $out ]] && [[ ! -d $out || -n $(ls -A "$out") ]]; then
    echo "check.sh: $out exists and is not an empty directory" >&2
    exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Unpacks a .crate file (a gzipped tar with one top directory) into $2.
unpack_crate() {
    mkdir "$tmp/unpack"
    tar xzf "$1" -C "$tmp/unpack"
    local top=("$tmp/unpack"/*)
    if [[ ${#top[@]} -ne 1 || ! -d ${top[0]} ]]; then
        echo "check.sh: $1 is not a crate (one top directory expected)" >&2
        exit 1
    fi
    mv "${top[0]}" "$2"
}

# The published $VERSION crate, checked against $SHA256.
pristine_crate() {
    local f
    for f in "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/glommio-"$VERSION".crate; do
        if [[ -f $f ]]; then
            echo "$f"
            return
        fi
    done
    f=$tmp/glommio-$VERSION.crate
    curl -fsSL --retry 3 -o "$f" "$URL"
    echo "$f"
}

tree=$tmp/patched
if [[ -z $upstream ]]; then
    crate=$(pristine_crate)
    sum=$(sha256sum "$crate" | cut -d' ' -f1)
    if [[ $sum != "$SHA256" ]]; then
        echo "check.sh: $crate: sha256 $sum, expected $SHA256" >&2
        exit 1
    fi
    unpack_crate "$crate" "$tree"
elif [[ -d $upstream ]]; then
    cp -a "$upstream/." "$tree"
elif [[ -f $upstream ]]; then
    unpack_crate "$upstream" "$tree"
else
    echo "check.sh: $upstream: no such file or directory" >&2
    exit 1
fi

shopt -s nullglob
patches=("$PATCHES"/[0-9][0-9][0-9][0-9]-*.diff)
if [[ ${#patches[@]} -eq 0 ]]; then
    echo "check.sh: no patches in $PATCHES" >&2
    exit 1
fi

failed=()
for p in "${patches[@]}"; do
    name=$(basename "$p")
    if [[ $mode == check ]]; then
        # Exactly: patch reports a hunk ("Hunk #N ...") only when it does
        # not apply where the diff says (offset, fuzz, failure), so each
        # patch's context must be the tree its predecessors leave.
        if ! log=$(patch -p1 --batch --forward --fuzz=0 --no-backup-if-mismatch \
            -d "$tree" -i "$p" 2>&1) || grep -q '^Hunk #' <<<"$log"; then
            echo "check.sh: $name does not apply exactly to glommio $VERSION" \
                "with the patches before it:" >&2
            echo "$log" >&2
            exit 1
        fi
    else
        echo "== $name"
        patch -p1 --batch --forward --no-backup-if-mismatch -d "$tree" -i "$p" ||
            failed+=("$name")
    fi
done

if [[ $mode == apply ]]; then
    mkdir -p "$out"
    cp -a "$tree/." "$out"
    if [[ ${#failed[@]} -gt 0 ]]; then
        echo "check.sh: rejects from ${failed[*]}; see the *.rej files in $out:" >&2
        (cd "$out" && find . -name '*.rej' | sort) >&2
        exit 1
    fi
    echo "check.sh: ${#patches[@]} patches applied, tree in $out"
    exit 0
fi

# vendor/glommio without the tollgate-only files.
mkdir "$tmp/vendor"
cp -a "$VENDOR/." "$tmp/vendor"
for f in "${TOLLGATE_ONLY[@]}"; do
    rm -rf "${tmp:?}/vendor/$f"
done

if (cd "$tmp" && diff -ruN patched vendor); then
    echo "check.sh: glommio $VERSION + ${#patches[@]} patches = vendor/glommio"
else
    echo "check.sh: vendor/glommio differs from glommio $VERSION +" \
        "${#patches[@]} patches (diff above: patched -> vendor)" >&2
    exit 1
fi
