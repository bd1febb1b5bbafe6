# shellcheck shell=bash
# Sourced by the scripts beside it: picks the container engine and makes it work here.
#   KENNEL_ENGINE   podman or docker (default: podman when installed, else docker)
#   KENNEL_BASE     the base image (default debian:bookworm-slim)
# Defines `engine` (podman or docker with what this machine needs) and `compose` (podman-compose
# or docker compose), and `ensure_base_image`.
#
# A normal docker or podman needs nothing. Some machines (ours: ../shared/CONTAINERS.md) need
# podman told to keep no default ulimits, to use runc with cgroupfs, or to store layers with
# vfs; that is found by trying, and said in containers.conf/storage.conf files under
# ~/.cache/kennel/podman that CONTAINERS_CONF and CONTAINERS_STORAGE_CONF point at, so that
# podman-compose's own podman calls get it too.

KENNEL_ENGINE=${KENNEL_ENGINE:-$(command -v podman >/dev/null 2>&1 && echo podman || echo docker)}
KENNEL_BASE=${KENNEL_BASE:-debian:bookworm-slim}
_kennel_container_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
_kennel_podman_dir=${XDG_CACHE_HOME:-$HOME/.cache}/kennel/podman

# What an earlier probe found stays in force (ensure_base_image probes again).
[[ $KENNEL_ENGINE == podman && -f $_kennel_podman_dir/containers.conf ]] &&
  export CONTAINERS_CONF=$_kennel_podman_dir/containers.conf
[[ $KENNEL_ENGINE == podman && -f $_kennel_podman_dir/storage.conf ]] &&
  export CONTAINERS_STORAGE_CONF=$_kennel_podman_dir/storage.conf

say() { printf '\033[1m[kennel container]\033[0m %s\n' "$*" >&2; }

engine() { "$KENNEL_ENGINE" "$@"; }

compose() {
  if [[ $KENNEL_ENGINE == podman ]]; then
    podman-compose "$@"
  else
    docker compose "$@"
  fi
}

# Writes what podman needs here, one setting more each time a probe fails for its reason.
_kennel_podman_conf() {
  local ulimits=$1 runc=$2 vfs=$3
  mkdir -p "$_kennel_podman_dir"
  {
    echo "[containers]"
    [[ $ulimits == 1 ]] && echo "default_ulimits = []"
    echo "[engine]"
    [[ $runc == 1 ]] && printf 'runtime = "runc"\ncgroup_manager = "cgroupfs"\n'
  } >"$_kennel_podman_dir/containers.conf"
  export CONTAINERS_CONF=$_kennel_podman_dir/containers.conf
  if [[ $vfs == 1 ]]; then
    printf '[storage]\ndriver = "vfs"\ngraphroot = "/var/lib/containers/storage-vfs"\nrunroot = "/run/containers/storage-vfs"\n' \
      >"$_kennel_podman_dir/storage.conf"
    export CONTAINERS_STORAGE_CONF=$_kennel_podman_dir/storage.conf
  fi
}

# Makes $KENNEL_BASE from Debian's archive when no engine has it (no registry is needed:
# debootstrap's minbase, without documentation, as the slim image is), then makes podman run
# it on this machine.
ensure_base_image() {
  local ulimits=0 runc=0 vfs=0 err
  [[ $KENNEL_ENGINE == podman ]] && _kennel_podman_conf $ulimits $runc $vfs
  for _ in 1 2 3 4; do
    if ! engine image inspect "$KENNEL_BASE" >/dev/null 2>&1; then
      say "making $KENNEL_BASE from Debian's archive (debootstrap --variant=minbase bookworm, ~1 min)"
      if ! err=$(_kennel_import_base 2>&1); then
        if [[ $KENNEL_ENGINE == podman && $vfs == 0 ]]; then
          vfs=1 && _kennel_podman_conf $ulimits $runc $vfs && continue
        fi
        say "could not make $KENNEL_BASE: $err"
        return 1
      fi
    fi
    [[ $KENNEL_ENGINE == podman ]] || return 0
    if err=$(podman run --rm --network none "$KENNEL_BASE" true 2>&1); then
      return 0
    fi
    case "$err" in
      *rlimit* | *RLIMIT*) ulimits=1 ;;
      *cgroup* | *crun*) runc=1 ;;
      *overlay*) vfs=1 ;;
      *) say "podman cannot run $KENNEL_BASE here: $err"; return 1 ;;
    esac
    _kennel_podman_conf $ulimits $runc $vfs
  done
  say "podman cannot run $KENNEL_BASE here: $err"
  return 1
}

_kennel_import_base() {
  command -v debootstrap >/dev/null || { echo "debootstrap is not installed (apt-get install debootstrap)"; return 1; }
  local root
  root=$(mktemp -d)
  if ! debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >"$root.log" 2>&1; then
    tail -5 "$root.log"
    rm -rf "$root" "$root.log"
    return 1
  fi
  # As the slim image: no documentation, manuals, translations, package lists or downloaded
  # packages, and dpkg told to leave documentation out of what is installed later.
  rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/lib/apt/lists/* \
    "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb "$root.log"
  find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
  printf 'path-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\npath-exclude /usr/share/man/*\npath-exclude /usr/share/info/*\npath-exclude /usr/share/locale/*\npath-include /usr/share/locale/locale.alias\n' \
    >"$root/etc/dpkg/dpkg.cfg.d/slim"
  tar -C "$root" -c . | engine import --change 'CMD ["bash"]' - "$KENNEL_BASE" >/dev/null
  local rc=$?
  rm -rf "$root"
  return $rc
}
