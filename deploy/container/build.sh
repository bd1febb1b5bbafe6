#!/usr/bin/env bash
# Builds Kennel's images with docker or podman (deploy/container/engine.sh picks and, where
# needed, prepares podman), making the Debian base image from Debian's archive first when no
# registry can provide it.
#   deploy/container/build.sh [kennel|kennel-cuda]...   (default: kennel)
#   deploy/container/build.sh --prepare   only the base image and the build stage's packages
#                                         (network-bound: CI runs it beside other work)
# Environment: KENNEL_ENGINE, KENNEL_BASE (engine.sh); KENNEL_IMAGE_TAG (default: latest);
# kennel-cuda with podman: KENNEL_TORCH_VENV (default: deploy/bootstrap.sh torch2's) and
# CUDA_HOME (default /usr/local/cuda) are mounted into its build stage;
# KENNEL_BUILD_CCACHE: a ccache folder to compile with (podman only; the checkout's own path is
# used for the sources, so objects the host compiled are reused).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=deploy/container/engine.sh
source "$repo/deploy/container/engine.sh"
ensure_base_image
tag=${KENNEL_IMAGE_TAG:-latest}
if [[ ${1:-} == --prepare ]]; then
  engine build -f "$repo/deploy/container/Containerfile" --build-arg "BASE=$KENNEL_BASE" --target build-deps \
    -t "localhost/kennel-build-deps:$tag" "$repo"
  exit 0
fi
targets=("$@")
((${#targets[@]})) || targets=(kennel)
for target in "${targets[@]}"; do
  [[ $target == kennel || $target == kennel-cuda ]] || { say "no image named $target (kennel, kennel-cuda)"; exit 2; }
  args=(-f "$repo/deploy/container/Containerfile" --build-arg "BASE=$KENNEL_BASE")
  if [[ -n ${KENNEL_BUILD_CCACHE:-} && $KENNEL_ENGINE == podman ]]; then
    mkdir -p "$KENNEL_BUILD_CCACHE"
    args+=(-v "$KENNEL_BUILD_CCACHE:/ccache-host:z" --build-arg "SRC=$repo" --build-arg CCACHE=/ccache-host)
  fi
  if [[ $target == kennel-cuda && $KENNEL_ENGINE == podman ]]; then
    # The host's PyTorch 2.x and CUDA toolkit, as the torch2 build uses them (no 4.5 GB
    # download again; the wheel's CMake files need a toolkit to configure).
    venv=${KENNEL_TORCH_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/kennel/venv-torch-${KENNEL_TORCH_VERSION:-2.11.0}}
    [[ -x $venv/bin/python ]] || { say "no PyTorch 2.x in $venv: run deploy/bootstrap.sh torch2 venv"; exit 1; }
    cuda=${CUDA_HOME:-/usr/local/cuda}
    [[ -x $cuda/bin/nvcc ]] || { say "no CUDA toolkit (nvcc) in $cuda: set CUDA_HOME"; exit 1; }
    args+=(-v "$(readlink -f "$venv"):/opt/torch:ro" -v "$(readlink -f "$cuda"):/usr/local/cuda:ro")
  fi
  say "building $target:$tag with $KENNEL_ENGINE"
  start=$SECONDS
  # The build stage keeps a name, so that its package layer stays cached for the next build
  # and only the stages an older build left unnamed are pruned (they hold gigabytes).
  build_stage=build
  [[ $target == kennel-cuda ]] && build_stage=build-cuda
  engine build "${args[@]}" --target "$build_stage" -t "localhost/kennel-$build_stage:$tag" "$repo"
  engine build "${args[@]}" --target "$target" -t "localhost/$target:$tag" "$repo"
  engine image prune -f >/dev/null
  size=$(engine image inspect "localhost/$target:$tag" --format '{{.Size}}')
  say "$target:$tag built in $((SECONDS - start)) s: $((size / 1000000)) MB"
done
