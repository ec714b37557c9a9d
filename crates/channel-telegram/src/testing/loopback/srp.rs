//! The server side of Telegram's SRP 2FA check (<https://core.telegram.org/api/srp>), so
//! that the loopback server verifies `auth.checkPassword` for real instead of trusting it.

use num_bigint::BigUint;
use sha2::{Digest, Sha256, Sha512};

/// Telegram's 2048-bit safe prime for 2FA (and the DH exchange), with generator 3.
pub(crate) const PRIME_HEX: &str = "c71caeb9c6b1c9048e6c522f70f13f73980d40238e3e21c14934d037563d930f48198a0aa7c14058229493d22530f4dbfa336f6e0ac925139543aed44cce7c3720fd51f69458705ac68cd4fe6b6b13abdc9746512969328454f18faf8c595f642477fe96bb2a941d5bcd1d4ac8cc49880708fa9b378e3c4f3a9060bee67cf9a4a4a695811051907e162753b56b0f6b410dba74d8a84b2a14b3144e0ef1284754fd17ed950d5965b4b9dd46582db1178d169c6bc465b0d6ff9ca3928fef5b9ae4e418fc15e83ebea0f87fa9ff5eed70050ded2849f47bf959d956850ce929851f0d8115f635b105ee2e4e15d04b2454bf6f4fadf034b10403119cd8e3b92fcc5b";
pub(crate) const G: i32 = 3;

fn h(parts: &[&[u8]]) -> [u8; 32] {
    let mut d = Sha256::new();
    for p in parts {
        d.update(p);
    }
    d.finalize().into()
}

fn sh(data: &[u8], salt: &[u8]) -> [u8; 32] {
    h(&[salt, data, salt])
}

/// PBKDF2-HMAC-SHA512 with one 64-byte block.
fn pbkdf2_sha512(password: &[u8], salt: &[u8], rounds: u32) -> [u8; 64] {
    const BLOCK: usize = 128;
    let mut key = [0u8; BLOCK];
    if password.len() > BLOCK {
        key[..64].copy_from_slice(&Sha512::digest(password));
    } else {
        key[..password.len()].copy_from_slice(password);
    }
    let mut inner = Sha512::new();
    inner.update(key.map(|b| b ^ 0x36));
    let mut outer = Sha512::new();
    outer.update(key.map(|b| b ^ 0x5c));
    let mac = |data: &[&[u8]]| -> [u8; 64] {
        let mut i = inner.clone();
        for d in data {
            i.update(d);
        }
        let mut o = outer.clone();
        o.update(i.finalize());
        o.finalize().into()
    };
    let mut u = mac(&[salt, &1u32.to_be_bytes()]);
    let mut t = u;
    for _ in 1..rounds {
        u = mac(&[&u]);
        for (t, u) in t.iter_mut().zip(u) {
            *t ^= u;
        }
    }
    t
}

fn pad(n: &BigUint) -> [u8; 256] {
    let bytes = n.to_bytes_be();
    let mut out = [0u8; 256];
    let len = bytes.len().min(256);
    out[256 - len..].copy_from_slice(&bytes[bytes.len() - len..]);
    out
}

/// A 2FA password as the server keeps it: salts and the verifier `v = g^x mod p`.
#[derive(Clone)]
pub(crate) struct Verifier {
    pub(crate) salt1: Vec<u8>,
    pub(crate) salt2: Vec<u8>,
    pub(crate) hint: Option<String>,
    v: BigUint,
}

/// One `account.getPassword` challenge: the server's secret `b` and public `g_b`.
pub(crate) struct Challenge {
    b: BigUint,
    pub(crate) g_b: [u8; 256],
}

pub(crate) fn prime() -> Vec<u8> {
    hex::decode(PRIME_HEX).unwrap_or_default()
}

