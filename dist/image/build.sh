#!/bin/sh
# make image: an OCI image of tpm2-kms from this machine's Debian 12
# packages and the project's build, with umoci: no base image, no registry,
# no container runtime. The same inputs give the same digest: every time
# stamp is SOURCE_DATE_EPOCH (default: the last commit's), every file root's.
#   build.sh BINARY OUTDIR VERSION REVISION
# Leaves OUTDIR/oci (an OCI layout, tag VERSION) and
# OUTDIR/tpm2-kms-VERSION.oci.tar (the same as an archive, for
# `ctr -n k8s.io images import` or `podman load`).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
bin=$1
out=$2
version=$3
revision=$4
epoch=${SOURCE_DATE_EPOCH:-$(git -C "$here" log -1 --format=%ct 2>/dev/null || echo 0)}
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
name=localhost/tpm2-kms
layout=$out/oci
image=$layout:$version

rm -rf "$out"
mkdir -p "$out"
umoci init --layout "$layout"
umoci new --image "$image"
umoci unpack --image "$image" "$out/bundle"
"$here/rootfs.sh" "$bin" "$out/bundle/rootfs"
find "$out/bundle/rootfs" -exec touch -h -d "@$epoch" {} +
umoci repack --image "$image" --history.created "$created" \
	--history.created_by "dist/image/rootfs.sh tpm2-kms $version" "$out/bundle"
umoci config --image "$image" --no-history --created "$created" \
	--architecture amd64 --os linux \
	--config.user 65532:65532 \
	--config.entrypoint /usr/sbin/tpm2-kms --config.cmd serve \
	--config.workingdir / \
	--config.label "org.opencontainers.image.title=tpm2-kms" \
	--config.label "org.opencontainers.image.version=$version" \
	--config.label "org.opencontainers.image.revision=$revision" \
	--config.label "org.opencontainers.image.created=$created"
umoci gc --layout "$layout"
# containerd names what `ctr images import` loads after this annotation.
sed -i "s|\"org.opencontainers.image.ref.name\":\"$version\"|&,\"io.containerd.image.name\":\"$name:$version\"|" \
	"$layout/index.json"
rm -rf "$out/bundle"
# The layout as one archive, itself reproducible.
tar --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner \
	-C "$layout" -cf "$out/tpm2-kms-$version.oci.tar" .
echo "image: $name:$version, $(cat "$layout/index.json" | sed -n 's/.*"digest":"\(sha256:[0-9a-f]*\)".*/\1/p')"
