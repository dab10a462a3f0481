//! SHA-1 (FIPS 180-4), only to name Lua scripts for `EVALSHA`. A `const fn`, so each script's
//! digest is computed at compile time and can never drift from its source.

/// The 20-byte digest of `data`.
pub const fn digest(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476, 0xC3D2_E1F0];
    // Message + 0x80 + zero padding + 64-bit bit length, in 64-byte blocks.
    let blocks = (data.len() + 8) / 64 + 1;
    let bit_len = (data.len() as u64).wrapping_mul(8);
    let mut block = 0;
    while block < blocks {
        let mut w = [0u32; 80];
        let mut i = 0;
        while i < 16 {
            let mut word = 0u32;
            let mut j = 0;
            while j < 4 {
                word = (word << 8) | padded_byte(data, bit_len, block * 64 + i * 4 + j, blocks * 64) as u32;
                j += 1;
            }
            w[i] = word;
            i += 1;
        }
        while i < 80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
            i += 1;
        }
        let (mut a, mut b, mut c, mut d, mut e) = (h[0], h[1], h[2], h[3], h[4]);
        i = 0;
        while i < 80 {
            let (f, k) = match i / 20 {
                0 => ((b & c) | (!b & d), 0x5A82_7999),
                1 => (b ^ c ^ d, 0x6ED9_EBA1),
                2 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let t = a.rotate_left(5).wrapping_add(f).wrapping_add(e).wrapping_add(k).wrapping_add(w[i]);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
            i += 1;
        }
        h[0] = h[0].wrapping_add(a);
        h[1] = h[1].wrapping_add(b);
        h[2] = h[2].wrapping_add(c);
        h[3] = h[3].wrapping_add(d);
        h[4] = h[4].wrapping_add(e);
        block += 1;
    }
    let mut out = [0u8; 20];
    let mut i = 0;
    while i < 20 {
        out[i] = (h[i / 4] >> (24 - 8 * (i % 4))) as u8;
        i += 1;
    }
    out
}

/// Byte `i` of the padded message whose total length is `total`.
const fn padded_byte(data: &[u8], bit_len: u64, i: usize, total: usize) -> u8 {
    if i < data.len() {
        data[i]
    } else if i == data.len() {
        0x80
    } else if i >= total - 8 {
        (bit_len >> (8 * (total - 1 - i))) as u8
    } else {
        0
    }
}

/// Lowercase hex of the digest, as Redis prints script SHAs.
pub const fn hex(data: &[u8]) -> [u8; 40] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let d = digest(data);
    let mut out = [0u8; 40];
    let mut i = 0;
    while i < 20 {
        out[2 * i] = DIGITS[(d[i] >> 4) as usize];
        out[2 * i + 1] = DIGITS[(d[i] & 15) as usize];
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::hex;

    fn h(data: &[u8]) -> String {
        String::from_utf8(hex(data).to_vec()).unwrap()
    }

    #[test]
    fn known_vectors() {
        assert_eq!(h(b""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(h(b"abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(
            h(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1"
        );
        assert_eq!(h(&vec![b'a'; 1_000_000]), "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
    }

    #[test]
    fn every_padding_boundary_matches_a_reference() {
        // Lengths around the 55/56/64-byte padding edges, checked against `sha1sum`.
        assert_eq!(h(&[b'x'; 55]), "cef734ba81a024479e09eb5a75b6ddae62e6abf1");
        assert_eq!(h(&[b'x'; 56]), "901305367c259952f4e7af8323f480d59f81335b");
        assert_eq!(h(&[b'x'; 64]), "bb2fa3ee7afb9f54c6dfb5d021f14b1ffe40c163");
    }
}
