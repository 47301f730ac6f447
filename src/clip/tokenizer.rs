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
    cleaning: TextCleaning,
}

/// What is done to a text before BPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextCleaning {
    /// Hugging Face's CLIPTokenizerFast: only the tokenizer.json normalizer.
    None,
    /// open_clip's tokenizer (what open_clip models were trained with): HTML entities
    /// unescaped, the ftfy fixes that change ordinary text (full-width forms to ASCII,
    /// curly quotes to straight ones), whitespace collapsed.
    OpenClip,
}

/// The part of open_clip's `basic_clean` + `whitespace_clean` that alters real captions.
/// ftfy's other fixes repair mojibake, which captions typed by users do not contain.
pub fn open_clip_clean(text: &str) -> String {
    let text = html_unescape(&html_unescape(text));
    let fixed: String = text
        .chars()
        .map(|c| match c {
            '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFF01 + 0x21).unwrap_or(c),
            '\u{3000}' => ' ',
            '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}' => '\'',
            '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{201F}' => '"',
            c => c,
        })
        .collect();
    fixed.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Python's `html.unescape` for the entities captions contain: the XML five, `&nbsp;` and
/// numeric references. Anything else is left as written.
fn html_unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let end = rest[1..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '#'))
            .map(|i| i + 1)
            .unwrap_or(rest.len());
        let name = &rest[1..end];
        let decoded = match name {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            "nbsp" => Some('\u{A0}'),
            n if n.starts_with("#x") || n.starts_with("#X") => u32::from_str_radix(&n[2..], 16)
                .ok()
                .and_then(char::from_u32),
            n if n.starts_with('#') => n[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match decoded {
            Some(c) if !name.is_empty() => {
                out.push(c);
                let after = if rest[end..].starts_with(';') {
                    end + 1
                } else {
                    end
                };
                rest = &rest[after..];
            }
            _ => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
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
        cleaning: TextCleaning,
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
            cleaning,
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
        let cleaned;
        let text = match self.cleaning {
            TextCleaning::None => text,
            TextCleaning::OpenClip => {
                cleaned = open_clip_clean(text);
                cleaned.as_str()
            }
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_clip_cleaning() {
        assert_eq!(open_clip_clean("don\u{2019}t  panic\t"), "don't panic");
        assert_eq!(
            open_clip_clean("\u{FF26}\u{FF35}\u{FF2C}\u{FF2C} text"),
            "FULL text"
        );
        assert_eq!(
            open_clip_clean("fish &amp;amp; chips &lt;3 &#39;x&#x27; & more"),
            "fish & chips <3 'x' & more"
        );
        assert_eq!(open_clip_clean("AT&T&unknown;"), "AT&T&unknown;");
    }
}
