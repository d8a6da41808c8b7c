//! What the tests of several modules share.

/// Held by tests that seed a device's generator and draw from it: the generator is shared by
/// every test thread of the process, so two such tests must not interleave.
pub fn seeded_device_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Helpers of the experiment drivers' tests.
pub mod test_support {
    use std::path::PathBuf;

    use crate::run_dir::RunDir;

    /// An empty scratch folder for `experiment`'s test `name`, unique to this process.
    pub fn scratch(experiment: &str, name: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("stpn-{experiment}-{name}-{}", std::process::id()));
        std::fs::remove_dir_all(&path).ok();
        path
    }

    /// The rows of a run's `metrics.csv` without their last column (the timing).
    pub fn metrics_without_timing(run: &RunDir) -> Vec<String> {
        std::fs::read_to_string(run.file("metrics.csv"))
            .unwrap()
            .lines()
            .map(|line| line.rsplit_once(',').unwrap().0.to_string())
            .collect()
    }
}
