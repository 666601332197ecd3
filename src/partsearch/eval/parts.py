"""Part diagnostics [ours]: do the shared tokens stand for body parts in both modalities?

The paper's claim is that the coarse tokens shared by the two branches, and the fine stripes with
the text's fine tokens, come to stand for the same body part in the image and in the text. R@1
cannot show it; these figures can (METHOD.md, "Measuring the parts"):

- **diversity**: per sample, the mean cosine between different coarse tokens (image, text), between
  the text's fine tokens and between the image's stripes. 1.0 means the tokens are copies.
- **correspondence**: over matched image-caption pairs, the mean cosine of image token p with text
  token q, as a matrix (coarse N_c x N_c; fine: stripe p x text fine token q), and its diagonal
  margin, mean diagonal minus mean off-diagonal. 0.0 means token i carries nothing that token j
  does not.
- **attribute localisation**, where records carry SynthPEDES attributes: over pairs of images of
  DIFFERENT people, the AUC of a token's cosine for "the two wear the same value" of an attribute
  (hair, upper, lower and shoe colour), per token: image-image, and image-text (stripe p of the
  image against fine token p of a caption that mentions the attribute). Hair colour is compared
  only between people with equally long hair and no hat. 0.5 is chance. A stripe
  that holds the shoes should score high for shoe colour and low for hair colour.
- **foreground contrast**, where records carry SynthPEDES masks: the mean of the foreground map A
  over the person (mask > 0, as area fractions at the token grid) divided by its mean over the
  background. 1.0 means A does not tell the person from the floor.
- **token regions**: per coarse token, how its attention mass splits over the mask regions
  (background, head, upper body, lower body, shoes, carried item), next to their share of the area.
  The headline figure is the background-bound ratio: the largest share of one coarse token's
  attention on the background, divided by the background's share of the area. Above 1.0 a token
  favours the floor over the person.

`diagnose(model, cfg, records, image_root, data_root, device)` returns all of it as a dict;
`summary(d)` the few figures the eval JSON and the demo report carry.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from partsearch.config import Config
from partsearch.data.datasets import build_gallery_loader, build_query_loader
from partsearch.data.formats import Record
from partsearch.device import autocast
from partsearch.errors import DataError
from partsearch.model.backbones import build_image_transform
from partsearch.model.fine import foreground_map, stripe_regions

# Attributes whose localisation is measured, head to feet, and the words that show a caption
# mentions them (SynthPEDES always describes the upper and lower garment).
ATTRIBUTES = ("hair_color", "upper_color", "lower_color", "shoe_color")
_MENTION = {"hair_color": r"\bhair\b", "upper_color": r".", "lower_color": r".", "shoe_color": r"\b(shoes|sneakers)\b"}
REGIONS = ("background", "head", "upper body", "lower body", "shoes", "carried item")
MAX_PAIRS = 20000


def mean_pairwise_cosine(tokens: torch.Tensor) -> float:
    """tokens `(N, T, d)` -> the mean over samples and token pairs j != k of cos(x_j, x_k)."""
    unit = F.normalize(tokens.detach().float(), dim=-1)
    t = unit.shape[1]
    if t < 2:
        return float("nan")
    gram = unit @ unit.transpose(1, 2)
    return float((gram.sum(dim=(1, 2)) - gram.diagonal(dim1=1, dim2=2).sum(-1)).mean() / (t * (t - 1)))


def correspondence(image_tokens: torch.Tensor, text_tokens: torch.Tensor) -> dict[str, Any]:
    """Matched pairs `(M, T, d)` each -> {"matrix": T x T mean cos(image p, text q), "margin":
    mean diagonal - mean off-diagonal, "diagonal": mean diagonal}."""
    a, b = F.normalize(image_tokens.float(), dim=-1), F.normalize(text_tokens.float(), dim=-1)
    matrix = torch.einsum("mpd,mqd->pq", a, b) / a.shape[0]
    t = matrix.shape[0]
    diagonal = matrix.diagonal().mean()
    off = (matrix.sum() - matrix.diagonal().sum()) / max(1, t * (t - 1))
    return {"matrix": matrix.tolist(), "margin": float(diagonal - off), "diagonal": float(diagonal)}


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of `scores` for boolean `labels` (Mann-Whitney U, ties counted
    half); NaN when one class is empty."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels, bool)
    pos, neg = int(labels.sum()), int((~labels).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), np.float64)
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts + 1) / 2.0  # 1-based average rank of each group of ties
    ranks[order] = np.repeat(average, counts)
    return float((ranks[labels].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def token_aucs(a: torch.Tensor, b: torch.Tensor, same: np.ndarray) -> list[float]:
    """Paired tokens `(K, T, d)` of K pairs and a bool `(K,)` -> per token t the AUC of
    cos(a_k^t, b_k^t) for `same`."""
    cos = (F.normalize(a.float(), dim=-1) * F.normalize(b.float(), dim=-1)).sum(-1).cpu().numpy()
    return [auc(cos[:, t], same) for t in range(cos.shape[1])]


def _sample_pairs(pids_a: np.ndarray, pids_b: np.ndarray, max_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to `max_pairs` (i, j) with different identities: all of them when few, else a seeded draw."""
    total = len(pids_a) * len(pids_b)
    if total <= 4 * max_pairs:
        i, j = np.divmod(np.arange(total), len(pids_b))
    else:
        rng = np.random.default_rng(seed)
        i, j = rng.integers(len(pids_a), size=4 * max_pairs), rng.integers(len(pids_b), size=4 * max_pairs)
    keep = pids_a[i] != pids_b[j]
    i, j = i[keep], j[keep]
    if len(i) > max_pairs:
        pick = np.random.default_rng(seed + 1).choice(len(i), max_pairs, replace=False)
        i, j = i[np.sort(pick)], j[np.sort(pick)]
    return i, j


