//! Checks of configuration values, shared by every config of the workspace's experiments: each
//! returns a one-line message that names the field and the range it must be in.

/// A count, size or interval: at least 1.
pub fn positive(name: &str, value: usize) -> Result<(), String> {
    if value == 0 {
        return Err(format!("`{name}` is 0; it must be at least 1"));
    }
    Ok(())
}

/// A learning rate, step size or clip: finite and above 0.
pub fn positive_finite(name: &str, value: f64) -> Result<(), String> {
    if !(value.is_finite() && value > 0.0) {
        return Err(format!(
            "`{name}` is {value}; it must be a finite number above 0"
        ));
    }
    Ok(())
}

/// A coefficient that may be switched off: finite and at least 0.
pub fn non_negative_finite(name: &str, value: f64) -> Result<(), String> {
    if !(value.is_finite() && value >= 0.0) {
        return Err(format!(
            "`{name}` is {value}; it must be a finite number, 0 or above"
        ));
    }
    Ok(())
}

/// A discount, probability or mixing weight: in [0, 1].
pub fn unit_interval(name: &str, value: f64) -> Result<(), String> {
    if !(0.0..=1.0).contains(&value) {
        return Err(format!("`{name}` is {value}; it must be between 0 and 1"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_are_named_and_good_ones_pass() {
        assert!(positive("envs", 0).unwrap_err().contains("`envs` is 0"));
        assert!(positive("envs", 1).is_ok());
        for bad in [0.0, -1e-3, f64::NAN, f64::INFINITY] {
            assert!(positive_finite("learning_rate", bad).is_err(), "{bad}");
        }
        assert!(positive_finite("learning_rate", 1e-4).is_ok());
        assert!(non_negative_finite("entropy_coefficient", 0.0).is_ok());
        assert!(non_negative_finite("entropy_coefficient", f64::NAN).is_err());
        assert!(unit_interval("gamma", 1.0).is_ok());
        assert!(unit_interval("gamma", 1.01).is_err());
        assert!(unit_interval("gamma", f64::NAN).is_err());
    }
}
