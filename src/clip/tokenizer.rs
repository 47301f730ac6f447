//! CLIP text tokenisation with the `tokenizers` crate on the model's `tokenizer.json`.
//!
//! Truncation and padding are set here, not trusted from the file (exports differ), so the
//! ids equal transformers' `CLIPTokenizer(text, padding="max_length", max_length=77,
//! truncation=True)`: start token, BPE ids, end token, then the pad id up to the context
//! length; text past the context keeps its start and end tokens.

use std::path::Path;

use tokenizers::{
    PaddingDirection, PaddingParams, PaddingStrategy, Tokenizer, TruncationDirection,
    TruncationParams, TruncationStrategy,
};

pub struct ClipTokenizer {
    inner: Tokenizer,
    context_length: usize,
    pad_id: u32,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("context_length", &self.context_length)
            .field("pad_id", &self.pad_id)
            .finish()
    }
}

impl ClipTokenizer {
    /// `pad_token`: the padding token's text (`<|endoftext|>` for OpenAI CLIP).
    pub fn from_file(
        path: &Path,
        context_length: usize,
        pad_token: &str,
    ) -> Result<ClipTokenizer, String> {
        let mut inner = Tokenizer::from_file(path).map_err(|e| e.to_string())?;
        let pad_id = inner
            .token_to_id(pad_token)
            .ok_or_else(|| format!("pad token {pad_token:?} is not in the vocabulary"))?;
        inner
            .with_truncation(Some(TruncationParams {
                max_length: context_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| e.to_string())?;
        inner.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(context_length),
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id,
            pad_type_id: 0,
            pad_token: pad_token.to_string(),
        }));
        Ok(ClipTokenizer {
            inner,
            context_length,
            pad_id,
        })
    }

    pub fn context_length(&self) -> usize {
        self.context_length
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Exactly `context_length` ids per text.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        let enc = self.inner.encode(text, true).map_err(|e| e.to_string())?;
        let ids = enc.get_ids().to_vec();
        if ids.len() != self.context_length {
            return Err(format!(
                "tokenizer produced {} ids, expected {}",
                ids.len(),
                self.context_length
            ));
        }
        Ok(ids)
    }
}
