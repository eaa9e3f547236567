use super::*;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn c2(kind: CsumType, seed: i32, proper: bool, data: &[u8]) -> String {
    let mut out = [0u8; MAX_DIGEST_LEN];
    let n = checksum2(&SumParams { kind, seed, proper_seed_order: proper }, data, &mut out);
    assert_eq!(n, kind.digest_len());
    hex(&out[..n])
}

fn whole(kind: CsumType, seed: i32, chunks: &[&[u8]]) -> String {
    let mut h = FileHasher::new(&SumParams { kind, seed, proper_seed_order: true });
    for c in chunks {
        h.update(c);
    }
    let mut out = [0u8; MAX_DIGEST_LEN];
    let n = h.finish(&mut out);
    hex(&out[..n])
}

fn unseeded(kind: CsumType, data: &[u8]) -> String {
    let mut out = [0u8; MAX_DIGEST_LEN];
    let n = file_checksum(kind, [data], &mut out);
    hex(&out[..n])
}

/// The vector paths of `checksum1` (sum1.rs) agree with the byte-serial
/// definition for every length around their chunk sizes, unaligned starts,
/// and the extreme byte values (where a 16-bit intermediate could saturate).
#[test]
fn checksum1_vector_paths_match_the_definition() {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let data: Vec<u8> = (0..200_032)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let mut cases: Vec<&[u8]> = Vec::new();
    let lens: Vec<usize> = (0..200).chain([700, 1023, 22_360, 22_367, 131_072, 199_990]).collect();
    for &n in &lens {
        for off in [0usize, 1, 7, 31] {
            cases.push(&data[off..off + n]);
        }
    }
    let extremes: Vec<Vec<u8>> =
        [0x80u8, 0x7f, 0xff, 0x00].iter().map(|&b| vec![b; 1 << 20]).chain([[0x7fu8, 0x80].repeat(1 << 19)]).collect();
    cases.extend(extremes.iter().map(|v| v.as_slice()));
    let mut vector_paths = 0;
    for c in cases {
        let want = sum1::serial(c, 0, 0);
        assert_eq!(checksum1(c), want, "checksum1, len {}", c.len());
        #[cfg(target_arch = "x86_64")]
        {
            assert_eq!(sum1::sse2_for_tests(c), want, "sse2, len {}", c.len());
            vector_paths += 1;
            if sum1::have_avx2() {
                // SAFETY: the CPU has AVX2 (checked just above).
                assert_eq!(unsafe { sum1::avx2_for_tests(c) }, want, "avx2, len {}", c.len());
                vector_paths += 1;
            }
        }
    }
    if cfg!(target_arch = "x86_64") {
        assert!(vector_paths > 0);
    }
}

#[test]
fn checksum1_signed_bytes() {
    // Expected values from a direct python3 transcription of the definition:
    //   v = x-256 if x>=128 else x; s1 += v; s2 += s1 (mod 2^32)
    //   ((s1 & 0xffff) + (s2 << 16)) & 0xffffffff
    assert_eq!(checksum1(b""), 0);
    assert_eq!(checksum1(b"abc"), 0x024a_0126);
    assert_eq!(checksum1(&[0x80, 0xff, 0x01, 0x7f, 0xc3]), 0xfe40_ffc2);
    let v: Vec<u8> = (0..=255u8).cycle().take(768).collect();
    assert_eq!(checksum1(&v), 0xbf80_fe80);
    // An unsigned reading would differ for bytes >= 0x80.
    let unsigned = {
        let (mut s1, mut s2) = (0u32, 0u32);
        for &b in &[0x80u8, 0xff, 0x01, 0x7f, 0xc3] {
            s1 = s1.wrapping_add(b as u32);
            s2 = s2.wrapping_add(s1);
        }
        (s1 & 0xffff).wrapping_add(s2 << 16)
    };
    assert_ne!(unsigned, 0xfe40_ffc2);
}

#[test]
fn names_and_lengths() {
    assert_eq!(CsumType::from_name("XXHASH"), Some(CsumType::Xxh64));
    assert_eq!(CsumType::from_name("xxh128"), Some(CsumType::Xxh128));
    assert_eq!(CsumType::from_name("Md5"), Some(CsumType::Md5));
    assert_eq!(CsumType::from_name("md4"), Some(CsumType::Md4));
    assert_eq!(CsumType::from_name("sha256"), None);
    assert_eq!(CsumType::from_name(""), None);
    for k in [
        CsumType::Md4,
        CsumType::Md5,
        CsumType::Xxh64,
        CsumType::Xxh3,
        CsumType::Xxh128,
        CsumType::Sha1,
        CsumType::None,
    ] {
        assert_eq!(CsumType::from_name(k.name()), Some(k));
    }
    assert_eq!(CsumType::Sha1.digest_len(), 20);
    assert_eq!(CsumType::None.digest_len(), 1);
    assert_eq!(CsumType::Xxh3.digest_len(), 8);
}

