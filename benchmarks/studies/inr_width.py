"""How wide a per-chunk INR should be for its byte budget: ``bits_per_param`` swept at equal ratio.

    python -m benchmarks.studies.inr_width [--bits 6 8 10 12] [--ratios 16 32 64]
        [--methods siren sci nerf] [--steps 500] [--quick] [--out DIR]

A per-chunk INR's width is the largest whose weights fit the chunk's budget at ``bits_per_param``
bits each; the weights are then quantized as finely as the budget allows. A wide network with a
coarse quantizer or a narrow one with a fine quantizer: this sweep measures which decodes better,
per method, on the seed-method crops (real EM, head CT, thorax CT and the 4D MRI), one chunk per
crop through the real chunk codec (every framed byte counted). It is what the methods' default
``bits_per_param`` was chosen from. Writes ``inr_width.{json,md}`` to ``--out`` (default
``benchmarks/results/``; ``--quick``: a temp folder).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks.studies.common import machine, peak_of, quality, roundtrip, write_json
from benchmarks.studies.seed_methods import crops
from streamcomp.methods import build_method

RESULTS = Path(__file__).resolve().parents[1] / "results"
LAYERS = {"siren": 7, "sci": 7, "nerf": 5}  # each method's default depth


def sweep(method: str, bits: list[float], ratios: list[float], steps: int, quick: bool) -> dict:
    """PSNR and bytes of ``method`` per crop, ratio and ``bits_per_param``."""
    rows = {}
    for name, volume in crops(quick).items():
        if method == "sci" and volume.ndim != 3:
            continue
        peak = peak_of(volume)
        for ratio in ratios:
            for b in bits:
                params = {"bits_per_param": b, "steps": steps, "layers": LAYERS[method]}
                r = roundtrip(build_method(method, params), volume, int(volume.nbytes / ratio))
                row = {"ratio": volume.nbytes / len(r.data), **quality(volume, r.decoded, peak), "encode_s": r.encode_s}
                rows.setdefault(name, {}).setdefault(str(ratio), {})[str(b)] = row
                print(f"{method} {name} {ratio:g}x bits {b:g}: {row['psnr']:.2f} dB", flush=True)
    return rows


def render(report: dict) -> str:
    bits = report["settings"]["bits"]
    lines = [
        "# Per-chunk INR width: bits per weight at equal ratio\n",
        f"machine: {report['machine']}\n",
        f"settings: `{report['settings']}`, total {report['total_s']:.0f} s\n",
        "PSNR dB (peak = the crop's max - min) of one chunk per crop at the target ratio; the width is the "
        "largest whose weights fit the budget at that many bits each. Best of each row in bold.\n",
    ]
    for method, volumes in report["methods"].items():
        lines += [f"\n## {method}\n", "| crop | target | " + " | ".join(f"{b:g} bits" for b in bits) + " |",
                  "|---|---|" + "---|" * len(bits)]
        for name, per_ratio in volumes.items():
            for ratio, per_bits in per_ratio.items():
                values = [per_bits[str(b)]["psnr"] for b in bits]
                cells = [f"**{v:.2f}**" if v == max(values) else f"{v:.2f}" for v in values]
                lines.append(f"| {name} | {float(ratio):g}x | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=float, nargs="+", default=[6.0, 8.0, 10.0, 12.0])
    parser.add_argument("--ratios", type=float, nargs="+", default=[16.0, 32.0, 64.0])
    parser.add_argument("--methods", nargs="+", default=list(LAYERS), choices=list(LAYERS))
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--quick", action="store_true", help="small crops, 60 steps (a smoke run)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if min(args.bits) <= 0 or min(args.ratios) <= 1 or args.steps < 1:
        parser.error("--bits must be > 0, --ratios > 1 and --steps >= 1")
    steps = 60 if args.quick else args.steps
    out = args.out or (Path(tempfile.mkdtemp()) if args.quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    report = {
        "machine": machine(),
        "settings": {"bits": args.bits, "ratios": args.ratios, "steps": steps, "quick": args.quick},
        "methods": {m: sweep(m, args.bits, args.ratios, steps, args.quick) for m in args.methods},
    }
    report["total_s"] = time.perf_counter() - t0
    write_json(out / "inr_width.json", report)
    (out / "inr_width.md").write_text(render(report))
    print(f"wrote {out / 'inr_width.md'}")


if __name__ == "__main__":
    main()
