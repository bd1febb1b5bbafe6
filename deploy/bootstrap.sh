#!/usr/bin/env bash
# Kennel's one-command entry points on a fresh Debian bookworm machine (run as root):
#   deploy/bootstrap.sh demo [kennelctl up flags]   install, build, run Kennel's main job
#   deploy/bootstrap.sh test                        install, build, run every test (ctest)
#   deploy/bootstrap.sh deps [--test]               only install what is missing
#   deploy/bootstrap.sh build                       only configure and build (no tests)
#   deploy/bootstrap.sh torch2 [build|test]         the second LibTorch: PyTorch 2.x's CUDA wheel
#                                                   from PyPI in a virtual environment, Kennel
#                                                   built against it in build-torch2 (and tested)
#   deploy/bootstrap.sh torch2 venv                 only make that virtual environment
#   deploy/bootstrap.sh torch2 peers                that venv also gets what the T1/T2 Python
#                                                   peers need (torchvision, Pillow, grpcio), so
#                                                   the benchmarks compare against PyTorch 2.x too
#   deploy/bootstrap.sh containers [prepare]         podman and friends, then deploy/container/e2e.sh:
#                                                   the image and a whole cluster in containers
#                                                   (prepare: only the base image and the build
#                                                   stage's packages)
#   deploy/bootstrap.sh kubernetes                  kubectl if missing, then validate every
#                                                   overlay of deploy/kubernetes
#   deploy/bootstrap.sh fuzz [SECONDS]              build the libFuzzer targets (fuzz/) with clang
#                                                   in build-fuzz and run each SECONDS (default 30)
#                                                   on a copy of its kept corpus; a crash fails
# Environment: BUILD_DIR (default build; build-torch2 for torch2), BUILD_TYPE (default
# Release), JOBS (default nproc); torch2: KENNEL_TORCH_VERSION (default 2.11.0, the GPU
# machines' version), KENNEL_TORCHVISION_VERSION (default 0.26.0, torch 2.11's),
# KENNEL_TORCH_VENV (default: one per torch version in ~/.cache/kennel, which every checkout on
# the machine shares through its .venv-torch2 link, so a fresh clone does not download the
# 4.5 GB again), TORCH2_TESTS (a ctest -R regex; default every test), TORCH2_SKIP (a ctest -E
# regex of tests not to run there).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${BUILD_DIR:-$repo/build}
build_type=${BUILD_TYPE:-Release}
jobs=${JOBS:-$(nproc)}

# What Kennel needs at build and run time (the README says why each is here).
runtime_packages=(
  build-essential cmake ninja-build pkg-config ccache
  libtorch-dev libopenblas0-pthread libpng-dev libjpeg-dev
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev
  libgloo-dev libopencv-dev libabsl-dev libgoogle-glog-dev libgflags-dev
  nlohmann-json3-dev libcli11-dev libcpp-httplib-dev libssl-dev zlib1g-dev libsqlite3-dev
  libjs-chart.js dataset-fashion-mnist
)
# Only the tests and benchmarks need these.
test_packages=(
  googletest libgtest-dev
  python3-torch python3-torchvision python3-pil python3-grpcio python3-protobuf
  chromium chromium-driver python3-selenium
)

# torch2 also needs these (and a CUDA toolkit: the CUDA wheel's CMake config looks for nvcc).
torch2_packages=(python3-venv)
# Containers (deploy/container): podman with what it runs containers with, debootstrap for the
# base image when no registry has it, podman-compose for deploy/compose.yaml.
container_packages=(podman buildah runc debootstrap podman-compose python3)
# The fuzz targets: clang and its libFuzzer and sanitizer runtimes.
fuzz_packages=(clang libclang-rt-14-dev)
torch_version=${KENNEL_TORCH_VERSION:-2.11.0}
torchvision_version=${KENNEL_TORCHVISION_VERSION:-0.26.0}

log() { printf '\033[1m[kennel]\033[0m %s\n' "$*" >&2; }

# install_deps [--test] [--torch2] [--fuzz]: the runtime packages and those of each part named.
install_deps() {
  local wanted=("${runtime_packages[@]}") part
  for part in "$@"; do
    case "$part" in
      --test) wanted+=("${test_packages[@]}") ;;
      --torch2) wanted+=("${torch2_packages[@]}") ;;
      --fuzz) wanted+=("${fuzz_packages[@]}") ;;
      --containers) wanted+=("${container_packages[@]}") ;;
      # kubectl from Debian only where none is installed (another package may provide it).
      --kubernetes) command -v kubectl >/dev/null || wanted+=(kubernetes-client); wanted+=(python3-venv) ;;
      *) log "deps takes --test, --torch2, --fuzz, --containers or --kubernetes, not $part"; exit 2 ;;
    esac
  done
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

