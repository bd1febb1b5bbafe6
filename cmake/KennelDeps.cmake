# Third-party dependencies, all from Debian packages (see README "Dependencies").
find_package(Threads REQUIRED)
find_package(absl CONFIG REQUIRED)
find_package(Protobuf CONFIG QUIET)
if(NOT Protobuf_FOUND)
  find_package(Protobuf REQUIRED)
endif()
find_package(gRPC CONFIG REQUIRED)
find_package(Torch CONFIG REQUIRED)
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

find_program(KENNEL_PROTOC protoc REQUIRED)
find_program(KENNEL_GRPC_CPP_PLUGIN grpc_cpp_plugin REQUIRED)

# Debian's /usr/bin/python3 carries python3-torch / torchvision; another python3 first on
# PATH may not. Tests and benchmarks only.
set(KENNEL_PYTHON /usr/bin/python3 CACHE FILEPATH "Python with torch/torchvision for tests")
