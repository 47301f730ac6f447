//! Where a source is, and how it may be shown: the one place a URI's secrets are masked.
//!
//! Rules, and why:
//! - A source's location is made once, when its config is validated ([`Location::new`]):
//!   the secret form goes to GStreamer and nowhere else; the shown form, with credentials
//!   replaced by `***`, is what logs, errors, the database and `status` print. Masking in
//!   one place means no output path can forget it.
//! - Credentials are the userinfo (`user:password@`, `token@`) and the values of query
//!   parameters whose names carry a secret ([`SECRET_PARAMETER_WORDS`], any case):
//!   cameras from several vendors take `?user=admin&password=…`, signed URLs a
//!   `signature`. Masking a harmless parameter costs a user a `***`; missing one leaks a
//!   password into the journal, so names are matched by what they contain.
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

    /// Every secret the URI carries (userinfo password or token, secret query values, as
    /// written and percent-decoded), to scrub them from GStreamer's own messages, which
    /// may quote the location or part of it.
    pub fn secrets(&self) -> Vec<String> {
        let mut secrets: Vec<String> = uri_password(&self.secret).into_iter().collect();
        secrets.extend(secret_parameters(&self.secret).map(|(_, value)| value.to_string()));
        let decoded: Vec<String> = secrets.iter().map(|s| percent_decoded(s)).collect();
        secrets.extend(decoded);
        secrets.retain(|s| !s.is_empty());
        secrets.sort();
        secrets.dedup();
        // Longest first, so a secret that contains another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets
    }

    /// The URI scheme, lower-cased (`rtsp`, `file`); empty for a plain path.
    pub fn scheme(&self) -> String {
        self.secret
            .split_once("://")
            .filter(|_| has_scheme(&self.secret))
            .map(|(s, _)| s.to_ascii_lowercase())
            .unwrap_or_default()
    }

    /// Host and port of a network URI (the scheme's usual port when none is written).
    pub fn host_port(&self) -> Option<(String, u16)> {
        let scheme = self.scheme();
        let default = match scheme.as_str() {
            "rtsp" | "rtspt" | "rtspu" => 554,
            "rtsps" => 322,
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        let (_, rest) = self.secret.split_once("://")?;
        let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        if let Some(bracketed) = host_port.strip_prefix('[') {
            // [IPv6]:port
            let (host, after) = bracketed.split_once(']')?;
            let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
            return Some((host.to_string(), port.unwrap_or(default)));
        }
        match host_port.rsplit_once(':') {
            Some((host, port)) => Some((host.to_string(), port.parse().ok()?)),
            None => Some((host_port.to_string(), default)),
        }
        .filter(|(host, _)| !host.is_empty())
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
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let userinfo = &authority[..authority.rfind('@')?];
    Some(match userinfo.split_once(':') {
        Some((_, password)) => password.to_string(),
        None => userinfo.to_string(),
    })
    .filter(|p| !p.is_empty())
}

/// Words that make a query parameter's value a secret when its name contains one (any
/// case): `password`, `passwd`, `PWD`, Foscam's `loginpas`, `api_key`, `access_token`,
/// `X-Amz-Signature`, `auth`.
pub const SECRET_PARAMETER_WORDS: [&str; 8] = [
    "pas",
    "pwd",
    "token",
    "key",
    "secret",
    "auth",
    "signature",
    "credential",
];

fn is_secret_parameter(name: &str) -> bool {
    let name = percent_decoded(name).to_ascii_lowercase();
    SECRET_PARAMETER_WORDS.iter().any(|w| name.contains(w))
}

/// The query of a URI with a scheme (after the first `?`, before any `#`), and where it
/// starts.
fn query_of(uri: &str) -> Option<(usize, &str)> {
    if !has_scheme(uri) {
        return None;
    }
    let start = uri.find('?')? + 1;
    let end = uri[start..].find('#').map_or(uri.len(), |e| start + e);
    Some((start, &uri[start..end]))
}

/// `(name, value)` of each query parameter whose value is a secret, as written.
fn secret_parameters(uri: &str) -> impl Iterator<Item = (&str, &str)> {
    query_of(uri)
        .map(|(_, query)| query)
        .unwrap_or_default()
        .split(['&', ';'])
        .filter_map(|pair| pair.split_once('='))
        .filter(|(name, value)| is_secret_parameter(name) && !value.is_empty())
}

/// `%41` → `A`; anything malformed stays as written.
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| text.to_string())
}

/// Replace the credentials of a URI by `***` (the password of `scheme://user:password@`,
/// a bare `token@`, the values of secret query parameters), so they never reach logs,
/// errors or the database.
fn mask_uri(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let masked = match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let masked = match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***"),
                None => "***".to_string(),
            };
            format!("{scheme}://{masked}{}", &rest[at..])
        }
        None => uri.to_string(),
    };
    mask_query(&masked)
}

/// The values of secret query parameters replaced by `***`.
fn mask_query(uri: &str) -> String {
    let Some((start, query)) = query_of(uri) else {
        return uri.to_string();
    };
    let mut out = String::with_capacity(uri.len());
    out.push_str(&uri[..start]);
    let mut rest = query;
    loop {
        let end = rest.find(['&', ';']).unwrap_or(rest.len());
        let pair = &rest[..end];
        match pair.split_once('=') {
            Some((name, value)) if is_secret_parameter(name) && !value.is_empty() => {
                out.push_str(name);
                out.push_str("=***");
            }
            _ => out.push_str(pair),
        }
        if end == rest.len() {
            break;
        }
        out.push_str(&rest[end..end + 1]);
        rest = &rest[end + 1..];
    }
    out.push_str(&uri[start + query.len()..]);
    out
}

