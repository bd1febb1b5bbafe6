"""The Pythons the T1/T2 peers run under: Debian's (torch 1.13) and, once
`./deploy/bootstrap.sh torch2 peers` has set it up, .venv-torch2's (PyTorch 2.x)."""
import os
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_peer_pythons(modules):
    """/usr/bin/python3, plus the torch2 venv's python when it can import `modules`."""
    pythons = ["/usr/bin/python3"]
    venv = os.path.join(REPO, ".venv-torch2", "bin", "python")
    if os.path.exists(venv) and subprocess.run([venv, "-c", f"import {', '.join(modules)}"],
                                               capture_output=True).returncode == 0:
        pythons.append(venv)
    return pythons


def torch_version(python):
    out = subprocess.run([python, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{python} has no torch: {out.stderr.strip()[-300:]}")
    return out.stdout.strip()
