//! Associative retrieval data (Ba et al. 2016, as the STPN reference generates it; docs/reference.md §3.1).
//!
//! A sequence is nine symbols `k1 v1 k2 v2 k3 v3 ? ? q` over a vocabulary of 37: letters `a`–`z`
//! (indices 0–25) are keys, digits `0`–`9` (26–35) are values, `?` (36) separates. The three keys
//! are distinct, the values are drawn with replacement, the query `q` is one of the three keys,
//! and the target is the value paired with it (a class in 26–35 of the 37 outputs). Chance is
//! 1/10 for a model that always answers some digit.
//!
//! The data are drawn from their own seed, separate from the model's: the reference generated
//! one dataset and reused it for every model seed.

use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Number of symbols (the one-hot input size and the number of classes).
pub const VOCABULARY: usize = 37;
/// Symbols per sequence.
pub const SEQUENCE_LENGTH: usize = 9;
/// Key/value pairs per sequence.
pub const PAIRS: usize = 3;
/// Index of the first key (`a`).
pub const FIRST_KEY: u8 = 0;
/// Number of keys (`a`–`z`).
pub const KEYS: usize = 26;
/// Index of the first value (`0`).
pub const FIRST_VALUE: u8 = 26;
/// Number of values (`0`–`9`).
pub const VALUES: usize = 10;
/// Index of the separator `?`.
pub const SEPARATOR: u8 = 36;

/// Size of the training split in the paper's setting.
pub const TRAIN_SIZE: usize = 100_000;
/// Size of the validation split in the paper's setting.
pub const VALIDATION_SIZE: usize = 10_000;
/// Size of the test split in the paper's setting.
pub const TEST_SIZE: usize = 20_000;

/// One sequence and its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Example {
    /// The nine symbol indices.
    pub symbols: [u8; SEQUENCE_LENGTH],
    /// The index of the value paired with the query.
    pub target: u8,
}

impl Example {
    /// The sequence as text, e.g. `g1o2k3??g`.
    pub fn text(&self) -> String {
        self.symbols
            .iter()
            .map(|&symbol| symbol_char(symbol))
            .collect()
    }
}

/// The character of a symbol index.
pub fn symbol_char(symbol: u8) -> char {
    match symbol {
        0..=25 => (b'a' + symbol) as char,
        26..=35 => (b'0' + symbol - FIRST_VALUE) as char,
        36 => '?',
        _ => '#',
    }
}

/// Draws one example.
pub fn sample_example(rng: &mut impl Rng) -> Example {
    let keys = sample(rng, KEYS, PAIRS);
    let mut symbols = [SEPARATOR; SEQUENCE_LENGTH];
    let mut values = [0u8; PAIRS];
    for (pair, key) in keys.iter().enumerate() {
        values[pair] = FIRST_VALUE + rng.random_range(0..VALUES as u8);
        symbols[2 * pair] = FIRST_KEY + key as u8;
        symbols[2 * pair + 1] = values[pair];
    }
    let queried = rng.random_range(0..PAIRS);
    symbols[SEQUENCE_LENGTH - 1] = symbols[2 * queried];
    Example {
        symbols,
        target: values[queried],
    }
}

/// The three splits of an associative-retrieval dataset.
#[derive(Clone, Debug)]
pub struct ArtDataset {
    /// Training examples (100 000 in the paper).
    pub train: Vec<Example>,
    /// Validation examples (10 000 in the paper), for model selection.
    pub validation: Vec<Example>,
    /// Test examples (20 000 in the paper), for the reported accuracy.
    pub test: Vec<Example>,
}

impl ArtDataset {
    /// Train, validation and test sets drawn in that order from one generator seeded by `seed`.
    pub fn generate(seed: u64, train: usize, validation: usize, test: usize) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut draw = |count: usize| (0..count).map(|_| sample_example(&mut rng)).collect();
        Self {
            train: draw(train),
            validation: draw(validation),
            test: draw(test),
        }
    }

    /// The paper's sizes: 100 000 / 10 000 / 20 000.
    pub fn paper(seed: u64) -> Self {
        Self::generate(seed, TRAIN_SIZE, VALIDATION_SIZE, TEST_SIZE)
    }
}

/// A batch as flat buffers: one-hot inputs time-major `[T, B, 37]` and target class indices `[B]`.
#[derive(Clone, Debug, PartialEq)]
pub struct OneHotBatch {
    /// Number of sequences `B`.
    pub batch: usize,
    /// One-hot symbols, `[T = 9, B, 37]` row-major.
    pub inputs: Vec<f32>,
    /// Class index (26–35) of each sequence's answer, `[B]`.
    pub targets: Vec<i64>,
}

