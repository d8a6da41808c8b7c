//! numpy's `SeedSequence`, as far as ale-py uses it to seed ALE.
//!
//! ale-py's `AtariEnv.seed_game(seed)` does `np.random.SeedSequence(seed).generate_state(2)` and
//! gives the second word to ALE as `random_seed` (through `np.int32`, so a word ≥ 2³¹ becomes
//! negative) — the first seeds numpy's generator for the stochastic frame skip and Gymnasium's
//! no-op starts, which this crate does not reproduce. Implementing the derivation here makes
//! `Pong::reset(Some(seed))` seed ALE exactly as `gymnasium.make("PongNoFrameskip-v4").reset(seed=seed)`
//! does. (With `repeat_action_probability` 0, ALE's generator is drawn from but never changes
//! what happens, so for PongNoFrameskip-v4 the seed does not matter to ALE at all; it matters for
//! sticky actions.)
//!
//! The algorithm is numpy's `bit_generator.pyx` (`_coerce_to_uint32_array`, `mix_entropy`,
//! `generate_state`), for an entropy that is one non-negative integer and no spawn key.

const POOL_SIZE: usize = 4;
const INIT_A: u32 = 0x43b0_d7e5;
const MULT_A: u32 = 0x931e_8875;
const INIT_B: u32 = 0x8b51_f9dd;
const MULT_B: u32 = 0x58f3_8ded;
const MIX_MULT_L: u32 = 0xca01_f9dd;
const MIX_MULT_R: u32 = 0x4973_f715;
const XSHIFT: u32 = 16;

/// `SeedSequence(entropy)` with no spawn key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedSequence {
    pool: [u32; POOL_SIZE],
}

impl SeedSequence {
    /// numpy's `SeedSequence(entropy)`: the entropy pool mixed from a non-negative integer.
    pub fn new(entropy: u64) -> Self {
        // `_int_to_uint32_array`: little-endian 32-bit words, at least one.
        let words: Vec<u32> = if entropy >> 32 == 0 {
            vec![entropy as u32]
        } else {
            vec![entropy as u32, (entropy >> 32) as u32]
        };
        let mut hash_const = INIT_A;
        let mut hashmix = |value: u32| {
            let mut value = value ^ hash_const;
            hash_const = hash_const.wrapping_mul(MULT_A);
            value = value.wrapping_mul(hash_const);
            value ^ (value >> XSHIFT)
        };
        let mix = |x: u32, y: u32| {
            let result = MIX_MULT_L
                .wrapping_mul(x)
                .wrapping_sub(MIX_MULT_R.wrapping_mul(y));
            result ^ (result >> XSHIFT)
        };
        let mut pool = [0u32; POOL_SIZE];
        for (index, word) in pool.iter_mut().enumerate() {
            *word = hashmix(words.get(index).copied().unwrap_or(0));
        }
        for source in 0..POOL_SIZE {
            for target in 0..POOL_SIZE {
                if source != target {
                    pool[target] = mix(pool[target], hashmix(pool[source]));
                }
            }
        }
        // Entropy longer than the pool (never, for a u64) would be mixed in here.
        Self { pool }
    }

    /// `generate_state(n_words)` with dtype uint32.
    pub fn generate_state(&self, words: usize) -> Vec<u32> {
        let mut hash_const = INIT_B;
        (0..words)
            .map(|index| {
                let mut value = self.pool[index % POOL_SIZE] ^ hash_const;
                hash_const = hash_const.wrapping_mul(MULT_B);
                value = value.wrapping_mul(hash_const);
                value ^ (value >> XSHIFT)
            })
            .collect()
    }
}

/// The `random_seed` that ale-py 0.12.1 gives ALE for a Gymnasium seed:
/// `np.int32(SeedSequence(seed).generate_state(2)[1])`.
pub fn ale_py_random_seed(seed: u64) -> i32 {
    SeedSequence::new(seed).generate_state(2)[1] as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values printed by numpy 2.4.6:
    /// `np.random.SeedSequence(s).generate_state(4)` for s = 0 and s = 2**40 + 7.
    #[test]
    fn matches_numpy() {
        assert_eq!(
            SeedSequence::new(0).generate_state(4),
            NUMPY_STATE_0.to_vec()
        );
        assert_eq!(
            SeedSequence::new((1 << 40) + 7).generate_state(4),
            NUMPY_STATE_BIG.to_vec()
        );
        assert_eq!(ale_py_random_seed(0), -617818137);
        assert_eq!(ale_py_random_seed(1), 1731038949);
    }

    const NUMPY_STATE_0: [u32; 4] = [2968811710, 3677149159, 745650761, 2884920346];
    const NUMPY_STATE_BIG: [u32; 4] = [238885397, 226915041, 1322230113, 2599373530];
}
