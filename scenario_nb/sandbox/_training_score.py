"""The training-dataset score (§12b.7): a pre-flight check of a model's training images and their captions."""

from __future__ import annotations

import math


def dataset_score(model_id: str, assets: list) -> dict:
    """`GET /models/{id}/scores/training-dataset` (§12b.7): a pre-flight check of the dataset, with the
    recorded warnings (images under 1024 px, captions missing, identical or too close, images too alike)."""
    captions = [(a.get("description") or a.get("caption") or "").strip() for a in assets]
    mixes = [a["colours"] for a in assets]
    warnings: dict = {}
    for asset, text in zip(assets, captions, strict=True):
        found = []
        if min(asset["width"], asset["height"]) < 1024:  # 1024 itself passes [INFERRED]
            found.append("Width and height must be larger than 1024")
        if not text:
            found.append("Empty caption")
        if found:
            warnings[asset["id"]] = found
    couples, couple_warnings = [], []
    for i in range(len(assets)):
        for j in range(i + 1, len(assets)):
            distance = _dice_distance(captions[i], captions[j])
            similarity = _similarity(mixes[i], mixes[j])
            couple = [assets[i]["id"], assets[j]["id"]]
            couples.append((couple, distance, similarity))
            found = []
            if assets[i]["sha"] == assets[j]["sha"]:
                found.append("Same asset")
            if captions[i] and captions[i] == captions[j]:
                found.append("Captions are identical")
            elif captions[i] and captions[j] and distance < 0.15:
                found.append("Captions are too close")
            if similarity > 0.995:
                found.append("Similarity is too high")
            if found:
                couple_warnings.append({"couple": couple, "message": found})
    to_model = [_similarity(mix, [item for k, other in enumerate(mixes) if k != n for item in other])
                if len(mixes) > 1 else 1.0 for n, mix in enumerate(mixes)]
    small = sum(1 for m in warnings.values() if "Width and height must be larger than 1024" in m)
    mean_distance = _stats([d for _, d, _ in couples])["mean"]
    mean_similarity = _stats([s for _, _, s in couples])["mean"]
    score = 0.0 if not assets else round(0.4 * (1 - small / len(assets)) + 0.3 * min(1.0, mean_distance * 2)
                                         + 0.3 * (1 - max(0.0, mean_similarity - 0.5) * 2), 3)
    answer = {"modelId": model_id, "score": max(0.0, min(1.0, score)),
              "status": "unknown" if not assets else "complete" if len(assets) >= 5 else "incomplete",
              "details": {
                  "assetCouplesCaptionsDistance": [{"couple": c, "distance": round(d, 3)} for c, d, _ in couples],
                  "assetCouplesSimilarity": [{"couple": c, "similarity": round(s, 3)} for c, _, s in couples],
                  "assetsEmbeddingSimilarity": [{"assetId": a["id"], "similarity": round(s, 3)}
                                                for a, s in zip(assets, to_model, strict=True)],
                  "assetsSimilarity": _stats(to_model),
                  "couplesCaptionsDistance": _stats([d for _, d, _ in couples]),
                  "couplesSimilarity": _stats([s for _, _, s in couples]),
                  "metadataScore": round(sum(1 for c in captions if c) / len(captions), 3) if captions else 0}}
    if warnings:
        answer["assetsWarnings"] = [{"assetId": a, "message": m} for a, m in warnings.items()]
    if couple_warnings:
        answer["assetCouplesWarnings"] = couple_warnings
    return answer


def _kernel(a: list, b: list) -> float:
    """How much two colour mixes [(share, rgb)] overlap, near colours counting as nearly the same."""
    return sum(sa * sb * math.exp(-sum((x - y) ** 2 for x, y in zip(ca, cb, strict=True)) / 6400)
               for sa, ca in a for sb, cb in b)


def _similarity(a: list, b: list) -> float:
    """The images' colour similarity in 0..1 (1: the same mix)."""
    norm = math.sqrt(_kernel(a, a) * _kernel(b, b))
    return _kernel(a, b) / norm if norm else 0.0


def _dice_distance(a: str, b: str) -> float:
    """1 - Dice-Sørensen similarity of the captions' word sets."""
    x, y = set(a.lower().split()), set(b.lower().split())
    return 1.0 - 2 * len(x & y) / (len(x) + len(y)) if x or y else 0.0


def _stats(values: list) -> dict:
    if not values:
        return {"mean": 0, "median": 0, "min": 0}
    ordered = sorted(values)
    middle = len(ordered) // 2
    median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    return {"mean": round(sum(values) / len(values), 3), "median": round(median, 3), "min": round(ordered[0], 3)}
