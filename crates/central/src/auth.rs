//! Tokens: generation, hashing and where a request carries one.
//!
//! A token is 32 random bytes from the OS, shown once as 64 hex digits. The store keeps only its SHA-256
//! (hex) and looks a presented token up by that hash, so a leaked database grants nothing and no
//! constant-time comparison is needed. A request carries a token as `Authorization: Bearer <token>` or,
//! for the dashboard, in the HttpOnly cookie [`SESSION_COOKIE`].

use axum::http::{header, HeaderMap};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Name of the dashboard's session cookie.
pub const SESSION_COOKIE: &str = "ami_session";

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// A new random token (64 lowercase hex digits).
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex(&bytes)
}

/// SHA-256 of a token, hex: what the store keeps.
pub fn hash_token(token: &str) -> String {
    hex(&Sha256::digest(token.trim().as_bytes()))
}

/// The token a request presents: the bearer header first, else the session cookie.
pub fn presented_token(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if let Some((scheme, token)) = v.split_once(' ') {
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() {
                return Some(token.trim().to_owned());
            }
        }
    }
    session_cookie(headers)
}

/// The value of the session cookie, if the request has one.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == SESSION_COOKIE && !value.is_empty())
        .map(|(_, value)| value.trim().to_owned())
}

/// `Set-Cookie` value that stores a session (`secure` adds `Secure`, for HTTPS).
pub fn session_set_cookie(token: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{secure}")
}

/// `Set-Cookie` value that clears the session.
pub fn session_clear_cookie(secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn tokens_are_64_hex_digits_and_differ() {
        let a = new_token();
        let b = new_token();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn hash_is_sha256_hex() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(hash_token("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn bearer_header_wins_over_cookie() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("x=1; ami_session=c00k1e"));
        assert_eq!(presented_token(&h).as_deref(), Some("c00k1e"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer  t0ken "));
        assert_eq!(presented_token(&h).as_deref(), Some("t0ken"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(presented_token(&h).as_deref(), Some("c00k1e"));
    }

    #[test]
    fn cookie_attributes() {
        assert_eq!(session_set_cookie("t", false), "ami_session=t; Path=/; HttpOnly; SameSite=Strict");
        assert!(session_set_cookie("t", true).ends_with("; Secure"));
        assert!(session_clear_cookie(false).contains("Max-Age=0"));
    }
}
