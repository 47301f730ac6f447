//! CLIP in candle, for training: both towers with Hugging Face's parameter names, so
//! `model.safetensors` of the openai/clip-vit-base-patch32 layout loads as it is and the
//! trained weights save back in that layout.
//!
//! Rules:
//! - The forward pass is transformers' CLIPModel (pre-LayerNorm blocks, QuickGELU, text
//!   pooled where [`TextPooling`] says, projections without bias), checked against its
//!   reference outputs on the fixture models (both config shapes of the end-of-text id).
//! - Patch dropout (paper 002) keeps a random subset of patch tokens, never the class
//!   token, and only when asked (training); inference sees every patch.
//! - Written here rather than taken from candle-transformers so that patch dropout and
//!   freezing lower layers have somewhere to live.

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{
    conv2d_no_bias, embedding, layer_norm, linear, linear_no_bias, Conv2d, Conv2dConfig, Embedding,
    LayerNorm, LayerNormConfig, Linear, VarBuilder,
};
use serde::Deserialize;

use super::error::TuneError;

/// The parts of Hugging Face's `config.json` (model_type "clip") the towers need.
#[derive(Debug, Clone, Deserialize)]
pub struct HfClipConfig {
    pub projection_dim: usize,
    #[serde(default = "default_logit_scale")]
    pub logit_scale_init_value: f64,
    pub text_config: HfTowerConfig,
    pub vision_config: HfTowerConfig,
}

fn default_logit_scale() -> f64 {
    2.6592
}

#[derive(Debug, Clone, Deserialize)]
pub struct HfTowerConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_attention_heads: usize,
    pub num_hidden_layers: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    // text
    #[serde(default)]
    pub vocab_size: usize,
    #[serde(default)]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub eos_token_id: Option<u32>,
    // vision
    #[serde(default)]
    pub image_size: usize,
    #[serde(default)]
    pub patch_size: usize,
}

/// Where transformers' `CLIPTextTransformer` pools a caption: the one rule shared by the
/// candle text tower and the exported ONNX graph.
///
/// Why two cases: OpenAI's released configs (openai/clip-vit-*, and the LAION ones copied
/// from them) carry `text_config.eos_token_id = 2`, a placeholder from before transformers
/// PR #24773. transformers keeps the legacy rule for exactly that value: pool at
/// `argmax(input_ids)`, which is the first end-of-text token because 49407 is the largest
/// id of CLIP's vocabulary. Any other id is taken at its word: pool at the first position
/// holding it, or at position 0 when a row has none (the argmax of an all-false row).
/// Taking 2 at its word pools every caption at its start token (cosine ~0.1 to the real
/// embedding), which is what this type exists to prevent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextPooling {
    /// `input_ids.argmax(-1)`: the legacy configs with `eos_token_id == 2`.
    LargestId,
    /// `(input_ids == id).argmax(-1)`: the first occurrence of the configured id.
    FirstOf(u32),
}

/// The placeholder end-of-text id of OpenAI's configs that selects the legacy rule.
const LEGACY_EOS_TOKEN_ID: u32 = 2;
/// transformers' `CLIPTextConfig` default when the config names no id.
const DEFAULT_EOS_TOKEN_ID: u32 = 49407;

impl TextPooling {
    /// The rule a text config asks for.
    pub fn of(text_config: &HfTowerConfig) -> TextPooling {
        match text_config.eos_token_id.unwrap_or(DEFAULT_EOS_TOKEN_ID) {
            LEGACY_EOS_TOKEN_ID => TextPooling::LargestId,
            id => TextPooling::FirstOf(id),
        }
    }

    /// The pooled position of one row of ids (torch's argmax: the first maximum).
    pub fn position(self, ids: &[u32]) -> usize {
        match self {
            TextPooling::LargestId => {
                let largest = ids.iter().copied().max().unwrap_or(0);
                ids.iter().position(|&t| t == largest).unwrap_or(0)
            }
            TextPooling::FirstOf(id) => ids.iter().position(|&t| t == id).unwrap_or(0),
        }
    }
}

fn default_eps() -> f64 {
    1e-5
}

fn default_act() -> String {
    "quick_gelu".into()
}

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
}

