"""`python -m infra.gpu_lock`: write requirements-gpu.lock, the lock of the CUDA image, from
requirements.lock. Every pin stays; torch becomes its CUDA build from PyTorch's index. Run it
after every change to requirements.lock (a unit test fails while the two differ)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CUDA_TAG = "cu126"
"""torch 2.13's CUDA 12.x build (PyPI's torch 2.13.0 is the CUDA 13.0 one); infra/Dockerfile's
nvidia/cuda base image carries the same CUDA release."""

HEADER = f"""\
# Written by `python -m infra.gpu_lock` from requirements.lock; do not edit by hand.
# The lock of the CUDA image (infra/Dockerfile, VARIANT=gpu): the same pins, but torch is its
# CUDA build from PyTorch's index. torch's own metadata pins its nvidia-* libraries and triton.
# Used as a constraints file: pip install -r requirements.txt -c requirements-gpu.lock
--extra-index-url https://download.pytorch.org/whl/{CUDA_TAG}
"""


def render(cpu_lock: str) -> str:
    """The GPU lock for the text of requirements.lock."""
    lines, found = [], False
    for line in cpu_lock.splitlines():
        match = re.fullmatch(r"torch==([^+\s]+)(\+\w+)?", line.strip())
        if match:
            line, found = f"torch=={match[1]}+{CUDA_TAG}", True
        lines.append(line)
    if not found:
        raise ValueError("requirements.lock pins no torch==VERSION")
    return HEADER + "\n".join(lines) + "\n"


def main() -> None:
    target = REPO / "requirements-gpu.lock"
    target.write_text(render((REPO / "requirements.lock").read_text()))
    print(f"wrote {target.name}")


if __name__ == "__main__":
    main()
