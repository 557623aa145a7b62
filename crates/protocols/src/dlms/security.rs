//! DLMS/COSEM security suite 0 (Green Book DLMS UA 1000-2 §9.2.7; IEC 62056-5-3 §5.3): AES-GCM-128 with a
//! 12-byte authentication tag, used for glo-ciphering of xDLMS APDUs and for HLS-GMAC (authentication
//! mechanism 5).
//!
//! Owns the cryptographic transform only: the envelopes themselves ([`apdu::GloCiphered`],
//! [`apdu::GeneralGloCiphering`]) are encoded by [`super::apdu`]; keeping the invocation counter strictly
//! increasing (and persisted) is the caller's job.
//!
//! - IV (12 bytes) = system title (8) || invocation counter (4, big-endian);
//! - security control (SC) byte: bit 4 authentication, bit 5 encryption, bit 6 compression (unsupported),
//!   bit 7 key set (kept, it is part of the AAD), low nibble the suite id (must be 0);
//! - authenticated only (`0x10`): AAD = SC || AK || plaintext, nothing encrypted, payload = plain || tag;
//! - encrypted only (`0x20`): no AAD, no tag, payload = ciphertext;
//! - authenticated and encrypted (`0x30`): AAD = SC || AK, payload = ciphertext || tag.
//!
//! Keys never appear in `Debug` output and are zeroed when dropped. Panic contract: no input panics; a
//! failed tag check is [`SecurityError::AuthenticationFailed`].

use aes_gcm::aead::consts::U12;
use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::aes::Aes128;
use aes_gcm::AesGcm;
use zeroize::Zeroize;

use super::apdu::{self, Apdu, GloCiphered};

/// Security control: authenticated only.
pub const SC_AUTHENTICATED: u8 = 0x10;
/// Security control: encrypted only.
pub const SC_ENCRYPTED: u8 = 0x20;
/// Security control: authenticated and encrypted.
pub const SC_AUTHENTICATED_ENCRYPTED: u8 = 0x30;

/// Length of the authentication tag of security suite 0.
pub const TAG_LEN: usize = 12;

/// A system title: 8 bytes (3 bytes manufacturer id, 5 bytes serial as most meters fill it).
pub type SystemTitle = [u8; 8];

/// AES-GCM-128 with a 96-bit nonce and a 96-bit tag (security suite 0).
type Gcm = AesGcm<Aes128, U12, U12>;

/// The global keys of an association: block cipher key (EK) and authentication key (AK).
#[derive(Clone, PartialEq, Eq)]
pub struct Keys {
    /// Global unicast encryption key (EK).
    pub block_cipher_key: [u8; 16],
    /// Authentication key (AK).
    pub authentication_key: [u8; 16],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(<redacted>)")
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        self.block_cipher_key.zeroize();
        self.authentication_key.zeroize();
    }
}

impl Keys {
    /// Keys from two 32-digit hex strings (EK, AK); spaces are not allowed, case does not matter.
    pub fn from_hex(ek: &str, ak: &str) -> Result<Keys, SecurityError> {
        Ok(Keys { block_cipher_key: key_from_hex(ek)?, authentication_key: key_from_hex(ak)? })
    }
}

