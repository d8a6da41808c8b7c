//! The continual familiarity stream of Tyulmankov et al. (2022), as the STPN reference generates
//! it (docs/reference.md §6.1): a stream of random ±1 vectors of dimension `d`; at each step `t ≥ R`, with
//! probability `P` the item is replaced by a copy of the item `R` steps earlier and labelled 1
//! ("familiar") — unless that earlier item was itself a repeat (no double repetitions). Other items
//! are labelled 0 ("novel"). The familiar fraction is `P / (1 + P)`, 1/3 at `P = 0.5`, so always
//! answering "novel" scores 2/3 (the chance level).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A generated stream.
#[derive(Clone, Debug, PartialEq)]
pub struct FamiliarityStream {
    /// Item dimension `d`.
    pub dimension: usize,
    /// Items, `[T, d]` row-major, entries ±1.
    pub items: Vec<f32>,
    /// 1 for a repeat of the item `R` steps earlier, 0 for a novel item, `[T]`.
    pub labels: Vec<u8>,
}

impl FamiliarityStream {
    /// A stream of `length` items of dimension `dimension`, repeat interval `interval` (R),
    /// repeat probability `probability` (P), from its own seed.
    pub fn generate(
        length: usize,
        dimension: usize,
        interval: usize,
        probability: f64,
        seed: u64,
    ) -> Self {
        assert!(interval > 0, "the repeat interval must be at least 1");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut items = Vec::with_capacity(length * dimension);
        let mut labels = Vec::with_capacity(length);
        for step in 0..length {
            let repeat =
                step >= interval && labels[step - interval] == 0 && rng.random_bool(probability);
            if repeat {
                let start = (step - interval) * dimension;
                items.extend_from_within(start..start + dimension);
            } else {
                items.extend((0..dimension).map(|_| if rng.random_bool(0.5) { 1.0 } else { -1.0 }));
            }
            labels.push(repeat as u8);
        }
        Self {
            dimension,
            items,
            labels,
        }
    }

    /// The paper's setting: T = 5 000, d = 100, P = 0.5.
    pub fn paper(interval: usize, seed: u64) -> Self {
        Self::generate(5000, 100, interval, 0.5, seed)
    }

    /// Number of items `T`.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the stream has no items.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Item `t`.
    pub fn item(&self, step: usize) -> &[f32] {
        &self.items[step * self.dimension..(step + 1) * self.dimension]
    }

    /// Accuracy of always answering "novel".
    pub fn chance(&self) -> f64 {
        self.labels.iter().filter(|&&label| label == 0).count() as f64 / self.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_copy_the_item_r_steps_earlier_and_never_repeat_a_repeat() {
        for interval in [1, 3, 6] {
            let stream = FamiliarityStream::generate(3000, 20, interval, 0.5, interval as u64);
            for step in 0..stream.len() {
                assert!(stream.item(step).iter().all(|&x| x == 1.0 || x == -1.0));
                if stream.labels[step] == 1 {
                    assert!(step >= interval);
                    assert_eq!(stream.item(step), stream.item(step - interval));
                    assert_eq!(stream.labels[step - interval], 0, "double repeat at {step}");
                }
            }
            assert!(stream.labels[..interval].iter().all(|&label| label == 0));
        }
    }

    #[test]
    fn familiar_fraction_is_one_third_and_chance_two_thirds() {
        let stream = FamiliarityStream::paper(3, 0);
        assert_eq!(stream.items.len(), 5000 * 100);
        // Binomial-like spread: sd ≈ sqrt(p(1-p)/T) ≈ 0.007.
        assert!(
            (stream.chance() - 2.0 / 3.0).abs() < 0.03,
            "chance {}",
            stream.chance()
        );
        let novel = FamiliarityStream::generate(2000, 100, 3, 0.0, 0);
        assert_eq!(novel.chance(), 1.0);
    }

    #[test]
    fn seeded() {
        assert_eq!(
            FamiliarityStream::paper(6, 4),
            FamiliarityStream::paper(6, 4)
        );
        assert_ne!(
            FamiliarityStream::paper(6, 4),
            FamiliarityStream::paper(6, 5)
        );
    }
}