impl Attention {
    fn new(c: &HfTowerConfig, vb: VarBuilder) -> Result<Self> {
        let d = c.hidden_size;
        Ok(Attention {
            q: linear(d, d, vb.pp("q_proj"))?,
            k: linear(d, d, vb.pp("k_proj"))?,
            v: linear(d, d, vb.pp("v_proj"))?,
            out: linear(d, d, vb.pp("out_proj"))?,
            heads: c.num_attention_heads,
        })
    }

    fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, s, d) = x.dims3()?;
        let hd = d / self.heads;
        let split = |t: Tensor| -> Result<Tensor> {
            t.reshape((b, s, self.heads, hd))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split((self.q.forward(x)? * (hd as f64).powf(-0.5))?)?;
        let k = split(self.k.forward(x)?)?;
        let v = split(self.v.forward(x)?)?;
        let mut scores = q.matmul(&k.t()?.contiguous()?)?;
        if let Some(mask) = mask {
            scores = scores.broadcast_add(mask)?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let context = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, s, d))?;
        self.out.forward(&context)
    }
}

struct Block {
    ln1: LayerNorm,
    attn: Attention,
    ln2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    quick_gelu: bool,
}

impl Block {
    fn new(c: &HfTowerConfig, vb: VarBuilder) -> Result<Self> {
        let ln = |name: &str| layer_norm(c.hidden_size, ln_config(c), vb.pp(name));
        Ok(Block {
            ln1: ln("layer_norm1")?,
            attn: Attention::new(c, vb.pp("self_attn"))?,
            ln2: ln("layer_norm2")?,
            fc1: linear(c.hidden_size, c.intermediate_size, vb.pp("mlp").pp("fc1"))?,
            fc2: linear(c.intermediate_size, c.hidden_size, vb.pp("mlp").pp("fc2"))?,
            quick_gelu: c.hidden_act == "quick_gelu",
        })
    }

    fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let x = (x + self.attn.forward(&self.ln1.forward(x)?, mask)?)?;
        let h = self.fc1.forward(&self.ln2.forward(&x)?)?;
        let h = if self.quick_gelu {
            (&h * candle_nn::ops::sigmoid(&(&h * 1.702)?)?)?
        } else {
            h.gelu_erf()?
        };
        x + self.fc2.forward(&h)?
    }
}

fn ln_config(c: &HfTowerConfig) -> LayerNormConfig {
    LayerNormConfig {
        eps: c.layer_norm_eps,
        ..Default::default()
    }
}

fn encoder(c: &HfTowerConfig, vb: VarBuilder) -> Result<Vec<Block>> {
    (0..c.num_hidden_layers)
        .map(|i| Block::new(c, vb.pp("encoder").pp("layers").pp(i.to_string())))
        .collect()
}

pub struct TextTower {
    token: Embedding,
    position: Embedding,
    blocks: Vec<Block>,
    final_ln: LayerNorm,
    projection: Linear,
    pooling: TextPooling,
}

