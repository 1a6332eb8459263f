"""Each method's final accuracy against the toolkit's on the same test images (a paired comparison).

    python benchmarks/peers/paired_accuracy.py runs/peers-cpu/preresnet56/seed0 --test-limit 10000
    python benchmarks/peers/paired_accuracy.py SEED_DIR --reference tp-bnscale --methods tp-bnscale,on-bnscale

With one seed, the table's mean ± sd says nothing about whether a gap of a few tenths is more than the
test set's sampling error. Both networks answer the same images, so the question is paired: of the images
exactly one of the two gets right, how many does each get? Reported per peer: those two counts, the
accuracy difference with a 95% interval (normal approximation for paired proportions) and the exact
two-sided McNemar p-value (binomial on the discordant images). "ahead" or "behind" where the interval
excludes 0, "level" where it holds 0.

The images are the benchmark's test split (same dataset, limit and seed), evaluated in fp32 on the CPU as
the stages measured them; each method's count is checked against the accuracy its record holds, and a
mismatch stops the script rather than comparing other images. The JSON goes to SEED_DIR/paired/accuracy.json
(atomically; `accuracy_vs_REFERENCE.json` for another `--reference`, so that the toolkit's comparison is
never replaced by an ablation's); the table is printed.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import atomic_json  # noqa: E402
from layer_profile import _at_least  # noqa: E402

METHODS = ("toolkit", "tp-bnscale", "tp-groupnorm", "tp-l1")
REFERENCE = "toolkit"
Z95 = 1.959963984540054


def mcnemar_exact_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: twice the smaller binomial tail of b + c fair coin flips, at most 1."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    log_half = n * math.log(0.5)
    tail = sum(math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + log_half)
               for i in range(k + 1))
    return min(1.0, 2.0 * tail)


def paired_difference(ref: list[bool], other: list[bool]) -> dict:
    """Accuracy of `other` minus `ref` on the same images, with its 95% interval and McNemar's p."""
    if len(ref) != len(other) or not ref:
        raise ValueError(f"paired comparison needs the same non-empty images ({len(ref)} against {len(other)})")
    n = len(ref)
    only_other = sum(1 for r, o in zip(ref, other) if o and not r)
    only_ref = sum(1 for r, o in zip(ref, other) if r and not o)
    diff = (only_other - only_ref) / n
    se = math.sqrt(max(0.0, (only_other + only_ref) / n - diff ** 2) / n)
    low, high = diff - Z95 * se, diff + Z95 * se
    verdict = "level" if low <= 0.0 <= high else ("ahead" if low > 0 else "behind")
    return {"images": n, "only_other_right": only_other, "only_reference_right": only_ref,
            "difference": diff, "ci95": [low, high], "mcnemar_p": mcnemar_exact_p(only_other, only_ref),
            "other_vs_reference": verdict}


def correct_per_image(model_dir: Path, data) -> list[bool]:
    import torch

    import compress

    model, meta = compress.load_model(model_dir)
    norm = meta["normalization"]
    test = data.for_model(meta).split("test")
    model.eval()
    right: list[bool] = []
    with torch.no_grad():
        for x, y in test.batches(500, norm["mean"], norm["std"], train=False, device=torch.device("cpu")):
            right.extend((model(x).argmax(1) == y).tolist())
    return right


def compare(seed_dir: Path, methods: list[str], data_spec: str, test_limit: int | None,
            reference: str = REFERENCE) -> dict:
    import compress

    if reference not in methods:
        raise SystemExit(f"the methods must include {reference}, the reference of every difference")
    # The data seed picks the test split's images: it is the folder's, never a guess.
    if not re.fullmatch(r"seed\d{1,9}", seed_dir.name):
        raise SystemExit(f"{seed_dir} is not a run.py seed folder (OUT/NET/seedS)")
    seed = int(seed_dir.name.removeprefix("seed"))
    data = compress.DataOptions(data_spec, None, test_limit, seed)
    right, accuracy = {}, {}
    for m in methods:
        record = seed_dir / f"{m}.json"
        if not record.is_file():
            if m == reference:
                raise SystemExit(f"{record} is missing: nothing to compare with")
            print(f"{m}: no record, left out", file=sys.stderr)
            continue
        try:
            rec = json.loads(record.read_text())
            final_dir, final_accuracy = seed_dir / rec["final_dir"], float(rec["final_accuracy"])
        except (ValueError, KeyError, TypeError) as exc:
            raise SystemExit(f"{record} is not a finished method's record ({exc})") from None
        right[m] = correct_per_image(final_dir, data)
        measured = sum(right[m]) / len(right[m])
        # The record's accuracy was measured by the stage on its test split: a count that differs by even one
        # image means other images (or another model) than the ones the table compares.
        if abs(measured - final_accuracy) > 0.5 / len(right[m]):
            raise SystemExit(f"{m}: {measured:.4%} on these images, but its record says {final_accuracy:.4%}: "
                             "not the images it was measured on (check --data and --test-limit)")
        accuracy[m] = measured
    return {"reference": reference, "data": data_spec, "test_limit": test_limit, "seed": seed,
            "accuracy": accuracy,
            "pairs": {m: paired_difference(right[reference], right[m]) for m in right if m != reference}}


def table(found: dict) -> list[str]:
    ref = found["reference"]
    lines = [f"| method | accuracy | vs {ref} | 95% interval | images only it / only {ref} gets right | "
             "McNemar p | verdict |", "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
             f"| {ref} | {found['accuracy'][ref]:.2%} | — | — | — | — | — |"]
    words = {"level": "level", "ahead": "peer ahead", "behind": "toolkit ahead"} if ref == REFERENCE else \
        {"level": "level", "ahead": f"ahead of {ref}", "behind": f"{ref} ahead"}
    for m, p in found["pairs"].items():
        low, high = p["ci95"]
        verdict = words[p["other_vs_reference"]]
        lines.append(f"| {m} | {found['accuracy'][m]:.2%} | {p['difference'] * 100:+.2f} pp | "
                     f"{low * 100:+.2f} to {high * 100:+.2f} pp | "
                     f"{p['only_other_right']} / {p['only_reference_right']} | "
                     f"{p['mcnemar_p']:.3g} | {verdict} |")
    return lines


def _method_name(text: str) -> str:
    """A method's name, as its record `NAME.json` and the output file use it: no path, no spaces."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", text) or ".." in text:
        raise argparse.ArgumentTypeError(f"not a method name: {text!r}")
    return text


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("seed_dir", type=Path, help="OUT/NET/seedS of a finished run.py")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--reference", default=REFERENCE, type=_method_name,
                    help="the method every other is compared with (default toolkit)")
    ap.add_argument("--data", default="cifar10", help="the dataset run.py trained on (default cifar10)")
    ap.add_argument("--test-limit", type=_at_least(1, 10_000_000), default=None,
                    help="run.py's scale's test limit (default: all)")
    args = ap.parse_args(argv)
    if not args.seed_dir.is_dir():
        raise SystemExit(f"{args.seed_dir} is not a directory")
    from compress.errors import CompressError

    try:
        found = compare(args.seed_dir, [m for m in args.methods.split(",") if m], args.data, args.test_limit,
                        args.reference)
    except (CompressError, OSError, ValueError) as exc:
        raise SystemExit(f"paired_accuracy: {exc}") from None
    name = "accuracy.json" if args.reference == REFERENCE else f"accuracy_vs_{args.reference}.json"
    atomic_json(args.seed_dir / "paired" / name, found)
    print("\n".join(table(found)))


if __name__ == "__main__":
    main()
