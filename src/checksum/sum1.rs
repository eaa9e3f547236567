//! `checksum1` (rsync's `get_checksum1`) computed without the byte-serial
//! dependency chain of its definition.
//!
//! For a block `x[0..n]` of signed bytes, `s1 = Σ x[i]` and
//! `s2 = Σ (n - i)·x[i]` (the sum of all prefix sums), both modulo 2^32.
//! Split into chunks of `L` bytes: lane `j` keeps `a[j] = Σ_c x[c·L + j]`
//! and `p[j]`, the sum of `a[j]` as it stood before each chunk. Then
//! `s1 = Σ_j a[j]` and `s2 = L·Σ_j p[j] + Σ_j (L - j)·a[j]`, plus the tail
//! done serially. Everything is wrapping 32-bit arithmetic, so the result is
//! bit-for-bit the serial one (checked against it in `checksum::tests`).
//!
//! The generator runs this over every byte of every basis file (a 500 MB
//! basis is 500 MB of `checksum1`); the serial loop manages about one byte
//! per cycle, the SSE2 path (every x86_64) about four times that and the AVX2
//! path (chosen at run time) about twenty.

/// The definition, one byte at a time (also the tail of the vector paths,
/// and the reference the tests compare them with).
pub(crate) fn serial(block: &[u8], mut s1: u32, mut s2: u32) -> u32 {
    for &b in block {
        s1 = s1.wrapping_add(b as i8 as i32 as u32);
        s2 = s2.wrapping_add(s1);
    }
    (s1 & 0xFFFF).wrapping_add(s2 << 16)
}

pub(super) fn checksum1(block: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        if block.len() >= 64 {
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2 (checked just above).
                return unsafe { x86::avx2(block) };
            }
            return x86::sse2(block);
        }
    }
    serial(block, 0, 0)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    fn hsum<const N: usize>(v: [u32; N]) -> u32 {
        v.iter().fold(0u32, |s, &x| s.wrapping_add(x))
    }

    /// The module's formula, from the lanes of chunks of `L` bytes: `a`
    /// (byte sums), `p` (their sums before each chunk) and `w` (weighted
    /// sums), then the `tail` serially.
    fn finish<const N: usize>(a: [u32; N], p: [u32; N], w: [u32; N], l: u32, tail: &[u8]) -> u32 {
        let s1 = hsum(a);
        let s2 = hsum(p).wrapping_mul(l).wrapping_add(hsum(w));
        super::serial(tail, s1, s2)
    }

    /// 16 bytes per step; SSE2 is part of the x86_64 baseline.
    #[allow(unused_unsafe)] // the intrinsics are safe fns on newer compilers
    pub(crate) fn sse2(block: &[u8]) -> u32 {
        let mut chunks = block.chunks_exact(16);
        let (mut a, mut p, mut w) = ([0u32; 4], [0u32; 4], [0u32; 4]);
        // SAFETY: SSE2 is always present on x86_64; every load reads exactly
        // the 16 bytes of one chunk and every store writes one [u32; 4].
        unsafe {
            let ones = _mm_set1_epi16(1);
            let w_lo = _mm_setr_epi16(16, 15, 14, 13, 12, 11, 10, 9);
            let w_hi = _mm_setr_epi16(8, 7, 6, 5, 4, 3, 2, 1);
            let (mut va, mut vp, mut vw) = (_mm_setzero_si128(), _mm_setzero_si128(), _mm_setzero_si128());
            for c in &mut chunks {
                let x = _mm_loadu_si128(c.as_ptr().cast::<__m128i>());
                // sign-extend the bytes to 16 bits
                let lo = _mm_srai_epi16::<8>(_mm_unpacklo_epi8(x, x));
                let hi = _mm_srai_epi16::<8>(_mm_unpackhi_epi8(x, x));
                vp = _mm_add_epi32(vp, va);
                va = _mm_add_epi32(va, _mm_add_epi32(_mm_madd_epi16(lo, ones), _mm_madd_epi16(hi, ones)));
                vw = _mm_add_epi32(vw, _mm_add_epi32(_mm_madd_epi16(lo, w_lo), _mm_madd_epi16(hi, w_hi)));
            }
            _mm_storeu_si128(a.as_mut_ptr().cast::<__m128i>(), va);
            _mm_storeu_si128(p.as_mut_ptr().cast::<__m128i>(), vp);
            _mm_storeu_si128(w.as_mut_ptr().cast::<__m128i>(), vw);
        }
        // Lanes here hold pairs of byte positions, so the per-lane weights are
        // already folded into `w`; p counts whole 16-byte chunks.
        finish(a, p, w, 16, chunks.remainder())
    }

    /// 32 bytes per step.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    #[allow(unused_unsafe)]
    pub(crate) unsafe fn avx2(block: &[u8]) -> u32 {
        let mut chunks = block.chunks_exact(32);
        let (mut a, mut p, mut w) = ([0u32; 8], [0u32; 8], [0u32; 8]);
        // SAFETY: AVX2 is enabled for this function (the caller checked the
        // CPU); every load reads exactly the 32 bytes of one chunk and every
        // store writes one [u32; 8].
        unsafe {
            let ones8 = _mm256_set1_epi8(1);
            let ones16 = _mm256_set1_epi16(1);
            let weights = _mm256_setr_epi8(
                32, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5,
                4, 3, 2, 1,
            );
            let (mut va, mut vp, mut vw) = (_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256());
            for c in &mut chunks {
                let x = _mm256_loadu_si256(c.as_ptr().cast::<__m256i>());
                vp = _mm256_add_epi32(vp, va);
                // maddubs: unsigned first operand times signed second, adjacent
                // pairs summed to 16 bits (at most 2·32·128, no saturation).
                va = _mm256_add_epi32(va, _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, x), ones16));
                vw = _mm256_add_epi32(vw, _mm256_madd_epi16(_mm256_maddubs_epi16(weights, x), ones16));
            }
            _mm256_storeu_si256(a.as_mut_ptr().cast::<__m256i>(), va);
            _mm256_storeu_si256(p.as_mut_ptr().cast::<__m256i>(), vp);
            _mm256_storeu_si256(w.as_mut_ptr().cast::<__m256i>(), vw);
        }
        finish(a, p, w, 32, chunks.remainder())
    }

    #[cfg(test)]
    pub(crate) fn have_avx2() -> bool {
        std::arch::is_x86_feature_detected!("avx2")
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
pub(crate) use x86::{avx2 as avx2_for_tests, have_avx2, sse2 as sse2_for_tests};
