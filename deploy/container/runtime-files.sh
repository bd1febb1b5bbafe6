#!/usr/bin/env bash
# Run in the image's build stage: copies Kennel's binaries and the shared libraries they load
# into OUT, laid out as in the image, so that the runtime stage holds what the binaries need
# and nothing else (no compilers, no -dev packages, none of OpenCV's unused modules).
#   runtime-files.sh BASE_PACKAGES OUT BINARY...
# BASE_PACKAGES lists the base image's own packages (dpkg-query before anything was
# installed): libraries they own are in the runtime stage already and are not copied.
# Each library is copied at the path the dynamic linker found it (through alternatives such as
# libblas.so.3, whose target is OpenBLAS here), with its contents.
set -euo pipefail
base_packages=$1 out=$2
shift 2
mkdir -p "$out/usr/local/bin"
declare -A seen=()
# The package that owns a library: dpkg records some under /lib and some under /usr/lib (the
# two are one folder here), and the name the linker used may be a link to the file.
owner_of() {
  local path real candidate
  real=$(readlink -f "$1")
  for path in "$1" "$real"; do
    for candidate in "$path" "${path#/usr}" "/usr$path"; do
      dpkg-query -S "$candidate" 2>/dev/null | head -1 | cut -d: -f1 && return 0
    done
  done
  return 0
}
for binary in "$@"; do
  cp "$binary" "$out/usr/local/bin/"
  while read -r lib; do
    [[ -n ${seen[$lib]:-} ]] && continue
    seen[$lib]=1
    owner=$(owner_of "$lib")
    if [[ -n $owner ]] && grep -qx "$owner" "$base_packages"; then
      continue  # The base image has it.
    fi
    # The real folder (/lib is a link to /usr/lib here), the name the linker asked for.
    dir=$(readlink -f "$(dirname "$lib")")
    mkdir -p "$out$dir"
    cp -L "$lib" "$out$dir/$(basename "$lib")"
  done < <(ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// {print $3}')
done
# Folders some packages add to the linker's search (ldconfig runs in the runtime stage).
mkdir -p "$out/etc/ld.so.conf.d"
cp /etc/ld.so.conf.d/*.conf "$out/etc/ld.so.conf.d/"
# A binary that would not start in the runtime stage fails the build here instead.
missing=$(for binary in "$@"; do ldd "$binary" | grep "not found" || true; done)
if [[ -n $missing ]]; then
  echo "unresolved libraries: $missing" >&2
  exit 1
fi
echo "runtime files: $(du -sh "$out" | cut -f1) in $(find "$out" -type f | wc -l) files" >&2
