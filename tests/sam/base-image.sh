#!/usr/bin/env bash
# Builds a stand-in for AWS's provided.al2023 base image, for `sam local invoke --invoke-image`,
# with no registry pull: a root file system made from Debian packages and `docker import`ed.
#
#   tests/sam/base-image.sh arm64|x86_64     prints the image's tag, mailhook-lambda-base:<arch>
#
# It holds what the function and SAM need and no more: the C library and libgcc_s that the
# bootstrap links to, busybox for the shell SAM's image build runs (`mv`, `chmod`), a CA bundle
# where Amazon Linux keeps it (SSL_CERT_FILE in template.yaml), and /tmp. SAM adds AWS's own
# Runtime Interface Emulator on top. Idempotent: an image built from the same packages and this
# script is kept, and the script returns at once.
set -euo pipefail
arch=${1:?usage: tests/sam/base-image.sh arm64|x86_64}
case "$arch" in
  arm64) deb=arm64 platform=linux/arm64 ;;
  x86_64) deb=amd64 platform=linux/amd64 ;;
  *) echo "unknown architecture $arch: arm64 or x86_64" >&2; exit 2 ;;
esac
tag="mailhook-lambda-base:$arch"
packages=(libc6 libgcc-s1 busybox-static)

if [ "$deb" != "$(dpkg --print-architecture)" ] && ! dpkg --print-foreign-architectures | grep -qx "$deb"; then
  dpkg --add-architecture "$deb"
  apt-get update -qq >/dev/null
fi
versions=$(for p in "${packages[@]}"; do apt-cache policy "$p:$deb" | awk -v p="$p" '/Candidate:/ {print p "=" $2}'; done)
# What the image is made of: the packages' versions and this script.
recipe=$(printf '%s\n%s\n' "$versions" "$(sha256sum "$0" | cut -d' ' -f1)" | sha256sum | cut -c1-16)
if [ "$(docker image inspect --format '{{index .Config.Labels "recipe"}}' "$tag" 2>/dev/null)" = "$recipe" ]; then
  echo "$tag"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download -qq -o APT::Sandbox::User=root $(printf '%s:'"$deb"' ' "${packages[@]}") >/dev/null)
root="$work/root"
mkdir -p "$root"
for f in "$work"/*.deb; do dpkg-deb -x "$f" "$root"; done
mkdir -p "$root/bin" "$root/tmp" "$root/var/task" "$root/var/runtime" "$root/opt" "$root/etc/pki/tls/certs"
chmod 1777 "$root/tmp"
for applet in sh mv chmod cp rm mkdir cat ls env; do ln -sf busybox "$root/bin/$applet"; done
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/pki/tls/certs/ca-bundle.crt"
printf 'root:x:0:0:root:/root:/bin/sh\nsbx_user1051:x:993:990::/home/sbx_user1051:/sbin/nologin\n' >"$root/etc/passwd"
# Built FROM scratch rather than imported, so the image records its architecture, which SAM's
# own build on top of it asks for.
tar -C "$root" -cf "$work/root.tar" .
printf 'FROM scratch\nADD root.tar /\nWORKDIR /var/task\nLABEL recipe=%s\n' "$recipe" >"$work/Dockerfile"
docker build --quiet --platform "$platform" -t "$tag" "$work" >/dev/null 2>"$work/build.log" ||
  { cat "$work/build.log" >&2; exit 1; }
echo "$tag"