impl TextTower {
    /// `input_ids`: [batch, sequence] u32. Returns the projected, unnormalised embeddings.
    pub fn forward(&self, input_ids: &Tensor) -> Result<Tensor> {
        let (b, s) = input_ids.dims2()?;
        let device = input_ids.device();
        let positions = Tensor::arange(0u32, s as u32, device)?;
        let x = self
            .token
            .forward(input_ids)?
            .broadcast_add(&self.position.forward(&positions)?)?;
        let mask: Vec<f32> = (0..s * s)
            .map(|i| {
                if i % s > i / s {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
            .collect();
        let mask = Tensor::from_vec(mask, (s, s), device)?;
        let mut x = x;
        for block in &self.blocks {
            x = block.forward(&x, Some(&mask))?;
        }
        let x = self.final_ln.forward(&x)?;
        let ids = input_ids.to_vec2::<u32>()?;
        let rows = ids
            .iter()
            .enumerate()
            .map(|(i, row)| x.get(i)?.get(self.pooling.position(row)))
            .collect::<Result<Vec<_>>>()?;
        let pooled = Tensor::stack(&rows, 0)?;
        debug_assert_eq!(pooled.dims()[0], b);
        self.projection.forward(&pooled)
    }
}

pub struct VisionTower {
    class_embedding: Tensor,
    patch: Conv2d,
    position: Embedding,
    pre_ln: LayerNorm,
    blocks: Vec<Block>,
    post_ln: LayerNorm,
    projection: Linear,
    patches: usize,
}

impl VisionTower {
    /// `pixels`: [batch, 3, H, W] preprocessed. `keep`: patch dropout's keep rate (1 = off);
    /// `rng_seed` picks the kept patches.
    pub fn forward(&self, pixels: &Tensor, keep: f64, rng_seed: u64) -> Result<Tensor> {
        let b = pixels.dims()[0];
        let device = pixels.device();
        let patches = self
            .patch
            .forward(pixels)?
            .flatten_from(2)?
            .transpose(1, 2)?;
        let d = patches.dims()[2];
        let class = self
            .class_embedding
            .reshape((1, 1, d))?
            .broadcast_as((b, 1, d))?;
        let x = Tensor::cat(&[&class, &patches], 1)?;
        let positions = Tensor::arange(0u32, (self.patches + 1) as u32, device)?;
        let mut x = x.broadcast_add(&self.position.forward(&positions)?)?;
        if keep < 1.0 {
            let kept = ((self.patches as f64 * keep).round() as usize).clamp(1, self.patches);
            let mut index: Vec<u32> = (1..=self.patches as u32).collect();
            shuffle(&mut index, rng_seed);
            index.truncate(kept);
            index.sort_unstable();
            index.insert(0, 0);
            let index = Tensor::from_vec(index, kept + 1, device)?;
            x = x.index_select(&index, 1)?;
        }
        let mut x = self.pre_ln.forward(&x)?;
        for block in &self.blocks {
            x = block.forward(&x, None)?;
        }
        let pooled = self.post_ln.forward(&x.narrow(1, 0, 1)?.squeeze(1)?)?;
        self.projection.forward(&pooled)
    }
}

/// A seeded Fisher–Yates shuffle (SplitMix64): patch dropout needs only reproducible
/// randomness, not a statistical-quality generator.
fn shuffle(values: &mut [u32], seed: u64) {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    for i in (1..values.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        values.swap(i, j);
    }
}

pub struct Clip {
    pub text: TextTower,
    pub vision: VisionTower,
    /// log of CLIP's temperature, learned.
    pub logit_scale: Tensor,
    pub config: HfClipConfig,
}

impl Clip {
    pub fn new(config: &HfClipConfig, vb: VarBuilder) -> Result<Clip> {
        let t = &config.text_config;
        let v = &config.vision_config;
        let tv = vb.pp("text_model");
        let text = TextTower {
            token: embedding(
                t.vocab_size,
                t.hidden_size,
                tv.pp("embeddings").pp("token_embedding"),
            )?,
            position: embedding(
                t.max_position_embeddings,
                t.hidden_size,
                tv.pp("embeddings").pp("position_embedding"),
            )?,
            blocks: encoder(t, tv.clone())?,
            final_ln: layer_norm(t.hidden_size, ln_config(t), tv.pp("final_layer_norm"))?,
            projection: linear_no_bias(
                t.hidden_size,
                config.projection_dim,
                vb.pp("text_projection"),
            )?,
            pooling: TextPooling::of(t),
        };
        let vv = vb.pp("vision_model");
        let patches = (v.image_size / v.patch_size).pow(2);
        let vision = VisionTower {
            class_embedding: vv.pp("embeddings").get_with_hints(
                v.hidden_size,
                "class_embedding",
                candle_nn::Init::Randn {
                    mean: 0.0,
                    stdev: 0.02,
                },
            )?,
            patch: conv2d_no_bias(
                3,
                v.hidden_size,
                v.patch_size,
                Conv2dConfig {
                    stride: v.patch_size,
                    ..Default::default()
                },
                vv.pp("embeddings").pp("patch_embedding"),
            )?,
            position: embedding(
                patches + 1,
                v.hidden_size,
                vv.pp("embeddings").pp("position_embedding"),
            )?,
            pre_ln: layer_norm(v.hidden_size, ln_config(v), vv.pp("pre_layrnorm"))?,
            blocks: encoder(v, vv.clone())?,
            post_ln: layer_norm(v.hidden_size, ln_config(v), vv.pp("post_layernorm"))?,
            projection: linear_no_bias(
                v.hidden_size,
                config.projection_dim,
                vb.pp("visual_projection"),
            )?,
            patches,
        };
        let logit_scale = vb.get_with_hints(
            (),
            "logit_scale",
            candle_nn::Init::Const(config.logit_scale_init_value),
        )?;
        Ok(Clip {
            text,
            vision,
            logit_scale,
            config: config.clone(),
        })
    }
}

/// L2-normalise the last dimension.
pub fn normalize(x: &Tensor) -> Result<Tensor> {
    x.broadcast_div(&x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?)
}

impl HfClipConfig {
    /// `config.json` of a Hugging Face CLIP directory.
    pub fn load(dir: &std::path::Path) -> std::result::Result<HfClipConfig, TuneError> {
        let path = dir.join("config.json");
        let err = |reason: String| TuneError::Model {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| err(format!("cannot read: {e}")))?;
        serde_json::from_str(&text).map_err(|e| {
            err(format!(
                "not a Hugging Face CLIP config (model_type \"clip\"): {e}"
            ))
        })
    }
}

/// The files beside the weights that a model directory carries along: what the daemon and
/// the trainer read besides the tensors.
pub const SIDE_FILES: [&str; 5] = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "preprocessor_config.json",
];

/// Copy the [`SIDE_FILES`] that `from` has into `to`; returns (written file, bytes).
pub fn copy_side_files(
    from: &std::path::Path,
    to: &std::path::Path,
) -> std::result::Result<Vec<(std::path::PathBuf, u64)>, TuneError> {
    let mut copied = Vec::new();
    for name in SIDE_FILES {
        let source = from.join(name);
        if source.is_file() {
            let target = to.join(name);
            let bytes = std::fs::copy(&source, &target).map_err(|e| TuneError::Model {
                path: source.display().to_string(),
                reason: format!("cannot copy to {}: {e}", to.display()),
            })?;
            copied.push((target, bytes));
        }
    }
    Ok(copied)
}

/// Load `config.json` + `model.safetensors` from a Hugging Face CLIP directory into a fresh
/// VarMap (every parameter trainable).
pub fn load_hf(
    dir: &std::path::Path,
    device: &Device,
) -> std::result::Result<(Clip, candle_nn::VarMap), TuneError> {
    let config = HfClipConfig::load(dir)?;
    let err = |path: &std::path::Path, reason: String| TuneError::Model {
        path: path.display().to_string(),
        reason,
    };
    let mut varmap = candle_nn::VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let model = Clip::new(&config, vb).map_err(|e| err(&dir.join("config.json"), e.to_string()))?;
    let weights = dir.join("model.safetensors");
    if !weights.is_file() {
        return Err(err(
            &weights,
            "missing; cliptag-tune starts from Hugging Face weights (config.json + model.safetensors, the openai/clip-vit-base-patch32 layout)".into(),
        ));
    }
    varmap
        .load(&weights)
        .map_err(|e| err(&weights, format!("does not fit config.json: {e}")))?;
    Ok((model, varmap))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_config(eos_token_id: Option<u32>) -> HfTowerConfig {
        serde_json::from_value(serde_json::json!({
            "hidden_size": 8, "intermediate_size": 16, "num_attention_heads": 2,
            "num_hidden_layers": 1, "eos_token_id": eos_token_id,
        }))
        .unwrap()
    }

    /// transformers' two rules, on the ids its CLIP tokenizer writes (start 49406, end and
    /// padding 49407) and on a row with no configured id at all.
    #[test]
    fn text_pooling_follows_transformers() {
        let caption = [49406, 320, 1929, 2, 49407, 49407, 49407];
        let legacy = TextPooling::of(&text_config(Some(2)));
        assert_eq!(legacy, TextPooling::LargestId);
        assert_eq!(legacy.position(&caption), 4);
        let configured = TextPooling::of(&text_config(Some(49407)));
        assert_eq!(configured, TextPooling::FirstOf(49407));
        assert_eq!(configured.position(&caption), 4);
        assert_eq!(TextPooling::of(&text_config(None)), configured);
        // An id that no row holds pools at position 0, as argmax of an all-false row does.
        assert_eq!(TextPooling::FirstOf(7).position(&caption), 0);
    }
}