# A virtual environment with torch==$torch_version from PyPI (its CUDA build and the nvidia-*
# wheels it depends on, NCCL among them); reused when it already has that version.
torch2_venv() {
  local venv=${KENNEL_TORCH_VENV:-}
  if [[ -z $venv && -d $repo/.venv-torch2 && ! -L $repo/.venv-torch2 ]]; then
    venv=$repo/.venv-torch2  # Made in this checkout by an earlier version of this script.
  elif [[ -z $venv ]]; then
    venv=${XDG_CACHE_HOME:-$HOME/.cache}/kennel/venv-torch-$torch_version
    mkdir -p "$(dirname "$venv")"
    ln -sfn "$venv" "$repo/.venv-torch2"  # Where CMake and bench/ look for it.
  fi
  if [[ ! -x $venv/bin/python ]]; then
    log "creating $venv"
    /usr/bin/python3 -m venv "$venv"
  fi
  local have
  have=$("$venv/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null || true)
  if [[ $have != "$torch_version" ]]; then
    log "installing torch==$torch_version into $venv (the CUDA wheel and its nvidia-* wheels, ~4.5 GB)"
    "$venv/bin/python" -m pip install --disable-pip-version-check -q "torch==$torch_version"
  fi
  local cuda
  for cuda in "${CUDA_HOME:-}" /usr/local/cuda; do
    [[ -n $cuda && -x $cuda/bin/nvcc ]] && break
    cuda=""
  done
  if [[ -z $cuda ]]; then
    log "no CUDA toolkit (nvcc) in \$CUDA_HOME or /usr/local/cuda: the CUDA wheel's CMake config needs one"
    exit 1
  fi
  export CUDA_HOME=$cuda PATH=$cuda/bin:$PATH
  torch2_python=$venv/bin/python
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
  torch2)
    what=${1:-build}
    [[ $what == build || $what == test || $what == peers || $what == venv ]] || {
      log "torch2 takes build, test, peers or venv, not $what"
      exit 2
    }
    if [[ $what == venv ]]; then
      install_deps --torch2
      torch2_venv
      exit 0
    fi
    install_deps --test --torch2
    torch2_venv
    if [[ $what == peers ]]; then
      log "installing the benchmark peers' packages into $(dirname "$(dirname "$torch2_python")")"
      "$torch2_python" -m pip install --disable-pip-version-check -q "torchvision==$torchvision_version" \
        pillow grpcio protobuf
      "$torch2_python" -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__)'
      exit 0
    fi
    build_dir=${BUILD_DIR:-$repo/build-torch2}
    tests=OFF
    [[ $what == test ]] && tests=ON
    CMAKE_ARGS="-DKENNEL_TORCH_PYTHON=$torch2_python -DCMAKE_DISABLE_FIND_PACKAGE_GTest=OFF ${CMAKE_ARGS:-}" \
      build $tests
    if [[ $what == test ]]; then
      log "running tests against torch $torch_version"
      export OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=1
      ctest --test-dir "$build_dir" --output-on-failure -j "$jobs" --timeout 900 ${TORCH2_TESTS:+-R "$TORCH2_TESTS"} \
        ${TORCH2_SKIP:+-E "$TORCH2_SKIP"}
    fi
    ;;
  fuzz)
    seconds=${1:-30}
    install_deps --test --fuzz
    fuzz_dir=${BUILD_DIR:-$repo/build-fuzz}
    log "building the fuzz targets with clang in $fuzz_dir"
    # (A build-fuzz configured from fuzz/ alone, as before fuzz/ joined the main project.)
    if [[ -f $fuzz_dir/CMakeCache.txt ]] && ! grep -q "^CMAKE_HOME_DIRECTORY:INTERNAL=$repo\$" "$fuzz_dir/CMakeCache.txt"; then
      rm -rf "$fuzz_dir"
    fi
    cmake -S "$repo" -B "$fuzz_dir" -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DKENNEL_BUILD_TESTS=OFF -DKENNEL_FUZZ=ON >/dev/null
    cmake --build "$fuzz_dir" -j "$jobs" --target fuzzers
    export LSAN_OPTIONS=suppressions=$repo/fuzz/lsan.supp:print_suppressions=0
    # One target per core at a time (libFuzzer runs on one thread); each keeps its log.
    fuzz_one() {
      local target=$1 name work
      name=$(basename "$target" _fuzzer)
      work=$fuzz_dir/run/$name
      # No -max_len: libFuzzer takes the largest kept input's size (at least 4096 bytes).
      (cd "$work" && "$target" -max_total_time="$seconds" -print_final_stats=1 corpus 2>"$work/log")
      echo $? >"$work/status"
    }
    targets=("$fuzz_dir"/fuzz/*_fuzzer)
    for target in "${targets[@]}"; do
      name=$(basename "$target" _fuzzer)
      work=$fuzz_dir/run/$name
      rm -rf "$work" && mkdir -p "$work/corpus"
      cp "$repo/fuzz/corpus/$name/"* "$work/corpus/"
      while (($(jobs -rp | wc -l) >= jobs)); do wait -n || true; done
      log "fuzzing $name for $seconds s from $(find "$work/corpus" -type f | wc -l) kept inputs"
      fuzz_one "$target" &
    done
    wait
    failed=0
    for target in "${targets[@]}"; do
      name=$(basename "$target" _fuzzer)
      work=$fuzz_dir/run/$name
      if [[ $(cat "$work/status" 2>/dev/null) != 0 ]]; then
        tail -40 "$work/log" >&2
        log "$name crashed: the input is in $work (crash-*, leak-*); add it to fuzz/corpus/$name and a test beside the code"
        failed=1
        continue
      fi
      echo "$name: $(grep -E "stat::number_of_executed_units|stat::new_units_added" "$work/log" | tr '\n' ' ')" >&2
    done
    exit $failed
    ;;
  containers)
    install_deps --containers
    if [[ ${1:-} == prepare ]]; then
      exec "$repo/deploy/container/build.sh" --prepare
    fi
    # The image compiles with this machine's ccache: what the host built is not built again.
    if command -v ccache >/dev/null; then
      KENNEL_BUILD_CCACHE=$(ccache -k cache_dir)
      export KENNEL_BUILD_CCACHE
    fi
    exec "$repo/deploy/container/e2e.sh"
    ;;
  kubernetes)
    install_deps --kubernetes
    exec "$repo/deploy/kubernetes/validate.sh"
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
