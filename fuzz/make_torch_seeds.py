#!/usr/bin/python3
"""Seeds for the pickle and torch_zip fuzz targets: state_dicts as torch.save writes them.

Run with a Python that has torch (Debian's: /usr/bin/python3 fuzz/make_torch_seeds.py); writes
fuzz/corpus/torch_zip/seed-<n> (the .pth files) and fuzz/corpus/pickle/seed-<n> (their
data.pkl records).
"""
import collections
import io
import os
import sys
import zipfile

import torch

here = os.path.dirname(os.path.abspath(__file__))
torch.manual_seed(0)

linear = torch.nn.Linear(3, 2)
bn = torch.nn.BatchNorm2d(2)
shared = torch.arange(12, dtype=torch.float32)
dicts = [
    linear.state_dict(),
    {"state_dict": linear.state_dict(), "epoch": 3, "lr": 0.01},
    {"module." + k: v for k, v in bn.state_dict().items()},
    collections.OrderedDict(a=shared[:6].view(2, 3), b=shared[6:].view(3, 2).t()),
    {"w": torch.nn.Parameter(torch.ones(2, 2)), "h": torch.ones(3, dtype=torch.float16),
     "bf": torch.ones(2, dtype=torch.bfloat16), "i": torch.tensor([1, 2], dtype=torch.int32),
     "b": torch.tensor([True]), "empty": torch.zeros(0, 4)},
]
for name in ("torch_zip", "pickle"):
    os.makedirs(os.path.join(here, "corpus", name), exist_ok=True)
for i, d in enumerate(dicts):
    buf = io.BytesIO()
    torch.save(d, buf)
    data = buf.getvalue()
    with open(os.path.join(here, "corpus", "torch_zip", f"seed-{i}"), "wb") as f:
        f.write(data)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        pkl = next(n for n in z.namelist() if n.endswith("/data.pkl"))
        with open(os.path.join(here, "corpus", "pickle", f"seed-{i}"), "wb") as f:
            f.write(z.read(pkl))
print(f"wrote {len(dicts)} seeds each to fuzz/corpus/torch_zip and fuzz/corpus/pickle", file=sys.stderr)
