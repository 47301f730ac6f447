"""The OpenAI-shaped config fixture: models/tiny-clip's weights under a config.json whose
text_config carries the ids of OpenAI's released CLIP configs (bos 0 / eos 2 / pad 1), and
transformers' text embeddings under that config.

Why: transformers pools a caption at argmax(input_ids) when text_config.eos_token_id == 2
(the legacy rule of openai/clip-vit-*, kept since transformers PR #24773) and at the first
configured end-of-text id otherwise. models/tiny-clip's config uses 49407, so a loader that
ignores the legacy rule passes every test on it; this fixture catches it.

Hand-run (the venv of models/generate/README.md), after generate.py; reads only files that
generate.py wrote and writes:
  tests/fixtures/openai-config/config.json         (the OpenAI-shaped config)
  tests/fixtures/reference/openai_config.json      (captions: ids, text_embeds, pooled_at)
"""

import json
import tempfile
from pathlib import Path
import shutil

import numpy as np
import torch
from transformers import CLIPConfig, CLIPTextModelWithProjection

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "models/tiny-clip"
FIXTURE = REPO / "tests/fixtures/openai-config"
REFERENCE = REPO / "tests/fixtures/reference"
# text_config ids of openai/clip-vit-base-patch32's config.json (and LAION's copies).
OPENAI_TEXT_IDS = {"bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1}


def main():
    torch.use_deterministic_algorithms(True)
    config = json.loads((MODEL / "config.json").read_text())
    config["text_config"].update(OPENAI_TEXT_IDS)
    # The hub file also carries these two legacy keys, as null.
    config["text_config_dict"] = None
    config["vision_config_dict"] = None
    FIXTURE.mkdir(parents=True, exist_ok=True)
    (FIXTURE / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shutil.copy(FIXTURE / "config.json", tmp / "config.json")
        cfg = CLIPConfig.from_pretrained(str(tmp))
    cfg._attn_implementation = "eager"
    assert cfg.text_config.eos_token_id == 2, cfg.text_config.eos_token_id
    text = CLIPTextModelWithProjection(cfg.text_config).eval()
    from safetensors.torch import load_file

    weights = load_file(str(MODEL / "model.safetensors"))
    text.load_state_dict(
        {k: v for k, v in weights.items() if k.startswith(("text_model.", "text_projection."))},
        strict=False,
    )
    assert text.text_model.eos_token_id == 2

    captions = json.loads((REFERENCE / "captions.json").read_text())["captions"]
    out = []
    start_cosines = []
    for c in captions:
        ids = torch.tensor([c["ids"]], dtype=torch.int64)
        with torch.no_grad():
            o = text(input_ids=ids)
            embeds = o.text_embeds[0].numpy()
            # What pooling at the start token (what the bug did) would have given, to show
            # that this fixture tells the two apart.
            at_start = text.text_projection(o.last_hidden_state[:, 0])[0].numpy()
        pooled_at = int(ids[0].argmax())
        cos = float(np.dot(embeds, at_start) / np.linalg.norm(embeds) / np.linalg.norm(at_start))
        start_cosines.append(cos)
        out.append({
            "text": c["text"],
            "ids": c["ids"],
            "pooled_at": pooled_at,
            "text_embeds": [float(x) for x in embeds],
        })
        # Same ids and weights as captions.json: transformers' legacy rule lands on the first
        # end-of-text token, so the embeddings equal the 49407-config references.
        ref = np.array(c["text_embeds"], dtype=np.float32)
        same = float(np.dot(embeds, ref) / np.linalg.norm(embeds) / np.linalg.norm(ref))
        assert same > 0.99999, (c["text"], same)
    # Pooled at the start token every caption gets one and the same vector: far from all.
    assert max(start_cosines) < 0.9, max(start_cosines)
    result = {
        "config": "tests/fixtures/openai-config/config.json",
        "weights": "models/tiny-clip/model.safetensors",
        "text_config_ids": OPENAI_TEXT_IDS,
        "captions": out,
    }
    (REFERENCE / "openai_config.json").write_text(json.dumps(result) + "\n")
    print(f"wrote {len(out)} captions (cosine of start-token pooling to the reference: "
          f"{min(start_cosines):.3f} to {max(start_cosines):.3f}); torch {torch.__version__}")


if __name__ == "__main__":
    main()
