# Third-party dependencies, all from Debian packages (see README "Dependencies").
find_package(Threads REQUIRED)
find_package(absl CONFIG REQUIRED)
find_package(Protobuf CONFIG QUIET)
if(NOT Protobuf_FOUND)
  find_package(Protobuf REQUIRED)
endif()
find_package(gRPC CONFIG REQUIRED)
# Looked up before LibTorch: PyTorch's wheel carries an older protoc of its own in torch/bin.
find_program(KENNEL_PROTOC protoc REQUIRED)
find_program(KENNEL_GRPC_CPP_PLUGIN grpc_cpp_plugin REQUIRED)

# LibTorch comes two ways (README "Two LibTorch builds"): Debian's libtorch-dev (1.13, CPU) by
# default, or PyTorch 2.x from PyPI (the CUDA wheel) when KENNEL_TORCH_PYTHON names a Python
# that imports it (deploy/bootstrap.sh torch2 makes such a virtual environment).
set(KENNEL_TORCH_PYTHON "" CACHE FILEPATH
    "Python whose torch package provides LibTorch (PyTorch 2.x from PyPI); empty: the system LibTorch")
if(KENNEL_TORCH_PYTHON)
  execute_process(
    COMMAND "${KENNEL_TORCH_PYTHON}" -c
            "import os, torch; print(os.path.dirname(torch.__file__)); print(torch.__version__); print(torch.version.cuda or '')"
    OUTPUT_VARIABLE _kennel_torch OUTPUT_STRIP_TRAILING_WHITESPACE
    ERROR_VARIABLE _kennel_torch_error RESULT_VARIABLE _kennel_torch_rc)
  if(NOT _kennel_torch_rc EQUAL 0)
    message(FATAL_ERROR "KENNEL_TORCH_PYTHON=${KENNEL_TORCH_PYTHON} cannot import torch: ${_kennel_torch_error}")
  endif()
  string(REPLACE "\n" ";" _kennel_torch "${_kennel_torch}")
  list(GET _kennel_torch 0 KENNEL_TORCH_DIR)
  list(GET _kennel_torch 1 KENNEL_TORCH_VERSION)
  get_filename_component(KENNEL_TORCH_SITE "${KENNEL_TORCH_DIR}" DIRECTORY)
  message(STATUS "LibTorch: PyTorch ${KENNEL_TORCH_VERSION} from ${KENNEL_TORCH_DIR}")
  # The package's own lib/ before any system LibTorch: Torch's config looks its libraries up
  # with find_library, which would otherwise take Debian's /usr/lib libtorch.so.
  list(PREPEND CMAKE_PREFIX_PATH "${KENNEL_TORCH_DIR}" "${KENNEL_TORCH_DIR}/share/cmake")
  # NCCL: the nvidia-nccl wheel torch was built against, else a toolkit's (NCCL_ROOT).
  if(EXISTS "${KENNEL_TORCH_SITE}/nvidia/nccl/include/nccl.h" AND NOT DEFINED ENV{NCCL_ROOT})
    set(ENV{NCCL_ROOT} "${KENNEL_TORCH_SITE}/nvidia/nccl")
  endif()
  # Kennel has no CUDA sources; a fixed list keeps Torch's config from probing for a GPU (there
  # is none on build machines). Ampere and Hopper; set TORCH_CUDA_ARCH_LIST to change.
  if(NOT DEFINED TORCH_CUDA_ARCH_LIST AND NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST})
    set(TORCH_CUDA_ARCH_LIST "8.0;9.0")
  endif()
endif()
find_package(Torch CONFIG REQUIRED)
if(NOT KENNEL_TORCH_PYTHON)
  set(KENNEL_TORCH_VERSION "${Torch_VERSION}")
endif()
# PyTorch's wheel ships its own (older) protobuf headers in <torch>/include/google, which
# Torch's include directories would put ahead of the system's: Kennel's generated code must
# see the protobuf it links. An include folder of our own, searched first, maps google/ back.
list(GET TORCH_INCLUDE_DIRS 0 _kennel_torch_include)
if(EXISTS "${_kennel_torch_include}/google/protobuf")
  get_target_property(_kennel_pb_include protobuf::libprotobuf INTERFACE_INCLUDE_DIRECTORIES)
  list(GET _kennel_pb_include 0 _kennel_pb_include)
  if(NOT _kennel_pb_include OR NOT EXISTS "${_kennel_pb_include}/google/protobuf")
    set(_kennel_pb_include /usr/include)
  endif()
endif()
# (Debian's LibTorch lives in /usr/include beside the system protobuf: nothing to do.)
if(_kennel_pb_include AND NOT _kennel_pb_include STREQUAL _kennel_torch_include)
  set(KENNEL_OVERLAY_INCLUDE "${PROJECT_BINARY_DIR}/overlay-include")
  file(MAKE_DIRECTORY "${KENNEL_OVERLAY_INCLUDE}")
  file(CREATE_LINK "${_kennel_pb_include}/google" "${KENNEL_OVERLAY_INCLUDE}/google" SYMBOLIC)
  # Only where Torch's include directories are (core/CMakeLists.txt: kennel_ml's users).
  message(STATUS "protobuf headers: ${_kennel_pb_include}/google (ahead of ${_kennel_torch_include}/google)")
endif()
find_package(OpenCV REQUIRED COMPONENTS core imgproc imgcodecs)
find_package(nlohmann_json CONFIG REQUIRED)
find_package(CLI11 CONFIG REQUIRED)
find_package(ZLIB REQUIRED)
find_package(OpenSSL REQUIRED COMPONENTS Crypto)
find_package(glog CONFIG QUIET)
if(NOT glog_FOUND)
  find_library(GLOG_LIBRARY glog REQUIRED)
  add_library(glog::glog UNKNOWN IMPORTED)
  set_target_properties(glog::glog PROPERTIES IMPORTED_LOCATION ${GLOG_LIBRARY})
endif()
find_package(PNG REQUIRED)
# Only the tests need GoogleTest: a build without tests (the README's first command on a fresh
# machine) must not look for it.
if(KENNEL_BUILD_TESTS)
  find_package(GTest CONFIG QUIET)
  if(NOT GTest_FOUND)
    find_package(GTest)
  endif()
  if(NOT GTest_FOUND)
    message(FATAL_ERROR "KENNEL_BUILD_TESTS is ON but GoogleTest was not found: install "
                        "googletest and libgtest-dev (deploy/bootstrap.sh deps --test) or configure "
                        "with -DKENNEL_BUILD_TESTS=OFF")
  endif()
endif()


# Debian's /usr/bin/python3 carries python3-torch / torchvision; another python3 first on
# PATH may not. Tests and benchmarks only.
set(KENNEL_PYTHON /usr/bin/python3 CACHE FILEPATH "Python with torch/torchvision for tests")