/// `text` with every URI in it masked ([`mask_uri`]): for messages that quote what a user
/// wrote, such as a config line around a syntax error. Words are split at whitespace and
/// quotes; a word that is not a whole URI (its `://` mistyped) still has a
/// `user:password@` and secret query values masked, since a quoted line is shown whatever
/// is wrong with it.
pub fn mask_uris_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    for c in text.chars() {
        if c.is_whitespace() || "\"'`".contains(c) {
            out.push_str(&mask_word(&word));
            word.clear();
            out.push(c);
        } else {
            word.push(c);
        }
    }
    out.push_str(&mask_word(&word));
    out
}

fn mask_word(word: &str) -> String {
    let mut word = if word.contains("://") {
        mask_uri(word)
    } else {
        word.to_string()
    };
    if let Some(at) = word.rfind('@') {
        // `user:password@`, or a bare `token@` (a quote typed over the `:` leaves this).
        let after_scheme = word[..at].find("://").map_or(0, |i| i + 3);
        let from = word[..at]
            .rfind(':')
            .map_or(0, |colon| colon + 1)
            .max(after_scheme);
        if !word[from..at].is_empty() && &word[from..at] != "***" {
            word.replace_range(from..at, "***");
        }
    }
    if let Some(q) = word.find('?') {
        let masked = mask_query(&format!("x://h/{}", &word[q..]));
        word = format!("{}{}", &word[..q], &masked["x://h/".len()..]);
    }
    word
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

    /// Every form the fault pass tried, and the vendor forms in the wild.
    #[test]
    fn masks_secrets_in_query_strings() {
        let cases = [
            (
                "rtsp://127.0.0.1:18599/s?user=admin&password=QueryPw42",
                "rtsp://127.0.0.1:18599/s?user=admin&password=***",
            ),
            (
                "rtsp://cam/live?channel=1&PWD=Abc123&stream=0.sdp",
                "rtsp://cam/live?channel=1&PWD=***&stream=0.sdp",
            ),
            (
                "http://cam/video.cgi?loginuse=admin&loginpas=S3cret;resolution=32",
                "http://cam/video.cgi?loginuse=admin&loginpas=***;resolution=32",
            ),
            (
                "https://s3/x.mp4?X-Amz-Credential=AKIA%2F1&X-Amz-Signature=deadbeef#t=10",
                "https://s3/x.mp4?X-Amz-Credential=***&X-Amz-Signature=***#t=10",
            ),
            (
                "http://u:pw1@cam:80?access_token=tok9",
                "http://u:***@cam:80?access_token=***",
            ),
            (
                "http://nas/a.mp4?t=10&api%5Fkey=k",
                "http://nas/a.mp4?t=10&api%5Fkey=***",
            ),
            ("http://nas/a.mp4?download", "http://nas/a.mp4?download"),
            ("/srv/file?password=x.mp4", "/srv/file?password=x.mp4"),
        ];
        for (uri, shown) in cases {
            assert_eq!(mask_uri(uri), shown, "{uri}");
            // Quoted in a message, a file path with `?password=` is masked too: harmless.
            let quoted = format!("19 | uri = \"{uri}\"$ live = true");
            if has_scheme(uri) {
                assert_eq!(
                    mask_uris_in(&quoted),
                    format!("19 | uri = \"{shown}\"$ live = true")
                );
            }
        }
        // A URI whose `://` was mistyped is still masked where it is quoted.
        for (typo, shown) in [
            ("rtsp:/viewer:pw12@cam/s", "rtsp:/viewer:***@cam/s"),
            ("rtsp//cam/s?password=pw12", "rtsp//cam/s?password=***"),
            ("rtsp:///viewer:pw12@cam/s", "rtsp:///viewer:***@cam/s"),
            ("pw12@cam/s?token=t0k", "***@cam/s?token=***"),
            ("rtsp://t0k3n@cam/s", "rtsp://***@cam/s"),
        ] {
            assert_eq!(mask_uris_in(typo), shown);
        }
        assert_eq!(cases.len(), 8);
        let hosts = [
            ("rtsp://u:p@cam.local/s?x=1", Some(("cam.local", 554))),
            ("rtsp://10.0.0.5:8554/s", Some(("10.0.0.5", 8554))),
            ("http://[::1]:8080/v.mjpg", Some(("::1", 8080))),
            ("https://nas/a.mp4", Some(("nas", 443))),
            ("v4l2:///dev/video0", None),
            ("/srv/a.mp4", None),
        ];
        for (uri, expected) in hosts {
            let got = Location::new(uri).host_port();
            assert_eq!(
                got.as_ref().map(|(h, p)| (h.as_str(), *p)),
                expected,
                "{uri}"
            );
        }
        let secrets = Location::new(
            "https://u:pw1@s3/x.mp4?X-Amz-Credential=AKIA%2F1&X-Amz-Signature=deadbeef",
        )
        .secrets();
        assert_eq!(secrets, ["AKIA%2F1", "deadbeef", "AKIA/1", "pw1"]);
    }
}
