//! NaN-safe comparison of numbers: the one way the parity harness and every test measure how far
//! two arrays are apart.
//!
//! `f64::max` returns the other operand when one is NaN, so `fold(0.0, f64::max)` over errors
//! drops a NaN unless it comes last, and a NaN output can pass a tolerance check. Every function
//! here returns NaN as soon as one value or difference is NaN, and a NaN never passes
//! [`within`].

/// The largest of `values`, NaN if any of them is NaN, 0 for none.
pub fn nan_max(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut largest = 0.0f64;
    for value in values {
        if value.is_nan() {
            return f64::NAN;
        }
        largest = largest.max(value);
    }
    largest
}

/// The largest absolute difference `|observed_i − expected_i|`, NaN if any is NaN.
///
/// # Panics
/// If the two have different lengths: comparing arrays of different shapes is a bug of the
/// caller, not a large error.
pub fn max_abs_difference<A, B>(observed: A, expected: B) -> f64
where
    A: IntoIterator,
    A::Item: Into<f64>,
    B: IntoIterator,
    B::Item: Into<f64>,
{
    let (observed, expected): (Vec<f64>, Vec<f64>) = (
        observed.into_iter().map(Into::into).collect(),
        expected.into_iter().map(Into::into).collect(),
    );
    assert_eq!(
        observed.len(),
        expected.len(),
        "compared arrays have different lengths"
    );
    nan_max(observed.iter().zip(&expected).map(|(a, b)| (a - b).abs()))
}

/// The largest absolute difference divided by the largest magnitude of `expected` (the absolute
/// difference itself where `expected` is all zero): a scale-relative error, NaN if any value is.
pub fn relative_difference<A, B>(observed: A, expected: B) -> f64
where
    A: IntoIterator,
    A::Item: Into<f64>,
    B: IntoIterator,
    B::Item: Into<f64>,
{
    let expected: Vec<f64> = expected.into_iter().map(Into::into).collect();
    let scale = nan_max(expected.iter().map(|value| value.abs()));
    let difference = max_abs_difference(observed, expected.iter().copied());
    if scale > 0.0 {
        difference / scale
    } else {
        difference
    }
}

/// Whether `error` is at most `tolerance`; a NaN error never is.
pub fn within(error: f64, tolerance: f64) -> bool {
    error <= tolerance
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nan_anywhere_is_reported() {
        for position in 0..3 {
            let mut observed = vec![1.0, 2.0, 3.0];
            observed[position] = f64::NAN;
            let error = max_abs_difference(observed.clone(), vec![1.0, 2.0, 3.0]);
            assert!(error.is_nan(), "NaN at {position} was dropped: {error}");
            assert!(!within(
                relative_difference(observed, vec![1.0, 2.0, 3.0]),
                1.0
            ));
        }
        assert!(nan_max([0.5, f64::NAN, 0.1]).is_nan());
    }

    #[test]
    fn differences_are_measured() {
        assert_eq!(max_abs_difference([1.0f32, 2.0], [1.0f32, 2.5]), 0.5);
        assert_eq!(relative_difference([1.0, 2.0], [1.0, 4.0]), 0.5);
        assert_eq!(relative_difference([0.5], [0.0]), 0.5);
        assert!(within(0.0, 0.0));
        assert!(!within(1e-9, 1e-10));
    }
}