#[test]
fn known_answers_unseeded() {
    // RFC 1320 / RFC 1321 / FIPS 180 vectors.
    assert_eq!(unseeded(CsumType::Md4, b"abc"), "a448017aaf21d8525fc10ae87aa6729d");
    assert_eq!(unseeded(CsumType::Md4Old, b""), "31d6cfe0d16ae931b73c59d7e0c089c0");
    assert_eq!(unseeded(CsumType::Md5, b"hello world"), "5eb63bbbe01eeed093cb22bb8f5acdc3");
    assert_eq!(unseeded(CsumType::Sha1, b"abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
    // XXH64("") = 0xEF46DB3751D8E999, XXH3_64("") = 0x2D06800538D394C2, stored LE.
    assert_eq!(unseeded(CsumType::Xxh64, b""), "99e9d85137db46ef");
    assert_eq!(unseeded(CsumType::Xxh3, b""), "c294d3380580062d");
    assert_eq!(unseeded(CsumType::None, b"anything"), "00");
}

#[test]
fn xxh3_rsync_self_test_vector() {
    // checksum.c verify_digest: a 32816-byte pattern fed in four updates
    // must give XXH3_64 0xadbcf16d4678d1de.
    let buf: Vec<u8> = (0..32816).map(|j| b' ' + (j % 96) as u8).collect();
    let mut h = FileHasher::new_unseeded(CsumType::Xxh3);
    for n in [32816, 31152, 32474, 9322] {
        h.update(&buf[..n]);
    }
    let mut out = [0u8; MAX_DIGEST_LEN];
    assert_eq!(h.finish(&mut out), 8);
    assert_eq!(u64::from_le_bytes(out[..8].try_into().unwrap()), 0xadbc_f16d_4678_d1de);
}

#[test]
fn seed_rules() {
    let data = b"block data";
    // seed 0x12345678 -> bytes 78 56 34 12. Expected values from python3 hashlib:
    //   md5(b'\x78\x56\x34\x12' + data), md5(data + b'\x78\x56\x34\x12'), sha1(seed + data)
    let seed = 0x1234_5678;
    assert_eq!(c2(CsumType::Md5, seed, true, data), "b2a32d7dc6d3a5c8cd5dbb74b318b682");
    assert_eq!(c2(CsumType::Md5, seed, false, data), "797d524b8d068b4e90197a9aece20eb9");
    assert_eq!(c2(CsumType::Sha1, seed, true, data), "c45cec56eb8ce8dc6e496957adc739809b8d027b");
    // Seed 0: no seed bytes at all, regardless of order.
    assert_eq!(c2(CsumType::Md5, 0, true, data), unseeded(CsumType::Md5, data));
    assert_eq!(c2(CsumType::Md5, 0, false, data), unseeded(CsumType::Md5, data));
    assert_eq!(c2(CsumType::Md4Old, 0, false, data), unseeded(CsumType::Md4, data));
    // MD4 (both variants) appends the seed.
    let mut cat = data.to_vec();
    cat.extend_from_slice(&seed.to_le_bytes());
    assert_eq!(c2(CsumType::Md4Old, seed, true, data), unseeded(CsumType::Md4, &cat));
    assert_eq!(c2(CsumType::Md4, seed, false, data), unseeded(CsumType::Md4, &cat));
    // xxh: seed is the hash seed, sign-extended.
    let neg = -5i32;
    assert_eq!(
        c2(CsumType::Xxh64, neg, true, data),
        hex(&xxhash_rust::xxh64::xxh64(data, 0xFFFF_FFFF_FFFF_FFFB).to_le_bytes())
    );
    assert_ne!(c2(CsumType::Xxh64, neg, true, data), hex(&xxhash_rust::xxh64::xxh64(data, 0xFFFF_FFFB).to_le_bytes()));
    assert_eq!(
        c2(CsumType::Xxh3, neg, true, data),
        hex(&xxhash_rust::xxh3::xxh3_64_with_seed(data, neg as i64 as u64).to_le_bytes())
    );
    let v = xxhash_rust::xxh3::xxh3_128_with_seed(data, neg as i64 as u64);
    let mut want = (v as u64).to_le_bytes().to_vec();
    want.extend_from_slice(&((v >> 64) as u64).to_le_bytes());
    assert_eq!(c2(CsumType::Xxh128, neg, true, data), hex(&want));
    assert_eq!(c2(CsumType::Xxh128, 0, true, data), unseeded(CsumType::Xxh128, data));
}

#[test]
fn whole_file_seed_rules() {
    let a: &[u8] = b"first chunk ";
    let b: &[u8] = &[0x80u8; 100];
    let mut all = a.to_vec();
    all.extend_from_slice(b);
    // Md4Old: seed bytes first, even when zero.
    let mut s0 = vec![0u8; 4];
    s0.extend_from_slice(&all);
    assert_eq!(whole(CsumType::Md4Old, 0, &[a, b]), unseeded(CsumType::Md4, &s0));
    let mut s1 = (-2i32).to_le_bytes().to_vec();
    s1.extend_from_slice(&all);
    assert_eq!(whole(CsumType::Md4Old, -2, &[a, b]), unseeded(CsumType::Md4, &s1));
    // Every other type ignores the seed for the whole-file sum.
    for k in [CsumType::Md4, CsumType::Md5, CsumType::Xxh64, CsumType::Xxh3, CsumType::Xxh128, CsumType::Sha1] {
        assert_eq!(whole(k, 77, &[a, b]), unseeded(k, &all), "{k:?}");
        assert_eq!(whole(k, 77, &[&all]), unseeded(k, &all), "{k:?}");
    }
    // Incremental == one-shot across odd chunkings (MD4 residue handling).
    let big: Vec<u8> = (0..10_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
    for k in [CsumType::Md4Old, CsumType::Md5, CsumType::Xxh3, CsumType::Xxh128] {
        let mut h = FileHasher::new(&SumParams { kind: k, seed: 9, proper_seed_order: true });
        for c in big.chunks(63) {
            h.update(c);
        }
        let mut o1 = [0u8; MAX_DIGEST_LEN];
        let n = h.finish(&mut o1);
        assert_eq!(hex(&o1[..n]), whole(k, 9, &[&big]));
    }
}

fn head(len: i64, proto: i32, dl: usize, redo: bool, bs: Option<u32>) -> (i32, i32, i32, i32) {
    let h = sum_sizes_sqroot(len, proto, dl, redo, bs);
    (h.count, h.blength, h.s2length, h.remainder)
}

#[test]
fn sum_sizes_boundaries() {
    // Empty file.
    assert_eq!(head(0, 31, 16, false, None), (0, 700, 2, 0));
    // Up to 700*700 the block is 700.
    assert_eq!(head(700 * 700, 31, 16, false, None), (700, 700, 2, 0));
    assert_eq!(head(1, 31, 16, false, None), (1, 700, 2, 1));
    // Just above: sqrt(490001) = 700.0007 -> 700 rounded to 8 = 696 -> max(.,700) = 700.
    assert_eq!(head(700 * 700 + 1, 31, 16, false, None), (701, 700, 2, 1));
    // 1 MiB: sqrt = 1024.
    let h = sum_sizes_sqroot(1 << 20, 31, 16, false, None);
    assert_eq!((h.blength, h.count, h.remainder), (1024, 1024, 0));
    // 10^7: sqrt = 3162.27 -> 3160.
    assert_eq!(sum_sizes_sqroot(10_000_000, 31, 16, false, None).blength, 3160);
    // 2^34 (16 GiB): sqrt = 2^17 -> capped at 1<<17 for proto >= 30, not below.
    assert_eq!(sum_sizes_sqroot(1 << 34, 30, 16, false, None).blength, 1 << 17);
    assert_eq!(sum_sizes_sqroot(1 << 34, 29, 16, false, None).blength, 1 << 17);
    assert_eq!(sum_sizes_sqroot(1 << 40, 30, 16, false, None).blength, 1 << 17);
    assert_eq!(sum_sizes_sqroot(1 << 40, 29, 16, false, None).blength, 1 << 20);
    assert_eq!(sum_sizes_sqroot(1 << 62, 29, 16, false, None).blength, 1 << 29);
    assert_eq!(sum_sizes_sqroot(i64::MAX, 30, 16, false, None).blength, 1 << 17);
    // Block count overflow -> -1 marker.
    assert_eq!(sum_sizes_sqroot(i64::MAX, 31, 16, false, None).count, -1);
    assert_eq!(sum_sizes_sqroot(-1, 31, 16, false, None).count, -1);
    // s2length: b = 10 + 2*floor(log2 len) - floor(log2 blength); s2 = (b-24)/8, clamp [2, min(16,dl)].
    // len 2^30: blength 32768, b = 10 + 60 - 15 = 55 -> (55-24)/8 = 3.
    assert_eq!(sum_sizes_sqroot(1 << 30, 31, 16, false, None).s2length, 3);
    // len 2^40 at proto 30: blength 2^17, b = 10 + 80 - 17 = 73 -> 6.
    assert_eq!(sum_sizes_sqroot(1 << 40, 31, 16, false, None).s2length, 6);
    // len 2^62 at proto 29: blength 2^29, b = 10 + 124 - 29 = 105 -> 10.
    assert_eq!(sum_sizes_sqroot(1 << 62, 29, 16, false, None).s2length, 10);
    // Clamp to the digest length (none = 1 byte).
    assert_eq!(sum_sizes_sqroot(1 << 62, 29, 8, false, None).s2length, 8);
    assert_eq!(sum_sizes_sqroot(1 << 20, 31, 1, false, None).s2length, 1);
    // Redo pass: full length, clamped to digest.
    assert_eq!(sum_sizes_sqroot(1 << 20, 31, 16, true, None).s2length, 16);
    assert_eq!(sum_sizes_sqroot(1 << 20, 31, 20, true, None).s2length, 16);
    assert_eq!(sum_sizes_sqroot(1 << 20, 31, 8, true, None).s2length, 8);
    // Proto < 27: fixed csum_length.
    assert_eq!(sum_sizes_sqroot(1 << 40, 26, 16, false, None).s2length, 2);
    assert_eq!(sum_sizes_sqroot(1 << 40, 26, 8, true, None).s2length, 16);
    // -B.
    assert_eq!(head(10_000, 31, 16, false, Some(4096)), (3, 4096, 2, 10_000 - 8192));
    assert_eq!(sum_sizes_sqroot(10, 31, 16, false, Some(1 << 20)).blength, 1 << 17);
    assert_eq!(sum_sizes_sqroot(10, 31, 16, false, Some(0)).blength, 700);
    // Every computed head validates (except the overflow marker).
    for len in [0i64, 1, 699, 700, 701, 489_999, 490_000, 490_001, 1 << 20, 1 << 33, 1 << 40] {
        for proto in [27, 29, 30, 31, 32] {
            for dl in [1usize, 8, 16, 20] {
                for redo in [false, true] {
                    let h = sum_sizes_sqroot(len, proto, dl, redo, None);
                    h.validate(proto, dl).unwrap_or_else(|e| panic!("{len} {proto} {dl} {redo}: {e}"));
                    assert_eq!(h.covered_len(), len as u64);
                }
            }
        }
    }
}

#[test]
fn sqrt_rounding_matches_definition() {
    // blength = max(700, floor(sqrt(len)) & !7), capped.
    let mut x: i64 = 490_001;
    while x < (1i64 << 36) {
        let want = {
            let r = (x as f64).sqrt() as i64;
            let r = if (r + 1) * (r + 1) <= x {
                r + 1
            } else if r * r > x {
                r - 1
            } else {
                r
            };
            (r & !7).clamp(700, 1 << 17)
        };
        assert_eq!(sum_sizes_sqroot(x, 31, 16, false, None).blength as i64, want, "len {x}");
        x = x * 3 / 2 + 17;
    }
}

#[test]
fn validate_bounds() {
    let ok = SumHead { count: 3, blength: 700, s2length: 16, remainder: 10 };
    assert!(ok.validate(31, 16).is_ok());
    assert!(SumHead { count: -1, ..ok }.validate(31, 16).is_err());
    assert!(SumHead { blength: (1 << 17) + 1, ..ok }.validate(30, 16).is_err());
    assert!(SumHead { blength: (1 << 17) + 1, remainder: 0, ..ok }.validate(29, 16).is_ok());
    assert!(SumHead { blength: 0, remainder: 0, ..ok }.validate(31, 16).is_err());
    assert!(SumHead { count: 0, blength: 0, s2length: 0, remainder: 0 }.validate(31, 16).is_ok());
    assert!(SumHead { s2length: 17, ..ok }.validate(31, 16).is_err());
    assert!(SumHead { s2length: 9, ..ok }.validate(31, 8).is_err());
    assert!(SumHead { s2length: -1, ..ok }.validate(31, 16).is_err());
    assert!(SumHead { remainder: 701, ..ok }.validate(31, 16).is_err());
    assert!(SumHead { remainder: 700, ..ok }.validate(31, 16).is_ok());
    assert!(SumHead { remainder: -1, ..ok }.validate(31, 16).is_err());
    assert_eq!(ok.block_len(0), 700);
    assert_eq!(ok.block_len(2), 10);
    assert_eq!(ok.block_len(3), 0);
    assert_eq!(SumHead { remainder: 0, ..ok }.block_len(2), 700);
    assert_eq!(ok.block_offset(2), 1400);
}