fn key_from_hex(s: &str) -> Result<[u8; 16], SecurityError> {
    let s = s.as_bytes();
    if s.len() != 32 {
        return Err(SecurityError::BadKey);
    }
    let mut key = [0u8; 16];
    for (k, pair) in key.iter_mut().zip(s.chunks_exact(2)) {
        let hi = hex_digit(pair[0]).ok_or(SecurityError::BadKey)?;
        let lo = hex_digit(pair[1]).ok_or(SecurityError::BadKey)?;
        *k = hi << 4 | lo;
    }
    Ok(key)
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Why protection could not be applied or removed.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum SecurityError {
    /// A key is not 16 bytes (32 hex digits).
    #[error("bad key: a key is 32 hex digits (16 bytes)")]
    BadKey,
    /// The authentication tag does not match: wrong key, wrong system title or invocation counter, or the
    /// bytes were altered.
    #[error("authentication failed (tag mismatch)")]
    AuthenticationFailed,
    /// A security control byte other than 0x10/0x20/0x30 (with optional key-set bit) of suite 0.
    #[error("unsupported security control byte 0x{0:02X}")]
    UnsupportedSecurityControl(u8),
    /// The payload is shorter than its authentication tag.
    #[error("ciphered payload shorter than its authentication tag")]
    Truncated,
    /// The APDU has no glo-ciphered counterpart (wrap) or is not a ciphered envelope (unwrap).
    #[error("APDU tag {0} cannot be glo-ciphered or is not a ciphered envelope")]
    NotCipherable(u8),
    /// A general-glo-ciphering envelope carries a system title that is not 8 bytes or not the peer's.
    #[error("system title of the envelope is not the peer's")]
    SystemTitleMismatch,
}

/// Checks `sc` and returns (authenticated, encrypted).
fn parse_sc(sc: u8) -> Result<(bool, bool), SecurityError> {
    // Low nibble: suite id (0 only); bit 6: compression (not supported); bit 7 key set (either is fine).
    if sc & 0x4F != 0 || sc & 0x30 == 0 {
        return Err(SecurityError::UnsupportedSecurityControl(sc));
    }
    Ok((sc & 0x10 != 0, sc & 0x20 != 0))
}

fn iv(system_title: &SystemTitle, invocation_counter: u32) -> [u8; 12] {
    let mut iv = [0u8; 12];
    iv[..8].copy_from_slice(system_title);
    iv[8..].copy_from_slice(&invocation_counter.to_be_bytes());
    iv
}

fn cipher(keys: &Keys) -> Gcm {
    Gcm::new(GenericArray::from_slice(&keys.block_cipher_key))
}

/// The GCM tag over `aad` and `buf`, encrypting `buf` in place (GCM is CTR mode plus GHASH: encrypting a
/// ciphertext with the same IV yields the plaintext, which is how encryption-only payloads are opened).
fn seal(keys: &Keys, iv: &[u8; 12], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
    let mut out = [0u8; TAG_LEN];
    // aes-gcm fails only for inputs beyond 2^36 bytes, which no caller can hold: the tag then stays zero
    // and can never verify.
    if let Ok(tag) = cipher(keys).encrypt_in_place_detached(GenericArray::from_slice(iv), aad, buf) {
        out.copy_from_slice(&tag);
    }
    out
}

/// Protects `plain` per `security_control` (0x10 authenticated only: payload = plain || tag; 0x20:
/// ciphertext only; 0x30: ciphertext || tag). IV = system_title || invocation_counter (BE);
/// AAD = SC || AK (|| plain when authenticated only).
pub fn protect(
    keys: &Keys,
    security_control: u8,
    system_title: &SystemTitle,
    invocation_counter: u32,
    plain: &[u8],
) -> Result<Vec<u8>, SecurityError> {
    let (auth, enc) = parse_sc(security_control)?;
    let iv = iv(system_title, invocation_counter);
    let mut aad = Vec::with_capacity(17 + if enc { 0 } else { plain.len() });
    aad.push(security_control);
    aad.extend_from_slice(&keys.authentication_key);
    let mut out = Vec::with_capacity(plain.len() + TAG_LEN);
    if enc {
        out.extend_from_slice(plain);
        let tag = seal(keys, &iv, if auth { &aad } else { &[] }, &mut out);
        if auth {
            out.extend_from_slice(&tag);
        }
    } else {
        aad.extend_from_slice(plain);
        let tag = seal(keys, &iv, &aad, &mut []);
        out.extend_from_slice(plain);
        out.extend_from_slice(&tag);
    }
    Ok(out)
}

/// Removes the protection `protect` applied: checks the tag (when authenticated) and decrypts (when
/// encrypted). A wrong tag is [`SecurityError::AuthenticationFailed`].
pub fn unprotect(
    keys: &Keys,
    security_control: u8,
    system_title: &SystemTitle,
    invocation_counter: u32,
    payload: &[u8],
) -> Result<Vec<u8>, SecurityError> {
    let (auth, enc) = parse_sc(security_control)?;
    let iv = iv(system_title, invocation_counter);
    if !auth {
        let mut out = payload.to_vec();
        seal(keys, &iv, &[], &mut out);
        return Ok(out);
    }
    let split = payload.len().checked_sub(TAG_LEN).ok_or(SecurityError::Truncated)?;
    let (body, tag) = payload.split_at(split);
    let mut aad = Vec::with_capacity(17 + if enc { 0 } else { body.len() });
    aad.push(security_control);
    aad.extend_from_slice(&keys.authentication_key);
    let nonce = GenericArray::from_slice(&iv);
    let tag = GenericArray::from_slice(tag);
    if enc {
        let mut out = body.to_vec();
        cipher(keys)
            .decrypt_in_place_detached(nonce, &aad, &mut out, tag)
            .map_err(|_| SecurityError::AuthenticationFailed)?;
        Ok(out)
    } else {
        aad.extend_from_slice(body);
        cipher(keys)
            .decrypt_in_place_detached(nonce, &aad, &mut [], tag)
            .map_err(|_| SecurityError::AuthenticationFailed)?;
        Ok(body.to_vec())
    }
}

/// Wraps a plain APDU (tag from its first byte) in its glo-ciphered envelope ([`apdu::glo_tag_for`]) and
/// returns the encoded envelope bytes.
pub fn wrap(
    keys: &Keys,
    security_control: u8,
    system_title: &SystemTitle,
    invocation_counter: u32,
    plain_apdu: &[u8],
) -> Result<Vec<u8>, SecurityError> {
    let first = plain_apdu.first().copied().ok_or(SecurityError::Truncated)?;
    let tag = apdu::glo_tag_for(first).ok_or(SecurityError::NotCipherable(first))?;
    let payload = protect(keys, security_control, system_title, invocation_counter, plain_apdu)?;
    Ok(Apdu::GloCiphered(GloCiphered { tag, security_control, invocation_counter, payload }).encode())
}

/// Opens a [`Apdu::GloCiphered`] envelope (made with `peer_title`) or a [`Apdu::GeneralGloCiphering`] one
/// (made with its own system title, which must equal `peer_title`): returns (invocation counter, plain APDU
/// bytes).
pub fn unwrap(keys: &Keys, peer_title: &SystemTitle, envelope: &Apdu) -> Result<(u32, Vec<u8>), SecurityError> {
    match envelope {
        Apdu::GloCiphered(g) => {
            let plain = unprotect(keys, g.security_control, peer_title, g.invocation_counter, &g.payload)?;
            Ok((g.invocation_counter, plain))
        }
        Apdu::GeneralGloCiphering(g) => {
            if g.system_title.as_slice() != peer_title.as_slice() {
                return Err(SecurityError::SystemTitleMismatch);
            }
            let plain = unprotect(keys, g.security_control, peer_title, g.invocation_counter, &g.payload)?;
            Ok((g.invocation_counter, plain))
        }
        other => Err(SecurityError::NotCipherable(other.tag())),
    }
}

/// HLS-GMAC (mechanism 5) f(challenge) = SC (0x10) || IC (4) || GMAC tag (12), where the tag is AES-GCM over
/// an empty plaintext with AAD = 0x10 || AK || challenge and IV = system_title || IC: 17 bytes.
pub fn hls_gmac(keys: &Keys, system_title: &SystemTitle, invocation_counter: u32, challenge: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(17 + challenge.len());
    aad.push(SC_AUTHENTICATED);
    aad.extend_from_slice(&keys.authentication_key);
    aad.extend_from_slice(challenge);
    let tag = seal(keys, &iv(system_title, invocation_counter), &aad, &mut []);
    let mut out = Vec::with_capacity(5 + TAG_LEN);
    out.push(SC_AUTHENTICATED);
    out.extend_from_slice(&invocation_counter.to_be_bytes());
    out.extend_from_slice(&tag);
    out
}

/// Checks a peer's f(challenge) made with the peer's system title; returns its invocation counter.
pub fn verify_hls_gmac(
    keys: &Keys,
    peer_title: &SystemTitle,
    challenge: &[u8],
    response: &[u8],
) -> Result<u32, SecurityError> {
    if response.len() < 5 + TAG_LEN {
        return Err(SecurityError::Truncated);
    }
    if response.len() != 5 + TAG_LEN {
        return Err(SecurityError::AuthenticationFailed);
    }
    if response[0] != SC_AUTHENTICATED {
        return Err(SecurityError::UnsupportedSecurityControl(response[0]));
    }
    let ic = u32::from_be_bytes([response[1], response[2], response[3], response[4]]);
    let mut aad = Vec::with_capacity(17 + challenge.len());
    aad.push(SC_AUTHENTICATED);
    aad.extend_from_slice(&keys.authentication_key);
    aad.extend_from_slice(challenge);
    cipher(keys)
        .decrypt_in_place_detached(
            GenericArray::from_slice(&iv(peer_title, ic)),
            &aad,
            &mut [],
            GenericArray::from_slice(&response[5..]),
        )
        .map_err(|_| SecurityError::AuthenticationFailed)?;
    Ok(ic)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::from_hex("000102030405060708090a0b0c0d0e0f", "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF").expect("keys")
    }

    #[test]
    fn keys_parse_either_case_and_never_print() {
        let k = keys();
        assert_eq!(k.block_cipher_key[15], 0x0F);
        assert_eq!(k.authentication_key[0], 0xD0);
        let shown = format!("{k:?} {:?}", k.clone());
        assert_eq!(shown, "Keys(<redacted>) Keys(<redacted>)");
        assert!(!shown.contains("D0") && !shown.contains("0F"));
        for bad in [
            "",
            "00",
            "000102030405060708090a0b0c0d0e0f00",
            "000102030405060708090a0b0c0d0e0g",
            "0 0102030405060708090a0b0c0d0e0f",
        ] {
            assert_eq!(Keys::from_hex(bad, bad), Err(SecurityError::BadKey), "{bad:?}");
        }
    }

    #[test]
    fn security_control_byte() {
        assert_eq!(parse_sc(0x10), Ok((true, false)));
        assert_eq!(parse_sc(0x20), Ok((false, true)));
        assert_eq!(parse_sc(0x30), Ok((true, true)));
        // Key set bit (broadcast key) is allowed and authenticated as part of the AAD.
        assert_eq!(parse_sc(0xB0), Ok((true, true)));
        for sc in [0x00, 0x80, 0x31, 0x3F, 0x40, 0x70, 0x11] {
            assert_eq!(parse_sc(sc), Err(SecurityError::UnsupportedSecurityControl(sc)));
        }
        // The SC byte is authenticated: the same payload under another SC fails.
        let p = protect(&keys(), 0x30, &[1; 8], 7, b"abc").expect("protect");
        assert_eq!(unprotect(&keys(), 0xB0, &[1; 8], 7, &p), Err(SecurityError::AuthenticationFailed));
    }

    #[test]
    fn empty_plaintext_and_iv_layout() {
        // Authenticated only over nothing is just the tag; HLS-GMAC is that tag with SC || IC in front.
        let title = [0x4D, 0x4D, 0x4D, 0, 0, 0, 0, 1];
        let challenge = b"P6wRJ21F";
        let f = hls_gmac(&keys(), &title, 1, challenge);
        assert_eq!(f.len(), 17);
        assert_eq!(&f[..5], &[0x10, 0, 0, 0, 1]);
        assert_eq!(iv(&title, 0x0102_0304), [0x4D, 0x4D, 0x4D, 0, 0, 0, 0, 1, 1, 2, 3, 4]);
        assert_eq!(unprotect(&keys(), 0x10, &title, 1, &[0; 11]), Err(SecurityError::Truncated));
        let p = protect(&keys(), 0x10, &title, 1, &[]).expect("protect");
        assert_eq!(p.len(), TAG_LEN);
        assert_eq!(unprotect(&keys(), 0x10, &title, 1, &p), Ok(Vec::new()));
    }
}
