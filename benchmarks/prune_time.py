"""Time `compress.prune` alone on zoo networks (random weights, random BN, 30% of the BN channels), without
the zoo's exactness, export and Torch-Pruning steps:

    OMP_NUM_THREADS=1 python benchmarks/prune_time.py timm:pnasnet5large timm:nasnetalarge yolo:yolov8n

One line per network: its name and the seconds the prune took (self-check included); a name that cannot be
built or a network that is refused gets one line on stderr, and the exit status is 1. Run it alone.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import zoo  # noqa: E402


def main(argv: list[str]) -> int:
    import torch

    import compress

    if not argv:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    failed = 0
    for spec in argv:
        try:
            model, size = zoo.build(spec)
            zoo.randomize_bn(model)
            model.eval()
            x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
            t0 = time.perf_counter()
            compress.prune(model, x, percent=zoo.PERCENT)
        except Exception as exc:  # an unknown name, or a network the library refuses: say so, go on
            lines = str(exc).strip().splitlines()
            print(f"{spec}: {type(exc).__name__}: {lines[0] if lines else ''}", file=sys.stderr, flush=True)
            failed += 1
            continue
        print(f"{spec} {time.perf_counter() - t0:.2f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