def attribute_localisation(
    image_tokens: torch.Tensor, image_attrs: list[dict], image_pids: np.ndarray,
    text_tokens: torch.Tensor | None = None, text_attrs: list[dict] | None = None,
    text_pids: np.ndarray | None = None, captions: list[str] | None = None,
    attributes: tuple[str, ...] = ATTRIBUTES, max_pairs: int = MAX_PAIRS, seed: int = 0,
) -> dict[str, dict[str, list[float]]]:
    """{"image_image": {attribute: [AUC per token]}, "image_text": {...}} over pairs of different
    identities where the attribute is visible in both images (and, image-text, mentioned by the
    caption). `image_attrs[i]` is a SynthPEDES `attributes` dict ({"person", "visible", ...})."""
    out: dict[str, dict[str, list[float]]] = {"image_image": {}, "image_text": {}}
    i, j = _sample_pairs(image_pids, image_pids, max_pairs, seed)
    for attr in attributes:
        valid = np.array([_visible(image_attrs[a], attr) and _visible(image_attrs[b], attr)
                          and _comparable(attr, image_attrs[a]["person"], image_attrs[b]["person"]) for a, b in zip(i, j)], bool)
        same = np.array([image_attrs[a]["person"].get(attr) == image_attrs[b]["person"].get(attr) for a, b in zip(i, j)])
        out["image_image"][attr] = token_aucs(image_tokens[i[valid]], image_tokens[j[valid]], same[valid]) \
            if valid.any() else [float("nan")] * image_tokens.shape[1]
    if text_tokens is None:
        return out
    i, k = _sample_pairs(image_pids, text_pids, max_pairs, seed + 2)
    for attr in attributes:
        mention = re.compile(_MENTION[attr])
        valid = np.array([_visible(image_attrs[a], attr) and _visible(text_attrs[b], attr)
                          and _comparable(attr, image_attrs[a]["person"], text_attrs[b]["person"])
                          and bool(mention.search(captions[b].lower())) for a, b in zip(i, k)], bool)
        same = np.array([image_attrs[a]["person"].get(attr) == text_attrs[b]["person"].get(attr) for a, b in zip(i, k)])
        out["image_text"][attr] = token_aucs(image_tokens[i[valid]], text_tokens[k[valid]], same[valid]) \
            if valid.any() else [float("nan")] * image_tokens.shape[1]
    return out


