//! The vocabulary every stage uses to validate its own section of `cliptag.toml`.
//!
//! Rules, and why:
//! - A stage owns its settings: the serde shape of its table (with [`Setting`] values where
//!   a value needs checking beyond its type) and a `validate` that turns it into the type the
//!   stage runs with. `config` only parses the TOML and calls each section's validator, so a
//!   new key is added in its stage and nowhere else. Where a command line takes the same
//!   options, the same struct is its clap arguments: a [`Setting`] parses from a flag too.
//! - A validator says *which* key is wrong and *why* ([`Invalid`]); it knows nothing of the
//!   file. `config` turns the key's byte span into a line number and names the file, so
//!   every error reads the same whatever stage raised it.
//! - This module imports nothing of cliptag: every stage may use it, and no import circle
//!   can run through it.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// A setting's value and, when it came from the config file, where it stands there (for the
/// line number of an error). Parses from TOML and from a command-line flag alike.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting<T> {
    value: T,
    span: Option<Range<usize>>,
}

impl<T> Setting<T> {
    /// A value that stands nowhere in a file (a default, a flag).
    pub fn new(value: T) -> Setting<T> {
        Setting { value, span: None }
    }

    pub fn get(&self) -> &T {
        &self.value
    }

    pub fn into_inner(self) -> T {
        self.value
    }

    pub fn span(&self) -> Option<Range<usize>> {
        self.span.clone()
    }
}

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Setting<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = toml::Spanned::<T>::deserialize(deserializer)?;
        let span = spanned.span();
        Ok(Setting {
            value: spanned.into_inner(),
            span: Some(span),
        })
    }
}

impl<T: FromStr> FromStr for Setting<T> {
    type Err = T::Err;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Setting::new)
    }
}

/// A setting that has the right type but a value the stage cannot run with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The key as a user writes it: `sampling.fps`, `source.uri`.
    pub key: String,
    /// Where the value stands in the file, when known.
    pub span: Option<Range<usize>>,
    pub reason: String,
}

impl Invalid {
    /// `key`'s value, at the position of `value` in the file (if it came from one).
    pub fn at<T>(key: &str, value: &Setting<T>, reason: impl Into<String>) -> Invalid {
        Invalid {
            key: key.to_string(),
            span: value.span(),
            reason: reason.into(),
        }
    }

    /// The command-line flag of the same option: the key's last part, kebab-cased
    /// (`sampling.every_nth_frame` is `--every-nth-frame`), as clap derives it.
    pub fn flag(&self) -> String {
        let last = self.key.rsplit('.').next().unwrap_or(&self.key);
        format!("--{}", last.replace('_', "-"))
    }

    /// A problem with no single position (several keys together).
    pub fn spanning(key: &str, span: Range<usize>, reason: impl Into<String>) -> Invalid {
        Invalid {
            key: key.to_string(),
            span: Some(span),
            reason: reason.into(),
        }
    }
}

/// What a section's validator may need besides its own table.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The config file's directory: relative paths in the file are relative to it, so a
    /// unit file can point at `/etc/cliptag/cliptag.toml` and keep `labels.txt` beside it.
    pub base: &'a Path,
}

impl Context<'_> {
    /// A path as written in the file, resolved against the file's directory.
    pub fn path(&self, written: &Path) -> PathBuf {
        self.base.join(written)
    }

    /// A non-empty path setting (`classify.head = "probe.json"`), resolved.
    pub fn required_path(
        &self,
        key: &str,
        value: &Setting<String>,
        what: &str,
    ) -> Result<PathBuf, Invalid> {
        if value.get().trim().is_empty() {
            return Err(Invalid::at(
                key,
                value,
                format!("expected the path of {what}"),
            ));
        }
        Ok(self.path(Path::new(value.get())))
    }
}

/// A duration written as people write them (`"10s"`, `"500ms"`, `"2m"`), longer than zero.
pub fn duration(key: &str, value: &Setting<String>) -> Result<Duration, Invalid> {
    let parsed = humantime::parse_duration(value.get().trim()).map_err(|e| {
        Invalid::at(
            key,
            value,
            format!("expected a duration like \"10s\" or \"500ms\": {e}"),
        )
    })?;
    if parsed.is_zero() {
        return Err(Invalid::at(key, value, "must be longer than zero"));
    }
    Ok(parsed)
}