/// A test password whose `x` is precomputed (`PRECOMPUTED_X`): deriving it takes seconds
/// in a debug build (PBKDF2 with 100 000 rounds).
pub const TEST_PASSWORD: &str = "hunter2";
/// `x = PH2("hunter2", salt1, salt2)` for the fixed salts below.
const PRECOMPUTED_X: &str = "46007a66057280c8a81fe353c97934d0fc78c0a0c79d88ecbee36150fcd4f3e3";

fn salts() -> ([u8; 32], [u8; 16]) {
    let mut salt1 = [0u8; 32];
    let mut salt2 = [0u8; 16];
    for (i, b) in salt1.iter_mut().enumerate() {
        *b = i as u8 + 1;
    }
    for (i, b) in salt2.iter_mut().enumerate() {
        *b = i as u8 + 100;
    }
    (salt1, salt2)
}

impl Verifier {
    pub(crate) fn new(password: &str, hint: Option<String>) -> Self {
        let (salt1, salt2) = salts();
        let x = match hex::decode(PRECOMPUTED_X) {
            Ok(x) if password == TEST_PASSWORD => x,
            _ => {
                let ph1 = sh(&sh(password.as_bytes(), &salt1), &salt2);
                sh(&pbkdf2_sha512(&ph1, &salt1, 100_000), &salt2).to_vec()
            }
        };
        let p = BigUint::from_bytes_be(&prime());
        let v = BigUint::from(G as u32).modpow(&BigUint::from_bytes_be(&x), &p);
        Self { salt1: salt1.to_vec(), salt2: salt2.to_vec(), hint, v }
    }

    fn k(p: &[u8]) -> BigUint {
        BigUint::from_bytes_be(&h(&[p, &pad(&BigUint::from(G as u32))]))
    }

    /// A fresh challenge: `g_b = k·v + g^b mod p`.
    pub(crate) fn challenge(&self) -> Challenge {
        let p_bytes = prime();
        let p = BigUint::from_bytes_be(&p_bytes);
        let mut b = [0u8; 256];
        for chunk in b.chunks_mut(32) {
            let r: [u8; 32] = rand::random();
            chunk.copy_from_slice(&r);
        }
        let b = BigUint::from_bytes_be(&b);
        let g_b = (Self::k(&p_bytes) * &self.v + BigUint::from(G as u32).modpow(&b, &p)) % &p;
        Challenge { b, g_b: pad(&g_b) }
    }

    /// Whether `(A, M1)` proves the password for `challenge`.
    pub(crate) fn verify(&self, challenge: &Challenge, g_a: &[u8], m1: &[u8]) -> bool {
        let p_bytes = prime();
        let p = BigUint::from_bytes_be(&p_bytes);
        let a = BigUint::from_bytes_be(g_a);
        if a == BigUint::ZERO || a >= p {
            return false;
        }
        let g_a = pad(&a);
        let u = BigUint::from_bytes_be(&h(&[&g_a, &challenge.g_b]));
        let s = (a * self.v.modpow(&u, &p)).modpow(&challenge.b, &p);
        let k_a = h(&[&pad(&s)]);
        let h_p = h(&[&p_bytes]);
        let h_g = h(&[&pad(&BigUint::from(G as u32))]);
        let mut xor = [0u8; 32];
        for i in 0..32 {
            xor[i] = h_p[i] ^ h_g[i];
        }
        let expected =
            h(&[&xor, &h(&[&self.salt1]), &h(&[&self.salt2]), &g_a, &challenge.g_b, &k_a]);
        expected.as_slice() == m1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pbkdf2_matches_the_standard_vector() {
        // Python: hashlib.pbkdf2_hmac("sha512", b"x", b"salt", 3)
        assert_eq!(
            hex::encode(pbkdf2_sha512(b"x", b"salt", 3)),
            "d626eebe42a21969b52cfec2503891a502fbe67f7565f2fc020af96ab60beb58\
             b793f2133195b368a6e98ba7496df9b1edd7a3f209fa03354505e8bfbb5656de"
        );
    }
}
