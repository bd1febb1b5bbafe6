#!/usr/bin/env python3
"""Bring your own model: the user's ResNet-50 served as TorchScript and as an AOTInductor
package, against Kennel's built-in ResNet-50 with the same weights (issue 24's figures).

torchvision's resnet50 (133 classes, seeded) is saved three ways: its state_dict (imported
onto Kennel's built-in ResNet-50 with --arch resnet50), torch.jit.script (TorchScript) and
torch._inductor.aoti_compile_and_package with a dynamic batch (AOTInductor, CPU). Each is
imported with kennelctl-import (which checks it on a batch of two) and its raw forward timed
by `kennel-bench-limits limits --batch N` on the same JPEGs (500x375 photos to 224x224), the
same torch threads, alternating the models within each run.

Run with the PyTorch 2.x virtual environment, after `./deploy/bootstrap.sh torch2 peers` (it
adds torchvision) and `./deploy/bootstrap.sh torch2 build`:
    .venv-torch2/bin/python bench/user_models.py [--build build-torch2] [--batches 8,32]
                                                 [--runs 2] [--threads 2]
Prints a line per measurement and a JSON summary: images/s per model and batch, and each
user format's ratio to the built-in model. Compiling ResNet-50 with AOTInductor takes minutes
on 2 cores; --work DIR keeps the files for another run.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout}{out.stderr}")
    return out.stdout


def make_models(work, max_batch):
    import torchvision  # From `deploy/bootstrap.sh torch2 peers`.

    torch.manual_seed(0)
    model = torchvision.models.resnet50(num_classes=133).eval()
    files = {"builtin": f"{work}/resnet50.pth", "torchscript": f"{work}/resnet50_script.pt",
             "aotinductor": f"{work}/resnet50.pt2"}
    if not os.path.exists(files["builtin"]):
        torch.save(model.state_dict(), files["builtin"])
    if not os.path.exists(files["torchscript"]):
        torch.jit.save(torch.jit.script(model), files["torchscript"])
    if not os.path.exists(files["aotinductor"]):
        t0 = time.time()
        x = torch.randn(2, 3, 224, 224)
        batch = torch.export.Dim("batch", min=1, max=max_batch)
        program = torch.export.export(model, (x,), dynamic_shapes={"x": {0: batch}})
        torch._inductor.aoti_compile_and_package(
            program, package_path=files["aotinductor"],
            inductor_configs={"aot_inductor.metadata": {"torch_version": torch.__version__}})
        print(f"AOTInductor compiled ResNet-50 in {time.time() - t0:.0f} s", flush=True)
    return files


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", default=os.path.join(REPO, "build-torch2"))
    p.add_argument("--batches", default="8,32")
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", help="folder for the models, artifacts and images (default: a temporary one)")
    args = p.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    work = args.work or tempfile.mkdtemp(prefix="kennel-user-models-")
    os.makedirs(work, exist_ok=True)
    limits = os.path.join(args.build, "bench", "kennel-bench-limits")
    importer = os.path.join(args.build, "cli", "kennelctl-import")
    # kennel-bench-limits places every model for batches up to 256.
    files = make_models(work, max_batch=256)
    with open(f"{work}/classes.txt", "w") as f:
        f.write("".join(f"breed{i}\n" for i in range(133)))
    images = f"{work}/jpegs"
    if not os.path.isdir(images):
        run([limits, "make-jpegs", "--out", images, "--count", "64"])
    artifacts = {}
    for kind, path in files.items():
        artifacts[kind] = f"{work}/artifact-{kind}"
        if not os.path.isdir(artifacts[kind]):
            cmd = [importer, "import", path, "--name", f"r50-{kind}", "--classes-file", f"{work}/classes.txt",
                   "--artifact", artifacts[kind]]
            if kind == "builtin":
                cmd += ["--arch", "resnet50"]
            print(run(cmd).strip(), flush=True)
    rates = {kind: {b: [] for b in batches} for kind in files}
    for r in range(args.runs):
        for b in batches:
            for kind in files:
                out = run([limits, "limits", "--artifact", artifacts[kind], "--images", images,
                           "--threads", str(args.threads), "--batch", str(b)])
                m = re.search(rf"model batch {b}: ([0-9.]+) images/s", out)
                if not m:
                    sys.exit(f"no 'model batch {b}' line in:\n{out}")
                rates[kind][b].append(float(m.group(1)))
                print(f"run {r + 1} batch {b} {kind}: {m.group(1)} images/s", flush=True)
    summary = {"torch": torch.__version__, "threads": args.threads, "images_per_s": {}, "ratio_to_builtin": {}}
    for kind in files:
        summary["images_per_s"][kind] = {b: max(v) for b, v in rates[kind].items()}
        if kind != "builtin":
            summary["ratio_to_builtin"][kind] = {
                b: round(max(rates[kind][b]) / max(rates["builtin"][b]), 3) for b in batches}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