/// One-hot encodes `examples` time-major.
pub fn one_hot(examples: &[Example]) -> OneHotBatch {
    let batch = examples.len();
    let mut inputs = vec![0.0f32; SEQUENCE_LENGTH * batch * VOCABULARY];
    for (row, example) in examples.iter().enumerate() {
        for (step, &symbol) in example.symbols.iter().enumerate() {
            inputs[(step * batch + row) * VOCABULARY + symbol as usize] = 1.0;
        }
    }
    OneHotBatch {
        batch,
        inputs,
        targets: examples
            .iter()
            .map(|example| example.target as i64)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_format(example: &Example) {
        let symbols = example.symbols;
        let keys: Vec<u8> = (0..PAIRS).map(|pair| symbols[2 * pair]).collect();
        for pair in 0..PAIRS {
            assert!(keys[pair] < FIRST_VALUE, "{}", example.text());
            assert!(
                (FIRST_VALUE..SEPARATOR).contains(&symbols[2 * pair + 1]),
                "{}",
                example.text()
            );
        }
        assert!(
            keys[0] != keys[1] && keys[1] != keys[2] && keys[0] != keys[2],
            "{}",
            example.text()
        );
        assert_eq!(&symbols[6..8], &[SEPARATOR, SEPARATOR]);
        let queried = keys
            .iter()
            .position(|&key| key == symbols[8])
            .expect("query is a key");
        assert_eq!(example.target, symbols[2 * queried + 1]);
    }

    #[test]
    fn every_example_has_the_format() {
        let data = ArtDataset::generate(3, 2000, 100, 100);
        data.train
            .iter()
            .chain(&data.validation)
            .chain(&data.test)
            .for_each(check_format);
        assert_eq!(data.train[0].text().len(), 9);
    }

    #[test]
    fn same_seed_same_data_other_seed_other_data() {
        let a = ArtDataset::generate(7, 500, 50, 50);
        let b = ArtDataset::generate(7, 500, 50, 50);
        let c = ArtDataset::generate(8, 500, 50, 50);
        assert_eq!(a.train, b.train);
        assert_eq!(a.test, b.test);
        assert_ne!(a.train, c.train);
    }

    /// Keys, values and the queried position are uniform (chi-square at p ≈ 0.001 bounds).
    #[test]
    fn statistics_are_uniform() {
        let data = ArtDataset::generate(11, 60_000, 0, 0);
        let mut keys = [0usize; KEYS];
        let mut values = [0usize; VALUES];
        let mut query_position = [0usize; PAIRS];
        let mut repeated_values = 0usize;
        for example in &data.train {
            for pair in 0..PAIRS {
                keys[example.symbols[2 * pair] as usize] += 1;
                values[(example.symbols[2 * pair + 1] - FIRST_VALUE) as usize] += 1;
            }
            let position = (0..PAIRS)
                .position(|pair| example.symbols[2 * pair] == example.symbols[8])
                .unwrap();
            query_position[position] += 1;
            let v = [example.symbols[1], example.symbols[3], example.symbols[5]];
            if v[0] == v[1] || v[1] == v[2] || v[0] == v[2] {
                repeated_values += 1;
            }
        }
        let chi_square = |counts: &[usize]| {
            let expected = counts.iter().sum::<usize>() as f64 / counts.len() as f64;
            counts
                .iter()
                .map(|&c| (c as f64 - expected).powi(2) / expected)
                .sum::<f64>()
        };
        assert!(chi_square(&keys) < 52.6, "keys {keys:?}"); // 25 degrees of freedom
        assert!(chi_square(&values) < 27.9, "values {values:?}"); // 9
        assert!(
            chi_square(&query_position) < 13.8,
            "queries {query_position:?}"
        ); // 2
        // Values are drawn with replacement: P(some repeat among 3 of 10) = 1 − 0.9·0.8 = 0.28.
        let fraction = repeated_values as f64 / data.train.len() as f64;
        assert!((fraction - 0.28).abs() < 0.01, "repeat fraction {fraction}");
    }

    #[test]
    fn one_hot_is_time_major() {
        let data = ArtDataset::generate(1, 4, 0, 0);
        let batch = one_hot(&data.train);
        assert_eq!(batch.inputs.len(), SEQUENCE_LENGTH * 4 * VOCABULARY);
        assert_eq!(
            batch.inputs.iter().sum::<f32>(),
            (SEQUENCE_LENGTH * 4) as f32
        );
        for (row, example) in data.train.iter().enumerate() {
            for step in 0..SEQUENCE_LENGTH {
                let offset = (step * 4 + row) * VOCABULARY;
                assert_eq!(batch.inputs[offset + example.symbols[step] as usize], 1.0);
            }
            assert_eq!(batch.targets[row], example.target as i64);
        }
    }
}
