#!/usr/bin/env python3
"""Minimal inference with this bundle's model (onnxruntime, numpy, pillow): python example/infer.py IMAGE [MODEL]

Preprocessing, input name and class labels come from ../manifest.json, so this file never goes stale."""

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

BUNDLE = Path(__file__).resolve().parents[1]


def preprocess(image_path: str, spec: dict) -> np.ndarray:
    channels, height, width = spec["input_shape"]
    image = Image.open(image_path).convert("L" if channels == 1 else "RGB").resize((width, height))
    pixels = np.asarray(image, dtype=np.float32).reshape(height, width, channels) / spec["pixel_scale"]
    if spec.get("channel_order") == "BGR":
        pixels = pixels[..., ::-1]
    mean = np.asarray(spec.get("mean", [0.0] * channels), dtype=np.float32)
    std = np.asarray(spec.get("std", [1.0] * channels), dtype=np.float32)
    return ((pixels - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: python example/infer.py IMAGE [MODEL]")
    manifest = json.loads((BUNDLE / "manifest.json").read_text())
    model = (
        manifest["models"][0] if len(sys.argv) < 3 else next(m for m in manifest["models"] if m["file"] == sys.argv[2])
    )
    session = ort.InferenceSession(str(BUNDLE / model["file"]), providers=["CPUExecutionProvider"])
    logits = session.run(None, {model["inputs"][0]["name"]: preprocess(sys.argv[1], manifest["preprocessing"])})[0][0]
    probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    for index in np.argsort(probabilities)[::-1][:5]:
        print(f"{probabilities[index]:.3f}  {manifest['class_labels'][index]}")


if __name__ == "__main__":
    main()
