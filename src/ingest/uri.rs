//! Where a source is, and how it may be shown: the one place a URI's secrets are masked.
//!
//! Rules, and why:
//! - A source's location is made once, when its config is validated ([`Location::new`]):
//!   the secret form goes to GStreamer and nowhere else; the shown form, with credentials
//!   replaced by `***`, is what logs, errors, the database and `status` print. Masking in
//!   one place means no output path can forget it.
//! - A value with a `scheme://` stays as written; anything else is a file path, resolved
//!   against the config file's directory, because that is how people write paths in a
//!   config that a unit file points at.

use std::path::Path;

use gstreamer as gst;

/// A source's location in both forms.
#[derive(Clone, PartialEq, Eq)]
pub struct Location {
    secret: String,
    shown: String,
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Debug output reaches logs as easily as Display: only the shown form.
        write!(f, "Location({:?})", self.shown)
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl Location {
    /// `written`: a URI or an absolute path.
    pub fn new(written: &str) -> Location {
        Location {
            secret: written.to_string(),
            shown: mask_uri(written),
        }
    }

    /// What GStreamer opens; never log it.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// Credentials masked: for logs, errors, the database and every output.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The password (or token) the URI carries, to scrub it from GStreamer's own messages,
    /// which may quote the location.
    pub fn password(&self) -> Option<String> {
        uri_password(&self.secret)
    }

    /// The URI scheme, lower-cased (`rtsp`, `file`); empty for a plain path.
    pub fn scheme(&self) -> String {
        self.secret
            .split_once("://")
            .filter(|_| has_scheme(&self.secret))
            .map(|(s, _)| s.to_ascii_lowercase())
            .unwrap_or_default()
    }

    pub fn is_file_path(&self) -> bool {
        !has_scheme(&self.secret)
    }
}

/// A value with a scheme stays as written; anything else is a file path relative to `base`.
pub fn resolve_uri(value: &str, base: &Path) -> String {
    let value = value.trim();
    if value.is_empty() || has_scheme(value) {
        value.to_string()
    } else {
        let p = base.join(value);
        std::path::absolute(&p)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned()
    }
}

pub fn has_scheme(value: &str) -> bool {
    match value.split_once("://") {
        Some((scheme, _)) => {
            !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        }
        None => false,
    }
}

/// The password (or token) in `scheme://user:password@host/...`, if any.
fn uri_password(uri: &str) -> Option<String> {
    let (_, rest) = uri.split_once("://")?;
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let userinfo = &authority[..authority.rfind('@')?];
    Some(match userinfo.split_once(':') {
        Some((_, password)) => password.to_string(),
        None => userinfo.to_string(),
    })
    .filter(|p| !p.is_empty())
}

/// Replace the password of `scheme://user:password@host/...` by `***`, so credentials never
/// reach logs or the database.
fn mask_uri(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return uri.to_string();
    };
    let userinfo = &authority[..at];
    let masked = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => "***".to_string(),
    };
    format!("{scheme}://{masked}{}", &rest[at..])
}

/// Turn what a user wrote (path or URI) into a URI GStreamer understands.
pub fn to_uri(location: &str) -> Result<String, String> {
    if has_scheme(location) {
        return Ok(location.to_string());
    }
    let path = std::path::absolute(Path::new(location)).map_err(|e| e.to_string())?;
    gst::glib::filename_to_uri(&path, None)
        .map(|u| u.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_passwords() {
        assert_eq!(
            mask_uri("rtsp://admin:hunter2@10.0.0.5:554/s"),
            "rtsp://admin:***@10.0.0.5:554/s"
        );
        assert_eq!(mask_uri("rtsp://token@cam/s"), "rtsp://***@cam/s");
        assert_eq!(mask_uri("rtsp://cam/s@x"), "rtsp://cam/s@x");
        assert_eq!(mask_uri("/path/with@sign.mp4"), "/path/with@sign.mp4");
        assert_eq!(
            uri_password("rtsp://admin:hunter2@10.0.0.5:554/s").as_deref(),
            Some("hunter2")
        );
        assert_eq!(uri_password("rtsp://cam/s@x"), None);
    }
}
