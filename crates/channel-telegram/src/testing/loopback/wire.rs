//! The MTProto 2.0 encrypted layer, server side: message keys, AES-IGE, message framing.
//!
//! Follows the public description at <https://core.telegram.org/mtproto/description>:
//! `x = 0` for what the client sends, `x = 8` for what the server sends.

use std::io::{Read, Write};

use grammers_crypto::aes;
use grammers_tl_types::{Cursor, Deserializable, Serializable};
use sha2::{Digest, Sha256};

/// `msg_container#73f1f8dc`.
pub(crate) const MSG_CONTAINER: u32 = 0x73f1_f8dc;
/// `gzip_packed#3072cfa1`.
pub(crate) const GZIP_PACKED: u32 = 0x3072_cfa1;
/// `rpc_result#f35c6d01`.
pub(crate) const RPC_RESULT: u32 = 0xf35c_6d01;

/// Why a packet from the client was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    /// Shorter than the headers, or not a multiple of 16.
    #[error("malformed packet")]
    Malformed,
    /// The message key does not match the decrypted contents (wrong auth key).
    #[error("message key mismatch")]
    MsgKeyMismatch,
    /// The TL inside could not be read.
    #[error("bad TL: {0}")]
    Tl(String),
}

impl From<grammers_tl_types::deserialize::Error> for WireError {
    fn from(e: grammers_tl_types::deserialize::Error) -> Self {
        WireError::Tl(e.to_string())
    }
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// AES key and IV for a message key, per MTProto 2.0.
fn derive_key_iv(auth_key: &[u8; 256], msg_key: &[u8; 16], x: usize) -> ([u8; 32], [u8; 32]) {
    let a = sha256(&[msg_key, &auth_key[x..x + 36]]);
    let b = sha256(&[&auth_key[40 + x..40 + x + 36], msg_key]);
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&a[..8]);
    key[8..24].copy_from_slice(&b[8..24]);
    key[24..].copy_from_slice(&a[24..]);
    let mut iv = [0u8; 32];
    iv[..8].copy_from_slice(&b[..8]);
    iv[8..24].copy_from_slice(&a[8..24]);
    iv[24..].copy_from_slice(&b[24..]);
    (key, iv)
}

fn msg_key_for(auth_key: &[u8; 256], plaintext: &[u8], x: usize) -> [u8; 16] {
    let large = sha256(&[&auth_key[88 + x..88 + x + 32], plaintext]);
    let mut k = [0u8; 16];
    k.copy_from_slice(&large[8..24]);
    k
}

/// The decrypted header of a client packet and its first message.
#[derive(Debug)]
pub(crate) struct ClientPacket {
    /// The auth key id the client used (echoed back).
    pub key_id: [u8; 8],
    /// The salt the client used.
    pub salt: i64,
    /// The client's session id (echoed back).
    pub session_id: i64,
    /// The top-level message.
    pub message: PlainMessage,
}

/// One MTProto message: id, sequence number, body.
#[derive(Debug, Clone)]
pub(crate) struct PlainMessage {
    pub msg_id: i64,
    #[allow(dead_code)]
    pub seq_no: i32,
    pub body: Vec<u8>,
}

