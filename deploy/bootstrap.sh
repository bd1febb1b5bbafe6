#!/usr/bin/env bash
# Kennel's one-command entry points on a fresh Debian bookworm machine (run as root):
#   deploy/bootstrap.sh demo [kennelctl up flags]   install, build, run Kennel's main job
#   deploy/bootstrap.sh test                        install, build, run every test (ctest)
#   deploy/bootstrap.sh deps [--test]               only install what is missing
#   deploy/bootstrap.sh build                       only configure and build (no tests)
# Environment: BUILD_DIR (default build), BUILD_TYPE (default Release), JOBS (default nproc).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${BUILD_DIR:-$repo/build}
build_type=${BUILD_TYPE:-Release}
jobs=${JOBS:-$(nproc)}

# What Kennel needs at build and run time (the README says why each is here).
runtime_packages=(
  build-essential cmake ninja-build pkg-config ccache
  libtorch-dev libopenblas0-pthread libpng-dev
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev
  libgloo-dev libopencv-dev libabsl-dev libgoogle-glog-dev libgflags-dev
  nlohmann-json3-dev libcli11-dev libcpp-httplib-dev libssl-dev zlib1g-dev libsqlite3-dev
  dataset-fashion-mnist
)
# Only the tests and benchmarks need these.
test_packages=(
  googletest libgtest-dev
  python3-torch python3-torchvision python3-pil python3-grpcio python3-protobuf
)

log() { printf '\033[1m[kennel]\033[0m %s\n' "$*" >&2; }

install_deps() {
  local wanted=("${runtime_packages[@]}")
  [[ ${1:-} == --test ]] && wanted+=("${test_packages[@]}")
  local missing=()
  for p in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]} == 0)); then
    log "all ${#wanted[@]} Debian packages already installed"
    return
  fi
  if [[ $(id -u) != 0 ]]; then
    log "missing packages: ${missing[*]}; run as root (or install them with apt-get) and retry"
    exit 1
  fi
  log "installing ${#missing[@]} missing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # With recommends: a fresh machine then gets what these packages expect beside them (as the
  # machine this was tested on did).
  apt-get install -y -q "${missing[@]}"
}

# build TESTS [TARGET]: configure (tests ON or OFF) and build TARGET (default: everything).
# Without tests CMake never looks for GoogleTest, so `demo` works before `deps --test`.
build() {
  local tests=$1 target=${2:-}
  log "configuring ($build_type, tests $tests) in $build_dir"
  # shellcheck disable=SC2086
  cmake -S "$repo" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE="$build_type" -DKENNEL_BUILD_TESTS="$tests" \
    ${CMAKE_ARGS:-}
  log "building ${target:-everything} with $jobs jobs"
  cmake --build "$build_dir" -j "$jobs" ${target:+--target "$target"}
}

cmd=${1:-}
[[ $# -gt 0 ]] && shift
case "$cmd" in
  deps) install_deps "$@" ;;
  build) install_deps; build OFF ;;
  test)
    install_deps --test
    CMAKE_ARGS="-DCMAKE_DISABLE_FIND_PACKAGE_GTest=OFF ${CMAKE_ARGS:-}" build ON
    log "running tests"
    # Two torch threads per test process and no competing OpenBLAS pool (BENCHMARKS.md).
    export OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=1
    ctest --test-dir "$build_dir" --output-on-failure -j "$jobs" --timeout 900
    ;;
  demo)
    install_deps
    build OFF kennelctl  # kennelctl and the service binaries it starts.
    export OPENBLAS_NUM_THREADS=1
    # A whole local cluster: train on Fashion-MNIST, deploy, classify the test set.
    exec "$build_dir/cli/kennelctl" up --data-dir "${KENNEL_DEMO_DIR:-$build_dir/kennel-demo}" "$@"
    ;;
  *)
    sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
