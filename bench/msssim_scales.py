"""Which scale makes two images alike: MS-SSIM split into its terms, on a finished run's held-out images.

    python bench/msssim_scales.py          # in a folder where `make demo` ran

MS-SSIM is a product over scales: a contrast-structure term at each finer scale, the whole SSIM
(luminance times contrast-structure) at the coarsest. The evaluate stage reports only the product. This
prints the contrast-structure term's mean at every scale and the coarsest scale's SSIM, for four
kinds of pairs of ``results/synthesize/per_report.csv``'s 96-px images: real images of the floor's
patient-disjoint halves (A_i with B_i, the evaluate stage's pairs and seed), their VQ-GAN
reconstructions, the first seed's generations from A_i's and B_i's reports, and a report's two seeds.
A gap that is as large at the coarsest scale as at the finest says the images share their layout, not
only their texture. Each row also recomputes the product from its terms and checks it against the
project's MS-SSIM (torchmetrics), so the split cannot drift from what evaluate measures. Results:
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raygen.metrics.fidelity import patient_halves  # noqa: E402
from raygen.metrics.image_sets import load_images_checked  # noqa: E402
from raygen.metrics.image_similarity import MSSSIMSettings, ms_ssim_per_image, msssim_settings  # noqa: E402

C1, C2 = 0.01**2, 0.03**2  # the K1, K2 of Wang et al. for data range 1, as the project's MS-SSIM uses


def gaussian_window(settings: MSSSIMSettings) -> torch.Tensor:
    k = settings.kernel_size
    g = torch.exp(-((torch.arange(k, dtype=torch.float64) - k // 2) ** 2) / (2 * settings.sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def terms(x: torch.Tensor, y: torch.Tensor, settings: MSSSIMSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pair: (N, scales) mean contrast-structure terms, and (N,) the coarsest scale's mean SSIM
    (luminance times contrast-structure, per pixel), which is the factor MS-SSIM takes there.

    As torchmetrics computes them: the images reflect-padded by half a window; the contrast-structure
    map cropped back to the image's interior, the SSIM map kept whole."""
    window, pad = gaussian_window(settings), settings.kernel_size // 2
    cs = []
    for _ in range(settings.scales):
        xp, yp = (F.pad(t, (pad,) * 4, mode="reflect") for t in (x, y))
        mx, my = F.conv2d(xp, window), F.conv2d(yp, window)
        sxx = (F.conv2d(xp * xp, window) - mx**2).clamp_min(0)
        syy = (F.conv2d(yp * yp, window) - my**2).clamp_min(0)
        sxy = F.conv2d(xp * yp, window) - mx * my
        cs_map = (2 * sxy + C2) / (sxx + syy + C2)
        cs.append(cs_map[..., pad:-pad, pad:-pad].mean(dim=(1, 2, 3)))
        last_ssim = ((2 * mx * my + C1) / (mx**2 + my**2 + C1) * cs_map).mean(dim=(1, 2, 3))
        x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    return torch.stack(cs, dim=1), last_ssim


def row(name: str, x: torch.Tensor, y: torch.Tensor, settings: MSSSIMSettings) -> str:
    cs, last_ssim = terms(x, y, settings)
    betas = torch.tensor(settings.betas, dtype=torch.float64)
    product = (cs[:, :-1].clamp_min(0) ** betas[:-1]).prod(dim=1) * last_ssim.clamp_min(0) ** betas[-1]
    reference = ms_ssim_per_image(x, y, settings)
    gap = float((product - reference).abs().max())
    if gap > 1e-6:
        raise SystemExit(f"{name}: the terms' product differs from the project's MS-SSIM by {gap:.2g}")
    scales = " | ".join(f"{v:.2f}" for v in cs.mean(dim=0).tolist())
    return f"| {name} | {scales} | {last_ssim.mean():.2f} | {reference.mean():.3f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--synthetic", type=Path, default=Path("results/synthesize"))
    parser.add_argument("--jpg-root", type=Path, default=Path("data/demo/mimic-cxr-jpg/2.0.0"))
    parser.add_argument("--seed", type=int, default=0, help="the evaluate section's seed (the floor's halves)")
    args = parser.parse_args()
    per_report = pd.read_csv(args.synthetic / "per_report.csv", dtype={"dicom_id": str})
    generated = [c for c in per_report.columns if c.startswith("path_")][:2]
    sources = {"real": (args.jpg_root, "real_path"), "recon": (args.synthetic, "recon_path")}
    sources |= {column: (args.synthetic, column) for column in generated}
    # The generated PNGs fix the resolution; real JPGs are resized and cropped to it as evaluate does.
    side = Image.open(args.synthetic / per_report[generated[0]].iloc[0]).size[0]
    loaded = {}
    for key, (root, column) in sources.items():
        pixels, ok = load_images_checked([root / p for p in per_report[column]], side, 2)
        if not ok.all():
            raise SystemExit(f"{int((~ok).sum())} unreadable images under {root}")
        loaded[key] = pixels.double()
    settings = msssim_settings(side)
    halves = patient_halves(per_report, args.seed)
    a, b = halves.a, halves.b
    scales = " | ".join(f"scale {s + 1}" for s in range(settings.scales))
    head = f"pairs ({len(a)} per half, {side} px, {settings.kernel_size}-px window)"
    print(f"| {head} | {scales} | SSIM at scale {settings.scales} | MS-SSIM |")
    print("|---|" + "---:|" * (settings.scales + 2))
    print(row("real, the floor's halves A_i with B_i", loaded["real"][a], loaded["real"][b], settings))
    print(row("their reconstructions", loaded["recon"][a], loaded["recon"][b], settings))
    first = loaded[generated[0]]
    print(row("generated (first seed) from A_i's and B_i's reports", first[a], first[b], settings))
    if len(generated) > 1:
        print(row("two seeds of one report (every report)", first, loaded[generated[1]], settings))


if __name__ == "__main__":
    main()