def _visible(attrs: dict, attr: str) -> bool:
    return attr in attrs.get("visible", ()) and attr in attrs.get("person", {})


def _comparable(attr: str, a: dict, b: dict) -> bool:
    """Whether two people's `attr` can be told the same or different by its colour alone. Hair
    colour only between people whose hair is equally long and uncovered: long and short hair of
    one colour look different, and a cap or beanie hides short hair from the front."""
    if attr != "hair_color":
        return True
    return a.get("hat", "none") == b.get("hat", "none") == "none" and a.get("hair_length") == b.get("hair_length")


def region_fractions(mask: np.ndarray, grid: tuple[int, int], image_size: tuple[int, int]) -> torch.Tensor:
    """A label mask `(H0, W0)` -> `(R, h, w)`: the area fraction of each region (REGIONS) in each
    cell of the token grid, after resizing the mask to the model's input size like the image."""
    resized = np.asarray(Image.fromarray(mask).resize((image_size[1], image_size[0]), Image.NEAREST))
    onehot = torch.from_numpy(resized.copy()).long().clamp(max=len(REGIONS) - 1)
    onehot = F.one_hot(onehot, len(REGIONS)).permute(2, 0, 1).float()
    return F.adaptive_avg_pool2d(onehot[None], grid)[0]


def foreground_contrast(foreground: torch.Tensor, person: torch.Tensor) -> float:
    """foreground A `(N, h, w)`, person area fraction `(N, h, w)` -> mean A over the person / mean A
    over the background (area-weighted, pooled over images)."""
    inside = (foreground * person).sum() / person.sum().clamp_min(1e-9)
    outside = (foreground * (1 - person)).sum() / (1 - person).sum().clamp_min(1e-9)
    return float(inside / outside.clamp_min(1e-9))


def floor_peaks(foreground: torch.Tensor, person: torch.Tensor) -> float:
    """foreground A `(N, h, w)`, person area fraction `(N, h, w)` -> the share of images whose
    brightest cell of A holds no part of the person: the heatmap drawn over such an image is
    brightest on the floor [ours]. A cell the silhouette only touches counts as the person: at the
    16x8 grid of 128x64 crops a leg fills about a quarter of its cells, so a stricter rule would
    count the map's resolution as its fault."""
    peak = foreground.flatten(1).argmax(dim=1)
    at_peak = person.flatten(1).gather(1, peak[:, None])[:, 0]
    return float((at_peak <= 0).float().mean())


def token_regions(attention: torch.Tensor, fractions: torch.Tensor) -> torch.Tensor:
    """attention `(N, T, h, w)` (each map sums to 1), fractions `(N, R, h, w)` -> `(T, R)`: the
    mean share of each token's attention that falls on each region."""
    return torch.einsum("nthw,nrhw->tr", attention.float(), fractions) / attention.shape[0]


@torch.inference_mode()
def _encode(model: nn.Module, cfg: Config, records: list[Record], image_root: Path, device: torch.device, tokenizer):
    image_parts: dict[str, list[torch.Tensor]] = {"fine": [], "coarse": [], "attention": []}
    text_parts: dict[str, list[torch.Tensor]] = {"fine": [], "coarse": []}
    with autocast(device, cfg.train.precision):
        for batch in build_gallery_loader(cfg, records, image_root, build_image_transform(cfg.model, cfg.data, train=False),
                                          cfg.eval.batch_size):
            images = batch["image"].to(device)
            emb = model.encode_image(images, keep_attention=True)  # one pass for embeddings and maps
            image_parts["fine"].append(emb.fine.float().cpu())
            image_parts["coarse"].append(emb.coarse.float().cpu())
            image_parts["attention"].append(emb.attention.float().unflatten(2, emb.foreground.shape[1:]).cpu())
        for batch in build_query_loader(cfg, records, tokenizer, cfg.eval.batch_size):
            emb = model.encode_text(batch["ids"].to(device), batch["mask"].to(device))
            text_parts["fine"].append(emb.fine.float().cpu())
            text_parts["coarse"].append(emb.coarse.float().cpu())
    return ({k: torch.cat(v) for k, v in image_parts.items()}, {k: torch.cat(v) for k, v in text_parts.items()})


