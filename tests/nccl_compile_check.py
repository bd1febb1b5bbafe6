#!/usr/bin/python3
"""Compiles the NCCL backend on a machine that has CUDA and NCCL headers but only a CPU LibTorch.

    nccl_compile_check.py BUILD_DIR SOURCE INCLUDE_DIR...

The NCCL backend is built only with a CUDA LibTorch, which Debian does not ship, so the file
would otherwise never meet a compiler here. This runs the compiler in syntax-only mode with the
flags CMake gave the trainer library (from BUILD_DIR/compile_commands.json), KENNEL_WITH_NCCL
defined, the CUDA/NCCL include directories added and -Werror. Debian's LibTorch ships the
c10/cuda headers but not the one header a CUDA build generates (cuda_cmake_macros.h); when it
is missing, a copy with upstream's content is supplied from a temporary directory.
Exit status: 0 compiled cleanly, 1 compiler errors or warnings (printed).
"""
import json
import os
import shlex
import subprocess
import sys
import tempfile


def main():
    build, source, includes = sys.argv[1], sys.argv[2], sys.argv[3:]
    with open(os.path.join(build, "compile_commands.json")) as f:
        commands = json.load(f)
    # Any object of the trainer library (a unity batch or trainer.cc itself) has its flags.
    base = next(c for c in commands if "/kennel_trainer.dir/" in c["command"])
    args = shlex.split(base["command"])
    keep, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        if a in ("-o", "-c", "-include"):  # Output, input and the precompiled header go.
            skip = True
            continue
        if a == "-Winvalid-pch":
            continue
        keep.append(a)
    with tempfile.TemporaryDirectory() as stub:
        header = os.path.join(stub, "c10", "cuda", "impl", "cuda_cmake_macros.h")
        os.makedirs(os.path.dirname(header))
        with open(header, "w") as f:
            f.write("#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
        cmd = keep + ["-fsyntax-only", "-Werror", "-DKENNEL_WITH_NCCL"]
        for inc in includes:
            cmd += ["-isystem", inc]
        cmd += ["-idirafter", stub, source]  # The real generated header wins where it exists.
        out = subprocess.run(cmd, cwd=base["directory"], capture_output=True, text=True)
    if out.returncode != 0:
        print(out.stdout + out.stderr)
        print(f"FAILED: {os.path.basename(source)} does not compile with KENNEL_WITH_NCCL")
        return 1
    print(f"{os.path.basename(source)} compiles with KENNEL_WITH_NCCL against {', '.join(includes)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
