//! Counter-based randomness: the stream of one view is a pure function of
//! `(seed, epoch, image id, view)`.
//!
//! The tuple is hashed with SplitMix64's finaliser, one word at a time, and the hash seeds a
//! xoshiro256++ generator. No state is shared between views, so the output cannot depend on
//! the thread that computes a view or on the order in which views are computed.

/// SplitMix64: advances `state` and returns the next output (Steele, Lea & Flood 2014).
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn mix(x: u64) -> u64 {
    let mut state = x;
    splitmix64(&mut state)
}

/// The 64-bit key of one view's stream. Each step is a bijection of the running hash xor the
/// next word, so distinct tuples collide only by 64-bit chance.
pub fn stream_key(seed: u64, epoch: u64, id: u64, view: u64) -> u64 {
    let mut h = mix(seed);
    h = mix(h ^ epoch);
    h = mix(h ^ id);
    mix(h ^ view)
}

/// A small, fast generator (xoshiro256++, Blackman & Vigna) for one view.
#[derive(Clone, Debug)]
pub struct ViewRng {
    s: [u64; 4],
}

impl ViewRng {
    /// The generator of image `id`, view `view`, epoch `epoch` under `seed`.
    pub fn for_view(seed: u64, epoch: u64, id: u64, view: u64) -> Self {
        Self::from_key(stream_key(seed, epoch, id, view))
    }

    /// Seeds the state with four SplitMix64 outputs of `key` (never all zero in practice).
    pub fn from_key(key: u64) -> Self {
        let mut state = key;
        let s = [
            splitmix64(&mut state),
            splitmix64(&mut state),
            splitmix64(&mut state),
            splitmix64(&mut state),
        ];
        Self { s }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [lo, hi).
    pub fn uniform_range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Uniform integer in [0, n); `n` must be positive. Lemire's multiply-shift (the bias is
    /// below 2⁻⁶⁴·n, irrelevant for image sizes).
    pub fn below(&mut self, n: usize) -> usize {
        debug_assert!(n > 0);
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// `true` with probability `p` (torchvision's `torch.rand(1) < p`: never for p = 0,
    /// always for p = 1).
    pub fn bernoulli(&mut self, p: f64) -> bool {
        self.uniform() < p
    }

    /// Two independent standard normal samples (Box–Muller).
    pub fn normal_pair(&mut self) -> (f64, f64) {
        // 1 - u lies in (0, 1], so the logarithm is finite.
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        let r = (-2.0 * u1.ln()).sqrt();
        let (sin, cos) = (std::f64::consts::TAU * u2).sin_cos();
        (r * cos, r * sin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_depend_on_every_coordinate() {
        let base = ViewRng::for_view(1, 2, 3, 4).next_u64();
        assert_eq!(base, ViewRng::for_view(1, 2, 3, 4).next_u64());
        for other in [
            ViewRng::for_view(0, 2, 3, 4),
            ViewRng::for_view(1, 0, 3, 4),
            ViewRng::for_view(1, 2, 0, 4),
            ViewRng::for_view(1, 2, 3, 0),
            // swapped coordinates must not collide either
            ViewRng::for_view(1, 3, 2, 4),
        ] {
            assert_ne!(base, other.clone().next_u64());
        }
    }

    #[test]
    fn uniform_and_below_stay_in_range_and_cover_it() {
        let mut rng = ViewRng::from_key(7);
        let mut seen = [0usize; 5];
        let mut sum = 0.0;
        for _ in 0..10_000 {
            let u = rng.uniform();
            assert!((0.0..1.0).contains(&u));
            sum += u;
            seen[rng.below(5)] += 1;
        }
        assert!((sum / 10_000.0 - 0.5).abs() < 0.02);
        assert!(seen.iter().all(|&c| c > 1_700 && c < 2_300), "{seen:?}");
        assert!(!ViewRng::from_key(1).bernoulli(0.0));
        assert!(ViewRng::from_key(1).bernoulli(1.0));
    }

    #[test]
    fn normal_pairs_have_unit_variance() {
        let mut rng = ViewRng::from_key(11);
        let (mut s1, mut s2) = (0.0, 0.0);
        let n = 20_000;
        for _ in 0..n / 2 {
            let (a, b) = rng.normal_pair();
            s1 += a + b;
            s2 += a * a + b * b;
        }
        let mean = s1 / n as f64;
        let var = s2 / n as f64 - mean * mean;
        assert!(mean.abs() < 0.03, "{mean}");
        assert!((var - 1.0).abs() < 0.05, "{var}");
    }
}
