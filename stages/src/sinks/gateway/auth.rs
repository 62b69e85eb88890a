//! Bearer tokens: where they are loaded from, how they are kept, how a
//! presented one is checked.
//!
//! Only the SHA-256 digest of each token is kept in memory, and a presented
//! token is compared, by digest and in constant time, against every known one.
//! No error, log line or `Debug` output ever contains a token.
//!
//! Tokens are read once, when the gateway is built.
// MISSING: reloading tokens while running. Until it exists, adding or revoking
// a token takes a restart of the pipeline, so a leaked token stays valid until
// then.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::routes::valid_obu_id;

type TokenDigest = [u8; 32];

/// The tokens a gateway accepts, each with the OBUs it may read.
pub struct Tokens {
    entries: Vec<Entry>,
}

struct Entry {
    digest: TokenDigest,
    /// `None` for a bare token, which may read every OBU.
    obus: Option<HashSet<String>>,
}

/// What a known token may read.
#[derive(Clone, Copy, Debug)]
pub struct Grant<'a> {
    obus: Option<&'a HashSet<String>>,
}

impl Grant<'_> {
    pub fn may_read(&self, obu_id: &str) -> bool {
        self.obus.is_none_or(|obus| obus.contains(obu_id))
    }
}

/// The tokens could not be loaded. Messages name the file, variable and line,
/// never a token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read tokens file {path}: {source}")]
    ReadFile { path: PathBuf, source: std::io::Error },
    #[error("environment variable {var} named by tokens_env is not set")]
    EnvUnset { var: String },
    #[error("environment variable {var} named by tokens_env is not valid unicode")]
    EnvNotUnicode { var: String },
    #[error("{origin} repeats a token given earlier")]
    Duplicate { origin: String },
    #[error("{origin} holds a token with characters other than visible ascii")]
    NotAscii { origin: String },
    #[error("{origin} scopes the token to an invalid obu id")]
    BadObuId { origin: String },
    #[error("no token found in {sources}")]
    Empty { sources: String },
}

impl Tokens {
    /// Loads tokens from a file (one per line) and from an environment
    /// variable (comma-separated), whichever are given.
    pub fn load(file: Option<&Path>, env_var: Option<&str>) -> Result<Tokens, TokenError> {
        let mut tokens = Tokens { entries: Vec::new() };
        let mut sources = Vec::new();

        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|source| TokenError::ReadFile { path: path.to_owned(), source })?;
            let origin = format!("tokens file {}", path.display());
            tokens.add_items(text.lines(), "line", &origin)?;
            sources.push(origin);
        }

        if let Some(var) = env_var {
            let text = std::env::var(var).map_err(|e| match e {
                std::env::VarError::NotPresent => TokenError::EnvUnset { var: var.to_owned() },
                std::env::VarError::NotUnicode(_) => {
                    TokenError::EnvNotUnicode { var: var.to_owned() }
                }
            })?;
            let origin = format!("environment variable {var}");
            tokens.add_items(text.split(','), "item", &origin)?;
            sources.push(origin);
        }

        if tokens.entries.is_empty() {
            return Err(TokenError::Empty { sources: sources.join(" and ") });
        }
        Ok(tokens)
    }

    /// Adds one token per item: `TOKEN [OBU...]`, separated by whitespace.
    /// Blank items and items starting with `#` are skipped.
    fn add_items<'a>(
        &mut self,
        items: impl Iterator<Item = &'a str>,
        unit: &str,
        origin: &str,
    ) -> Result<(), TokenError> {
        for (index, item) in items.enumerate() {
            let item = item.trim();
            if item.is_empty() || item.starts_with('#') {
                continue;
            }
            let at = || format!("{origin} {unit} {}", index + 1);
            let mut words = item.split_whitespace();
            let Some(token) = words.next() else { continue };

            // A header value is visible ASCII, so any other token could never
            // be presented.
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(TokenError::NotAscii { origin: at() });
            }
            let digest = digest(token);
            if self.entries.iter().any(|e| bool::from(e.digest.ct_eq(&digest))) {
                return Err(TokenError::Duplicate { origin: at() });
            }
            let scope: HashSet<String> = words.map(str::to_owned).collect();
            if !scope.iter().all(|obu| valid_obu_id(obu)) {
                return Err(TokenError::BadObuId { origin: at() });
            }
            let obus = if scope.is_empty() { None } else { Some(scope) };
            self.entries.push(Entry { digest, obus });
        }
        Ok(())
    }

    /// What `presented` may read, or `None` when it is not a known token.
    pub fn authenticate(&self, presented: &str) -> Option<Grant<'_>> {
        let presented = digest(presented);
        // Every entry is compared, so the time taken does not tell how many
        // entries were tried before a match.
        let mut matched = None;
        for entry in &self.entries {
            if bool::from(entry.digest.ct_eq(&presented)) {
                matched = Some(entry);
            }
        }
        matched.map(|entry| Grant { obus: entry.obus.as_ref() })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scoped = self.entries.iter().filter(|e| e.obus.is_some()).count();
        f.debug_struct("Tokens")
            .field("count", &self.entries.len())
            .field("scoped", &scoped)
            .finish_non_exhaustive()
    }
}

fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

/// The token of an `Authorization: Bearer TOKEN` header value, if it has that
/// form. The scheme name is case-insensitive (RFC 7235).
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return None;
    }
    Some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_file(text: &str) -> Result<Tokens, TokenError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, text).unwrap();
        Tokens::load(Some(&path), None)
    }

    #[test]
    fn bare_token_reads_every_obu_and_scoped_token_only_its_own() {
        let tokens = from_file("alpha-secret\nbeta-secret obu-1 obu-2\n").unwrap();
        let bare = tokens.authenticate("alpha-secret").unwrap();
        let scoped = tokens.authenticate("beta-secret").unwrap();
        assert!(bare.may_read("obu-9"));
        assert!(scoped.may_read("obu-2"));
        assert!(!scoped.may_read("obu-9"));
        assert!(tokens.authenticate("gamma-secret").is_none());
    }

    #[test]
    fn duplicate_token_is_refused_with_its_line_and_without_the_token() {
        let err = from_file("# ops\nalpha-secret\n\nalpha-secret obu-1\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("line 4"), "{text}");
        assert!(!text.contains("alpha-secret"), "{text}");
    }

    #[test]
    fn token_that_no_header_can_carry_is_refused() {
        let err = from_file("caf\u{e9}-secret\n").unwrap_err();
        assert!(err
            .to_string()
            .ends_with("line 1 holds a token with characters other than visible ascii"));
    }

    #[test]
    fn debug_output_shows_counts_but_no_token_or_digest() {
        let tokens = from_file("alpha-secret\nbeta-secret obu-1\n").unwrap();
        let shown = format!("{tokens:?}");
        assert_eq!(shown, "Tokens { count: 2, scoped: 1, .. }");
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_other_schemes_are_refused() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearer"), None);
    }
}
