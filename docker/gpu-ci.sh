#!/usr/bin/env bash
# Build trtcal's GPU image(s) and run the GPU-marked tests in them (`pytest -m gpu`).
#
#   docker/gpu-ci.sh            # TensorRT 10.x: real calibrator, cache cross-check, INT8/FP16/Q/DQ engines
#   docker/gpu-ci.sh trt11      # TensorRT 11.x: Q/DQ and FP32 engines, the implicit-INT8 refusal
#   docker/gpu-ci.sh all        # both
#
# Needs Docker with BuildKit and the NVIDIA Container Toolkit (`--gpus all`). Base images can be
# overridden: TRT10_IMAGE=nvcr.io/nvidia/tensorrt:<tag> docker/gpu-ci.sh. Extra arguments after
# the target go to pytest, e.g. `docker/gpu-ci.sh trt10 -k qdq`.
set -euo pipefail

cd "$(dirname "$0")/.."
target="${1:-trt10}"
shift || true
case "$target" in
  trt10|trt11) targets=("$target") ;;
  all) targets=(trt10 trt11) ;;
  *) echo "usage: $0 [trt10|trt11|all] [pytest args...]" >&2; exit 2 ;;
esac

build_args=()
[[ -n "${TRT10_IMAGE:-}" ]] && build_args+=(--build-arg "TRT10_IMAGE=${TRT10_IMAGE}")
[[ -n "${TRT11_IMAGE:-}" ]] && build_args+=(--build-arg "TRT11_IMAGE=${TRT11_IMAGE}")

export DOCKER_BUILDKIT=1
for t in "${targets[@]}"; do
  image="trtcal-gpu:${t}"
  echo "== building ${image}"
  docker build -f docker/Dockerfile --target "${t}" ${build_args[@]+"${build_args[@]}"} -t "${image}" .
  echo "== running the GPU tests in ${image}"
  # TRTCAL_REQUIRE_GPU turns "no GPU / no TensorRT" from a skip into a failure: in CI, a GPU
  # path that silently skipped would be a green run that tested nothing.
  docker run --rm --gpus all -e TRTCAL_REQUIRE_GPU=1 "${image}" \
    python3 -m pytest -m gpu -rs -q -p no:cacheprovider "$@"
done
