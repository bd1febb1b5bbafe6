# Shared compile settings for Kennel's own targets.
set(KENNEL_WARNINGS -Wall -Wextra -Wno-unused-parameter)
set(KENNEL_SANITIZER_FLAGS "")
if(KENNEL_FUZZ)
  # Coverage for libFuzzer in every Kennel library; the fuzz targets add -fsanitize=fuzzer at
  # link time. (vptr checks need type information Debian's LibTorch does not carry.)
  set(KENNEL_SANITIZER_FLAGS -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize=vptr
      -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
elseif(KENNEL_ASAN)
  set(KENNEL_SANITIZER_FLAGS -fsanitize=address,undefined -fno-omit-frame-pointer)
elseif(KENNEL_TSAN)
  set(KENNEL_SANITIZER_FLAGS -fsanitize=thread -fno-omit-frame-pointer)
endif()

# kennel_target_defaults(target): warnings and sanitizers for a Kennel target.
function(kennel_target_defaults target)
  target_compile_options(${target} PRIVATE ${KENNEL_WARNINGS} ${KENNEL_SANITIZER_FLAGS})
  if(KENNEL_SANITIZER_FLAGS)
    target_link_options(${target} PRIVATE ${KENNEL_SANITIZER_FLAGS})
  endif()
endfunction()

# Torch headers are slow to parse (~15-20 s a TU on 2 cores): targets whose sources include
# them reuse kennel_ml's precompiled <torch/torch.h>.
function(kennel_use_torch_pch target)
  target_precompile_headers(${target} REUSE_FROM kennel_ml)
endfunction()

# kennel_test(name SOURCES ... LIBS ... [PROPERTIES ...]): a GoogleTest binary (reusing the
# torch PCH) registered with ctest per test case, run from the build folder. (ctest keeps only
# the first of several ENVIRONMENT entries passed this way: tests read at most one variable.)
function(kennel_test name)
  cmake_parse_arguments(ARG "" "" "SOURCES;LIBS;PROPERTIES" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_LIBS} GTest::gtest GTest::gtest_main)
  kennel_target_defaults(${name})
  kennel_use_torch_pch(${name})
  # A case that calls GTEST_SKIP (no GPU, no PyTorch 2.x fixtures) shows as skipped, not passed.
  gtest_discover_tests(${name} WORKING_DIRECTORY ${PROJECT_BINARY_DIR} DISCOVERY_TIMEOUT 120
    PROPERTIES SKIP_REGULAR_EXPRESSION "\\[  SKIPPED \\]" ${ARG_PROPERTIES})
endfunction()