impl PlainMessage {
    /// The constructor id of the body, if it has one.
    pub fn constructor(&self) -> Option<u32> {
        self.body.get(..4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Decrypts one client packet (the payload of a `Full` transport frame).
pub(crate) fn decrypt_client_packet(
    auth_key: &[u8; 256],
    packet: &[u8],
) -> Result<ClientPacket, WireError> {
    if packet.len() < 24 + 32 || !(packet.len() - 24).is_multiple_of(16) {
        return Err(WireError::Malformed);
    }
    let mut key_id = [0u8; 8];
    key_id.copy_from_slice(&packet[..8]);
    let mut msg_key = [0u8; 16];
    msg_key.copy_from_slice(&packet[8..24]);
    let (key, iv) = derive_key_iv(auth_key, &msg_key, 0);
    let mut plain = packet[24..].to_vec();
    aes::ige_decrypt(&mut plain, &key, &iv);
    if msg_key_for(auth_key, &plain, 0) != msg_key {
        return Err(WireError::MsgKeyMismatch);
    }
    let mut cur = Cursor::from_slice(&plain);
    let salt = i64::deserialize(&mut cur)?;
    let session_id = i64::deserialize(&mut cur)?;
    let message = read_message(&mut cur)?;
    Ok(ClientPacket { key_id, salt, session_id, message })
}

fn read_message(cur: &mut Cursor<'_>) -> Result<PlainMessage, WireError> {
    let msg_id = i64::deserialize(cur)?;
    let seq_no = i32::deserialize(cur)?;
    let len = i32::deserialize(cur)?;
    let len = usize::try_from(len).map_err(|_| WireError::Malformed)?;
    if len > 16 * 1024 * 1024 {
        return Err(WireError::Malformed);
    }
    let mut body = vec![0u8; len];
    cur.read_exact(&mut body)?;
    Ok(PlainMessage { msg_id, seq_no, body })
}

/// Splits a message into the messages it carries: a container is opened, gzip is unpacked
/// (recursively); anything else is returned as is.
pub(crate) fn flatten(message: PlainMessage, out: &mut Vec<PlainMessage>) -> Result<(), WireError> {
    match message.constructor() {
        Some(MSG_CONTAINER) => {
            let mut cur = Cursor::from_slice(&message.body[4..]);
            let count = i32::deserialize(&mut cur)?;
            for _ in 0..count.max(0) {
                flatten(read_message(&mut cur)?, out)?;
            }
            Ok(())
        }
        Some(GZIP_PACKED) => {
            let body = gunzip_body(&message.body[4..])?;
            flatten(PlainMessage { body, ..message }, out)
        }
        _ => {
            out.push(message);
            Ok(())
        }
    }
}

/// Unpacks the `packed_data:bytes` of a `gzip_packed` (without its constructor id).
pub(crate) fn gunzip_body(rest: &[u8]) -> Result<Vec<u8>, WireError> {
    let packed = Vec::<u8>::from_bytes(rest)?;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&packed[..])
        .take(16 * 1024 * 1024)
        .read_to_end(&mut out)
        .map_err(|e| WireError::Tl(format!("gzip: {e}")))?;
    Ok(out)
}

/// Wraps `body` in a `gzip_packed`.
pub(crate) fn gzip(body: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writing into a Vec cannot fail.
    let packed = enc.write_all(body).and_then(|_| enc.finish()).unwrap_or_default();
    let mut out = Vec::with_capacity(packed.len() + 8);
    GZIP_PACKED.serialize(&mut out);
    packed.serialize(&mut out);
    out
}

/// Serializes `rpc_result req_msg_id result`.
pub(crate) fn rpc_result(req_msg_id: i64, result: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(result.len() + 12);
    RPC_RESULT.serialize(&mut out);
    req_msg_id.serialize(&mut out);
    out.extend_from_slice(result);
    out
}

/// Server-side state of one connection's encrypted session: ids, sequence, keys.
pub(crate) struct ServerSession {
    auth_key: [u8; 256],
    key_id: [u8; 8],
    salt: i64,
    session_id: i64,
    last_msg_id: i64,
    seq: i32,
}

impl ServerSession {
    /// A session that echoes what the first client packet carried.
    pub fn new(auth_key: [u8; 256], first: &ClientPacket) -> Self {
        Self {
            auth_key,
            key_id: first.key_id,
            salt: first.salt,
            session_id: first.session_id,
            last_msg_id: 0,
            seq: 0,
        }
    }

    /// The client's session id.
    pub fn session_id(&self) -> i64 {
        self.session_id
    }

    /// A new server message id: `1 mod 4` for responses, `3 mod 4` for the rest.
    fn next_msg_id(&mut self, response: bool) -> i64 {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let secs = i64::try_from(now.as_secs()).unwrap_or(0);
        let base = (secs << 32) | (i64::from(now.subsec_nanos()) << 2);
        let want = if response { 1 } else { 3 };
        let mut id = base.max(self.last_msg_id + 1);
        while id.rem_euclid(4) != want {
            id += 1;
        }
        self.last_msg_id = id;
        id
    }

    /// Encrypts one message with `body` into a transport payload.
    pub fn encrypt(&mut self, body: &[u8], response: bool, content_related: bool) -> Vec<u8> {
        let msg_id = self.next_msg_id(response);
        let seq_no = if content_related {
            self.seq += 2;
            self.seq - 1
        } else {
            self.seq
        };
        let mut plain = Vec::with_capacity(body.len() + 64);
        self.salt.serialize(&mut plain);
        self.session_id.serialize(&mut plain);
        msg_id.serialize(&mut plain);
        seq_no.serialize(&mut plain);
        i32::try_from(body.len()).unwrap_or(i32::MAX).serialize(&mut plain);
        plain.extend_from_slice(body);
        // 12..1024 bytes of padding, total a multiple of 16.
        let pad = 16 + (16 - plain.len() % 16);
        let padding: [u8; 32] = rand::random();
        plain.extend_from_slice(&padding[..pad]);
        let msg_key = msg_key_for(&self.auth_key, &plain, 8);
        let (key, iv) = derive_key_iv(&self.auth_key, &msg_key, 8);
        aes::ige_encrypt(&mut plain, &key, &iv);
        let mut out = Vec::with_capacity(plain.len() + 24);
        out.extend_from_slice(&self.key_id);
        out.extend_from_slice(&msg_key);
        out.extend_from_slice(&plain);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_round_trips_through_gunzip() {
        let body = vec![7u8; 5000];
        let packed = gzip(&body);
        assert_eq!(u32::from_le_bytes([packed[0], packed[1], packed[2], packed[3]]), GZIP_PACKED);
        assert_eq!(gunzip_body(&packed[4..]).unwrap(), body);
    }

    #[test]
    fn a_short_packet_is_malformed_not_a_panic() {
        assert!(matches!(decrypt_client_packet(&[0; 256], &[1, 2, 3]), Err(WireError::Malformed)));
        assert!(matches!(
            decrypt_client_packet(&[0; 256], &[0; 24 + 48]),
            Err(WireError::MsgKeyMismatch)
        ));
    }
}
