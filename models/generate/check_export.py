#!/usr/bin/env python3
"""Check a model directory written by `cliptag-tune export` from models/tiny-clip under
onnxruntime (hand-run, like generate.py; CI checks the same files under tract):

    target/debug/cliptag-tune export models/tiny-clip /tmp/exported
    /tmp/gen-venv/bin/python models/generate/check_export.py /tmp/exported

Prints the worst cosine to transformers' reference embeddings per file; fails below 0.9999
(fp32) or 0.997 / 0.999 (int8 text / vision: the bounds tests/clip_reference.rs gives
cliptag model quantize's files, whose form the export shares).
"""

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

REF = Path(__file__).resolve().parents[2] / "tests/fixtures/reference"


def cos(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def main(out: Path) -> int:
    caps = json.loads((REF / "captions.json").read_text())["captions"]
    frames = json.loads((REF / "frames.json").read_text())["frames"]
    ok = True
    for suffix, text_bound, image_bound in (("", 0.9999, 0.9999), ("_quantized", 0.997, 0.999)):
        opts = ["CPUExecutionProvider"]
        vision = ort.InferenceSession(str(out / f"onnx/vision_model{suffix}.onnx"), providers=opts)
        text = ort.InferenceSession(str(out / f"onnx/text_model{suffix}.onnx"), providers=opts)
        worst_text = min(
            cos(text.run(["text_embeds"], {"input_ids": np.array([c["ids"]], np.int64)})[0][0], c["text_embeds"])
            for c in caps)
        # A padded batch pools each row at its own end-of-text token.
        width = max(len(c["ids"]) for c in caps)
        padded = np.array([c["ids"] + [c["ids"][-1]] * (width - len(c["ids"])) for c in caps], np.int64)
        batch = text.run(["text_embeds"], {"input_ids": padded})[0]
        worst_text = min([worst_text] + [cos(e, c["text_embeds"]) for e, c in zip(batch, caps)])
        worst_image = min(
            cos(vision.run(["image_embeds"], {"pixel_values": np.fromfile(REF / f["pixel_values"], np.float32)
                                              .reshape(1, 3, 224, 224)})[0][0], f["image_embeds"])
            for f in frames)
        name = suffix.strip("_") or "fp32"
        print(f"onnxruntime {ort.__version__}, {name}: worst text cosine {worst_text:.6f}, "
              f"worst image cosine {worst_image:.6f}")
        ok &= worst_text >= text_bound and worst_image >= image_bound
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
