//! Runs stopped the hard way (kill -9 at random points) and the soft way (Ctrl-C), then resumed
//! with `--resume` until they finish. A resumed run loses at most the work since its last
//! checkpoint; for the deterministic tasks (associative retrieval, familiarity, maze) it ends
//! with exactly the numbers of an uninterrupted run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn spawn(args: &[String]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_stpn-bench"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("stpn-bench starts")
}

/// Runs to the end; returns the wall-clock time.
fn run_through(args: &[String]) -> Duration {
    let started = Instant::now();
    let output = spawn(args).wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    started.elapsed()
}

/// A small deterministic generator for the kill times (the test must be repeatable).
struct Lcg(u64);

impl Lcg {
    fn next_fraction(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The rows of `metrics.csv` without their last column (the timing).
fn metrics(folder: &Path) -> Vec<String> {
    std::fs::read_to_string(folder.join("metrics.csv"))
        .unwrap()
        .lines()
        .map(|line| line.rsplit_once(',').unwrap().0.to_string())
        .collect()
}

/// `summary.json` without the fields that measure time.
fn summary(folder: &Path) -> serde_json::Value {
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(folder.join("summary.json")).unwrap())
            .unwrap();
    for timing in ["train_seconds", "seconds_per_step", "steps_per_second"] {
        json.as_object_mut().unwrap().remove(timing);
    }
    json
}

/// Kills a fresh run of `args` (with `--out folder`) at random points with SIGKILL, or stops it
/// with SIGINT, resuming after each stop, until it finishes; returns how many stops landed.
fn interrupt_until_done(args: &[String], folder: &Path, length: Duration, seed: u64) -> usize {
    let mut random = Lcg(seed);
    let mut stops = 0;
    for attempt in 0.. {
        let mut command = args.to_vec();
        command.extend(["--out".into(), folder.display().to_string()]);
        // A stop before the run wrote its config leaves nothing to resume: start it afresh.
        if folder.join("config.json").exists() {
            command.push("--resume".into());
        }
        let mut child = spawn(&command);
        // Stop three times, then let it finish.
        if attempt < 3 {
            let delay = length.mul_f64(0.15 + 0.7 * random.next_fraction());
            let soft = attempt == 1;
            let deadline = Instant::now() + delay;
            while Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            if child.try_wait().unwrap().is_none() {
                if soft {
                    Command::new("kill")
                        .args(["-INT", &child.id().to_string()])
                        .status()
                        .unwrap();
                } else {
                    child.kill().unwrap();
                }
                let output = child.wait_with_output().unwrap();
                let text = String::from_utf8_lossy(&output.stderr);
                if soft && output.status.code() == Some(130) {
                    assert!(
                        text.contains("checkpoint saved; continue with --resume"),
                        "{text}"
                    );
                }
                assert!(!text.contains("panicked"), "{text}");
                stops += 1;
                continue;
            }
        }
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{command:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        if folder.join("summary.json").exists() {
            break;
        }
    }
    stops
}

fn scratch(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("stpn-interrupt-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&path).ok();
    std::fs::create_dir_all(&path).unwrap();
    path
}

/// A task with its config in a scratch folder, and the uninterrupted run it is measured against.
struct Trial {
    root: PathBuf,
    /// The command line without `--out`.
    args: Vec<String>,
    /// The uninterrupted run's folder.
    straight: PathBuf,
    /// Its wall-clock time.
    length: Duration,
}

impl Trial {
    fn run_straight(task: &str, config: &str) -> Self {
        let root = scratch(task);
        let file = root.join("config-file.json");
        std::fs::write(&file, config).unwrap();
        let args: Vec<String> = [task, "--config", &file.display().to_string(), "--quiet"]
            .into_iter()
            .map(String::from)
            .collect();
        let straight = root.join("straight");
        let mut straight_args = args.clone();
        straight_args.extend(["--out".into(), straight.display().to_string()]);
        let length = run_through(&straight_args);
        Self {
            root,
            args,
            straight,
            length,
        }
    }
}

#[test]
fn deterministic_tasks_resume_to_the_uninterrupted_numbers() {
    let tasks = [
        (
            "art",
            r#"{"model": "stpn_r", "hidden_size": 6, "equations": "paper", "epochs": 24,
                "train_size": 1280, "validation_size": 256, "test_size": 256}"#,
        ),
        (
            "familiarity",
            r#"{"net": "hebbnet", "hidden_size": 8, "mode": "inf", "repeat": 2, "train_steps": 1000,
                "items": 100, "dimension": 10, "log_every": 16}"#,
        ),
        (
            "maze",
            r#"{"core": "stpn", "hidden_size": 4, "batch_size": 2, "iterations": 72, "burn_in": 2,
                "checkpoint_every": 3}"#,
        ),
    ];
    for (index, (task, config)) in tasks.into_iter().enumerate() {
        let Trial {
            root,
            args,
            straight,
            length,
        } = Trial::run_straight(task, config);
        eprintln!("{task}: an uninterrupted run takes {length:?}");
        let interrupted = root.join("interrupted");
        // The machine's load changes between runs: a run that finished before its stops were due
        // is run again from scratch with the stops earlier.
        let mut stops = 0;
        let mut scale = 1.0;
        for _ in 0..6 {
            std::fs::remove_dir_all(&interrupted).ok();
            let expected = length.mul_f64(scale);
            stops = interrupt_until_done(&args, &interrupted, expected, 7 + index as u64);
            if stops > 0 {
                break;
            }
            scale /= 2.0;
        }
        assert!(stops > 0, "{task}: no stop landed in a {length:?} run");
        assert_eq!(
            metrics(&straight),
            metrics(&interrupted),
            "{task}: metrics.csv"
        );
        assert_eq!(
            summary(&straight),
            summary(&interrupted),
            "{task}: summary.json"
        );
        std::fs::remove_dir_all(&root).ok();
    }
}

/// InvertedPendulum and Pong resume from their checkpoint's weights, optimiser and progress with
/// fresh episodes (the simulators' mid-episode state is not saved): the resumed run finishes its
/// budget, but is not bit-identical to an uninterrupted one.
#[test]
fn rl_tasks_resume_and_finish_their_budget() {
    let mut tasks = Vec::new();
    if cfg!(feature = "mujoco") {
        tasks.push((
            "pendulum",
            r#"{"core": "stpnf", "hidden_size": 8, "total_steps": 4096, "checkpoint_every": 1,
                "ppo": {"rollout_length": 256, "epochs": 1}}"#,
            4096,
        ));
    }
    if cfg!(feature = "atari") {
        tasks.push((
            "pong",
            r#"{"core": "lstm", "hidden_size": 4, "envs": 2, "total_steps": 1600, "checkpoint_every": 1}"#,
            1600,
        ));
    }
    for (index, (task, config, budget)) in tasks.into_iter().enumerate() {
        let Trial {
            root,
            args,
            straight,
            length,
        } = Trial::run_straight(task, config);
        let interrupted = root.join("interrupted");
        interrupt_until_done(&args, &interrupted, length, 11 + index as u64);
        assert_eq!(summary(&interrupted)["env_steps"], budget, "{task}");
        let rows = metrics(&interrupted);
        assert_eq!(
            rows.len(),
            metrics(&straight).len(),
            "{task}: one row per iteration"
        );
        std::fs::remove_dir_all(&root).ok();
    }
}