def diagnose(
    model: nn.Module, cfg: Config, records: list[Record], image_root: str | Path, tokenizer,
    device: torch.device | str = "cpu", data_root: str | Path | None = None, max_pairs: int = MAX_PAIRS,
) -> dict[str, Any]:
    """All part diagnostics of `model` on the images and captions of `records` (one split).
    `data_root` is where SynthPEDES masks are (default: the parent of `image_root`)."""
    if not records:
        raise DataError("the split has no records to diagnose")
    device = torch.device(device)
    image_root = Path(image_root)
    data_root = Path(data_root) if data_root is not None else image_root.parent
    was_training = model.training
    model.eval()
    try:
        img, txt = _encode(model, cfg, records, image_root, device, tokenizer)
    finally:
        model.train(was_training)
    caption_image = np.array([n for n, r in enumerate(records) for _ in r.captions])
    captions = [c for r in records for c in r.captions]
    pids = np.array([r.pid for r in records])
    parts = img["fine"].shape[1]
    out: dict[str, Any] = {
        "images": len(records), "captions": len(captions),
        "stripes": stripe_regions(parts),
        "diversity": {
            "coarse_image": mean_pairwise_cosine(img["coarse"]), "coarse_text": mean_pairwise_cosine(txt["coarse"]),
            "fine_text": mean_pairwise_cosine(txt["fine"]), "fine_image": mean_pairwise_cosine(img["fine"]),
        },
        "correspondence": {
            "coarse": correspondence(img["coarse"][caption_image], txt["coarse"]),
            "fine": correspondence(img["fine"][caption_image], txt["fine"]),
        },
    }
    attrs = [r.attributes for r in records]
    if all(a and "person" in a and "visible" in a for a in attrs):
        text_attrs = [attrs[n] for n in caption_image]
        out["attributes"] = {
            "fine": attribute_localisation(img["fine"], attrs, pids, txt["fine"], text_attrs, pids[caption_image],
                                           captions, max_pairs=max_pairs),
            "coarse": attribute_localisation(img["coarse"], attrs, pids, txt["coarse"], text_attrs,
                                             pids[caption_image], captions, max_pairs=max_pairs),
        }
    if all(a and a.get("mask") for a in attrs):
        grid = tuple(img["attention"].shape[-2:])
        fractions = []
        for record in records:
            path = data_root / record.attributes["mask"]
            try:
                with Image.open(path) as im:
                    mask = np.asarray(im.convert("L"))
            except OSError as err:
                raise DataError(f"{path}: cannot read the part mask ({err}); regenerate the dataset with "
                                "`partsearch synth`") from None
            fractions.append(region_fractions(mask, grid, tuple(cfg.data.image_size)))
        fractions = torch.stack(fractions)
        foreground = foreground_map(img["attention"].flatten(2), grid)
        person = 1 - fractions[:, 0]
        out["foreground_contrast"] = foreground_contrast(foreground, person)
        out["floor_peaks"] = floor_peaks(foreground, person)
        out["token_regions"] = {
            "regions": list(REGIONS),
            "attention": token_regions(img["attention"], fractions).tolist(),
            "area": fractions.mean(dim=(0, 2, 3)).tolist(),
        }
    return out


