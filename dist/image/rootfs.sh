#!/bin/sh
# Stages the image's root file system in DIR: tpm2-kms (stripped), exactly
# the shared libraries it and the tss2 TCTI modules it may load need, taken
# from this Debian 12 machine, the modules themselves (device, for
# /dev/tpmrm0, and swtpm), and /etc/passwd and /etc/group naming the default
# non-root user. No shell, no CA certificates, nothing else. Not tabrmd: the
# kernel's resource manager (/dev/tpmrm0) does its work, and its module
# would bring D-Bus and GLib.
#   rootfs.sh BINARY DIR
# make image and the Containerfile both use it, so they hold the same files.
set -eu
bin=$1
root=$2
multiarch=x86_64-linux-gnu
tcti_dir=/usr/lib/$multiarch

rm -rf "$root"
mkdir -p "$root/usr/lib/$multiarch" "$root/usr/lib64" "$root/usr/sbin" "$root/etc"
# Debian 12's merged /usr, as the binary's interpreter path expects it.
ln -s usr/lib "$root/lib"
ln -s usr/lib64 "$root/lib64"

# A path as it is spelled through the merged /usr.
canonical() {
	case $1 in
	/lib/*) echo "/usr$1" ;;
	/lib64/*) echo "/usr$1" ;;
	*) echo "$1" ;;
	esac
}

# Copies a file into the root under the same path, with the symbolic links
# leading to it (libfoo.so.0 -> libfoo.so.0.0.0).
copy_path() {
	p=$(canonical "$1")
	while [ -L "$p" ]; do
		t=$(readlink "$p")
		mkdir -p "$root$(dirname "$p")"
		ln -sfn "$t" "$root$p"
		case $t in
		/*) p=$(canonical "$t") ;;
		*) p=$(dirname "$p")/$t ;;
		esac
	done
	mkdir -p "$root$(dirname "$p")"
	[ -e "$root$p" ] || cp "$p" "$root$p"
}

# What the dynamic loader will open for an ELF file.
needs() {
	ldd "$1" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'
}

install -m 0755 "$bin" "$root/usr/sbin/tpm2-kms"
strip --strip-unneeded "$root/usr/sbin/tpm2-kms"
elves=$bin
for m in device swtpm; do
	so=$tcti_dir/libtss2-tcti-$m.so.0
	if ! [ -e "$so" ]; then
		echo "rootfs: $so is missing (install libtss2-tcti-${m}0)" >&2
		exit 1
	fi
	copy_path "$so"
	elves="$elves $so"
done
for e in $elves; do
	for lib in $(needs "$e"); do
		copy_path "$lib"
	done
done

cat >"$root/etc/passwd" <<PASSWD
root:x:0:0:root:/:/nonexistent
tpm2-kms:x:65532:65532:tpm2-kms:/nonexistent:/nonexistent
PASSWD
cat >"$root/etc/group" <<GROUP
root:x:0:
tpm2-kms:x:65532:
GROUP
chmod 0644 "$root/etc/passwd" "$root/etc/group"