def best_stripes(aucs: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """{attribute: {"stripe": index of the highest AUC, "auc": that AUC}}."""
    out = {}
    for attr, values in aucs.items():
        arr = np.array(values, np.float64)
        if np.isnan(arr).all():
            continue
        best = int(np.nanargmax(arr))
        out[attr] = {"stripe": best, "auc": float(arr[best])}
    return out


def background_bound(regions: dict[str, Any]) -> float:
    """The largest share of one coarse token's attention on the background (region 0) divided by
    the background's share of the area: 1.0 reads it as much as any place, above favours it."""
    return max(row[0] for row in regions["attention"]) / max(regions["area"][0], 1e-12)


def summary(diag: dict[str, Any]) -> dict[str, Any]:
    """The headline figures: diversities, diagonal margins, foreground contrast, and per attribute
    the best stripe (image-image AUC), whether those run head to feet in ATTRIBUTES order."""
    out: dict[str, Any] = {
        "coarse_token_cos": 0.5 * (diag["diversity"]["coarse_image"] + diag["diversity"]["coarse_text"]),
        "fine_text_token_cos": diag["diversity"]["fine_text"],
        "coarse_margin": diag["correspondence"]["coarse"]["margin"],
        "fine_margin": diag["correspondence"]["fine"]["margin"],
    }
    for key in ("foreground_contrast", "floor_peaks"):
        if key in diag:
            out[key] = diag[key]
    if "token_regions" in diag:
        out["background_bound"] = background_bound(diag["token_regions"])
    if "attributes" in diag:
        best = best_stripes(diag["attributes"]["fine"]["image_image"])
        names = diag["stripes"]
        out["attribute_stripes"] = {a: {"stripe": names[b["stripe"]], "auc": b["auc"]} for a, b in best.items()}
        order = [best[a]["stripe"] for a in ATTRIBUTES if a in best]
        out["stripes_head_to_feet"] = len(order) == len(ATTRIBUTES) and all(x < y for x, y in zip(order, order[1:]))
    return out


def format_report(diag: dict[str, Any]) -> str:
    """A plain-text report of `diagnose`'s dict."""
    s = summary(diag)
    lines = [f"part diagnostics on {diag['images']} images, {diag['captions']} captions",
             f"token diversity (mean cosine between different tokens; 1.00 = copies): coarse image "
             f"{diag['diversity']['coarse_image']:.2f}, coarse text {diag['diversity']['coarse_text']:.2f}, "
             f"text fine {diag['diversity']['fine_text']:.2f}, image stripes {diag['diversity']['fine_image']:.2f}",
             f"cross-modal diagonal margin (0.00 = no correspondence): coarse {s['coarse_margin']:.3f}, "
             f"fine {s['fine_margin']:.3f}"]
    names = diag["stripes"]
    matrix = np.array(diag["correspondence"]["fine"]["matrix"])
    lines.append("fine correspondence, mean cos(image stripe p, text fine token q), rows p:")
    lines += [f"  {names[p]:>10} " + " ".join(f"{v:6.3f}" for v in matrix[p]) for p in range(len(names))]
    if "foreground_contrast" in diag:
        lines.append(f"foreground contrast (mean map on the person / off it; 1.00 = flat): {diag['foreground_contrast']:.2f}")
    if "floor_peaks" in diag:
        lines.append(f"foreground map brightest on the floor (its peak cell holds none of the person): "
                     f"{100 * diag['floor_peaks']:.1f}% of images")
    if "attributes" in diag:
        lines.append("attribute AUC per stripe, image-image (0.50 = chance):")
        lines.append(f"  {'':>11}" + "".join(f"{n:>10}" for n in names))
        for attr, values in diag["attributes"]["fine"]["image_image"].items():
            lines.append(f"  {attr:>11}" + "".join(f"{v:10.2f}" for v in values))
        lines.append(f"best stripes run head to feet: {'yes' if s['stripes_head_to_feet'] else 'no'}")
    if "token_regions" in diag:
        regions = diag["token_regions"]
        lines.append("coarse token attention by region (area share last):")
        lines.append(f"  {'':>8}" + "".join(f"{r:>13}" for r in regions["regions"]))
        for t, row in enumerate(regions["attention"]):
            lines.append(f"  token {t + 1:<2}" + "".join(f"{v:13.2f}" for v in row))
        lines.append(f"  {'area':>8}" + "".join(f"{v:13.2f}" for v in regions["area"]))
        lines.append(f"background-bound ratio (the most background-bound token's share there / the area's; "
                     f"above 1.00 it favours the floor): {s['background_bound']:.2f}")
    return "\n".join(lines)
