//! The command line as a user meets it: exit codes and one-line errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn stpn_bench(args: &[&str], environment: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_stpn-bench"));
    command.args(args);
    for (key, value) in environment {
        command.env(key, value);
    }
    command.output().expect("stpn-bench runs")
}

fn golden_case(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../stpn-model/tests/golden")
        .join(name)
        .display()
        .to_string()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A failure is one `error:` line, never a panic or a backtrace.
fn assert_one_line_error(output: &Output, needle: &str) {
    assert!(!output.status.success());
    let text = stderr(output);
    let lines: Vec<&str> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    assert!(lines[0].starts_with("error:"), "{text}");
    assert!(lines[0].contains(needle), "{text}");
    assert!(
        !text.contains("panicked") && !text.contains("backtrace"),
        "{text}"
    );
}

#[test]
fn golden_reports_and_passes_the_repository_cases() {
    let output = stpn_bench(
        &[
            "golden",
            &golden_case("stpn_r_pre_s0.json"),
            &golden_case("lstm_art_s0.json"),
        ],
        &[],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", stderr(&output));
    for quantity in [
        "hidden",
        "energy_per_unit",
        "state.F",
        "grad.lambda",
        "grad.weight",
    ] {
        assert!(stdout.contains(quantity), "{stdout}");
    }
    assert!(stdout.contains("2 of 2 cases pass on flex"), "{stdout}");
}

#[test]
fn golden_fails_on_a_case_this_code_does_not_reproduce() {
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(golden_case("rnn_art_s0.json")).unwrap())
            .unwrap();
    json["hidden"][0][0][0] = serde_json::Value::from(0.5);
    let path = std::env::temp_dir().join(format!("stpn-tampered-{}.json", std::process::id()));
    std::fs::write(&path, json.to_string()).unwrap();
    let output = stpn_bench(&["golden", path.to_str().unwrap()], &[]);
    std::fs::remove_file(&path).ok();
    assert!(String::from_utf8_lossy(&output.stdout).contains("FAIL"));
    assert_one_line_error(&output, "exceed their tolerance: rnn_art");
}

#[test]
fn unknown_backend_is_a_one_line_error() {
    let output = stpn_bench(&["--backend", "rocm", "golden", "x.json"], &[]);
    assert!(
        stderr(&output).contains("unknown backend `rocm`; choose one of flex, ndarray, wgpu, cuda")
    );
    assert!(!output.status.success());
}

#[test]
fn missing_file_is_a_one_line_error() {
    let output = stpn_bench(&["golden", "no-such-case.json"], &[]);
    assert_one_line_error(&output, "cannot read no-such-case.json");
}

/// CUDA is not in the default build (it needs a download while building): asking for it says how
/// to get it, in one line.
#[test]
fn cuda_not_compiled_is_a_one_line_error() {
    if cfg!(feature = "cuda") {
        return; // a build with CUDA runs it (or says that no device was found)
    }
    let output = stpn_bench(
        &[
            "--backend",
            "cuda",
            "golden",
            &golden_case("rnn_art_s0.json"),
        ],
        &[],
    );
    assert_one_line_error(
        &output,
        "backend `cuda` is not compiled into this build; rebuild with `--features stpn-bench/cuda`",
    );
}

#[test]
fn wgpu_without_an_adapter_is_a_one_line_error() {
    // Ask wgpu for a GPU this machine does not have.
    let output = stpn_bench(
        &[
            "--backend",
            "wgpu",
            "golden",
            &golden_case("rnn_art_s0.json"),
        ],
        &[("CUBECL_WGPU_DEFAULT_DEVICE", "DiscreteGpu(99)")],
    );
    assert_one_line_error(&output, "backend `wgpu` found no usable GPU adapter");
}

/// Every file under `folder` (relative path and bytes), or `None` if it does not exist: what a
/// failed command must leave as it found it.
fn snapshot(folder: &Path) -> Option<Vec<(PathBuf, Vec<u8>)>> {
    fn walk(root: &Path, folder: &Path, files: &mut Vec<(PathBuf, Vec<u8>)>) {
        for entry in std::fs::read_dir(folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, files);
                files.push((
                    path.strip_prefix(root).unwrap().to_path_buf(),
                    b"<dir>".to_vec(),
                ));
            } else {
                let bytes = std::fs::read(&path).unwrap();
                files.push((path.strip_prefix(root).unwrap().to_path_buf(), bytes));
            }
        }
    }
    if !folder.exists() {
        return None;
    }
    if folder.is_file() {
        return Some(vec![(PathBuf::new(), std::fs::read(folder).unwrap())]);
    }
    let mut files = Vec::new();
    walk(folder, folder, &mut files);
    files.sort();
    Some(files)
}

/// One bad input: what is in the folder before, the command, and the words its error must have.
struct BadInput {
    name: &'static str,
    /// Files to write into the scratch folder first (relative path, contents).
    files: Vec<(&'static str, String)>,
    /// The command line; `{dir}` is the scratch folder.
    args: Vec<&'static str>,
    /// Words of the error line.
    needle: &'static str,
}

fn case(name: &'static str, args: &[&'static str], needle: &'static str) -> BadInput {
    BadInput {
        name,
        files: Vec::new(),
        args: args.to_vec(),
        needle,
    }
}

impl BadInput {
    fn with(mut self, path: &'static str, contents: impl Into<String>) -> Self {
        self.files.push((path, contents.into()));
        self
    }
}

/// A run folder that stopped before its first checkpoint, or that has one.
const MAZE_CONFIG: &str = r#"{"core": "stpn", "hidden_size": 4, "batch_size": 2, "iterations": 3}"#;

/// The table of bad inputs: every one fails with a one-line error, a non-zero exit and no
/// panic, before anything is written, and leaves the folder (and whatever was in it) unchanged.
#[test]
fn bad_inputs_fail_with_one_line_and_change_nothing() {
    let engines = cfg!(feature = "mujoco") && cfg!(feature = "atari");
    let mut cases = vec![
        case("maze lr NaN", &["maze", "--lr", "NaN", "--out", "{dir}/run"], "`learning_rate` is NaN"),
        case("maze lr 0", &["maze", "--lr", "0", "--out", "{dir}/run"], "`learning_rate` is 0"),
        case("maze lr negative", &["maze", "--lr=-1e-3", "--out", "{dir}/run"], "`learning_rate` is -0.001"),
        case("maze lr infinite", &["maze", "--lr", "inf", "--out", "{dir}/run"], "`learning_rate` is inf"),
        case("maze batch 0", &["maze", "--batch", "0", "--out", "{dir}/run"], "`batch_size` is 0"),
        case("maze iterations 0", &["maze", "--iterations", "0", "--out", "{dir}/run"], "`iterations` is 0"),
        case("maze hidden 0", &["maze", "--hidden", "0", "--out", "{dir}/run"], "`hidden_size` is 0"),
        case("art epochs 0", &["art", "--epochs", "0", "--out", "{dir}/run"], "`epochs` is 0"),
        case("art train size below a batch", &["art", "--train-size", "3", "--out", "{dir}/run"], "smaller than one batch"),
        case("familiarity repeat 0", &["familiarity", "--repeat", "0", "--out", "{dir}/run"], "repeat interval 0"),
        case("familiarity updates 0", &["familiarity", "--updates", "0", "--out", "{dir}/run"], "`train_steps` is 0"),
        case("core without hidden", &["art", "--core", "lstm"], "--hidden"),
        case("resume without out", &["maze", "--resume"], "--out"),
        case("config and core", &["maze", "--config", "{dir}/c.json", "--core", "lstm"], "cannot be used with"),
        case("config missing", &["maze", "--config", "{dir}/none.json", "--out", "{dir}/run"], "cannot read"),
        case("config not JSON", &["maze", "--config", "{dir}/c.json", "--out", "{dir}/run"], "malformed")
            .with("c.json", "core: stpn"),
        case("config unknown key", &["maze", "--config", "{dir}/c.json", "--out", "{dir}/run"], "unknown field `oops`")
            .with("c.json", r#"{"core": "stpn", "hidden_size": 5, "iterations": 1, "oops": 1}"#),
        case("config unknown nested key", &["maze", "--config", "{dir}/c.json", "--out", "{dir}/run"], "unknown field `gama`")
            .with("c.json", r#"{"core": "stpn", "hidden_size": 5, "iterations": 1, "loss": {"gama": 0.9, "value_coefficient": 0.1, "concentration_penalty": 0.03, "baseline": "shared"}}"#),
        case("config negative size", &["maze", "--config", "{dir}/c.json", "--out", "{dir}/run"], "malformed")
            .with("c.json", r#"{"core": "stpn", "hidden_size": -5, "iterations": 1}"#),
        case("config checkpoint_every 0", &["maze", "--config", "{dir}/c.json", "--out", "{dir}/run"], "`checkpoint_every` is 0")
            .with("c.json", r#"{"core": "stpn", "hidden_size": 5, "iterations": 1, "checkpoint_every": 0}"#),
        case("config gamma out of range", &["maze", "--config", "{dir}/c.json", "--out", "{dir}/run"], "`loss.gamma` is 1.5")
            .with("c.json", r#"{"core": "stpn", "hidden_size": 5, "iterations": 1, "loss": {"gamma": 1.5, "value_coefficient": 0.1, "concentration_penalty": 0.03, "baseline": "shared"}}"#),
        case("familiarity probability", &["familiarity", "--config", "{dir}/c.json", "--out", "{dir}/run"], "`probability` is 1.5")
            .with("c.json", r#"{"net": "hebbnet", "hidden_size": 10, "mode": "inf", "repeat": 3, "train_steps": 5, "probability": 1.5}"#),
        case("out is a folder with other files", &["maze", "--out", "{dir}"], "not an empty folder")
            .with("notes.txt", "keep me")
            .with("last/model.bpk", "not ours"),
        case("out is a file", &["maze", "--out", "{dir}/notes.txt"], "not an empty folder")
            .with("notes.txt", "keep me"),
        case("out holds a run", &["maze", "--out", "{dir}"], "already holds a run")
            .with("config.json", MAZE_CONFIG),
        case("resume a folder without a run", &["maze", "--out", "{dir}", "--resume"], "not a run folder")
            .with("notes.txt", "keep me"),
        case("resume with a bad config", &["maze", "--out", "{dir}", "--resume"], "`learning_rate` is 0")
            .with("config.json", r#"{"core": "stpn", "hidden_size": 4, "batch_size": 2, "iterations": 3, "learning_rate": 0}"#)
            .with("last/state.json", "{}"),
        case("resume validates overrides", &["maze", "--out", "{dir}", "--resume", "--iterations", "0"], "`iterations` is 0")
            .with("config.json", MAZE_CONFIG)
            .with("last/state.json", "{}"),
        case("resume a malformed config", &["maze", "--out", "{dir}", "--resume"], "malformed")
            .with("config.json", "{")
            .with("last/state.json", "{}"),
        case("evaluate a missing folder", &["maze-eval", "{dir}/nothing"], "not a run folder"),
        case("evaluate a folder without a checkpoint", &["maze-eval", "{dir}"], "no checkpoint")
            .with("config.json", MAZE_CONFIG),
        case("golden on a non-case", &["golden", "{dir}/c.json"], "not a parity case")
            .with("c.json", "{}"),
    ];
    if engines {
        cases.extend([
            case("pong envs 0", &["pong", "--envs", "0", "--out", "{dir}/run"], "`envs` is 0"),
            case("pong fragment 0", &["pong", "--config", "{dir}/c.json", "--out", "{dir}/run"], "`a2c.fragment_length` is 0")
                .with("c.json", r#"{"core": "stpn", "hidden_size": 4, "total_steps": 100, "a2c": {"fragment_length": 0}}"#),
            case("pong checkpoint_every 0", &["pong", "--config", "{dir}/c.json", "--out", "{dir}/run"], "`checkpoint_every` is 0")
                .with("c.json", r#"{"core": "stpn", "hidden_size": 4, "total_steps": 100, "checkpoint_every": 0}"#),
            case("pendulum sequence 0", &["pendulum", "--config", "{dir}/c.json", "--out", "{dir}/run"], "`ppo.sequence_length` is 0")
                .with("c.json", r#"{"core": "stpnf", "ppo": {"sequence_length": 0}}"#),
            case("pendulum checkpoint_every 0", &["pendulum", "--config", "{dir}/c.json", "--out", "{dir}/run"], "`checkpoint_every` is 0")
                .with("c.json", r#"{"core": "stpnf", "checkpoint_every": 0}"#),
            case("pendulum steps 0", &["pendulum", "--env-steps", "0", "--out", "{dir}/run"], "`total_steps` is 0"),
            case("pendulum lr infinite", &["pendulum", "--config", "{dir}/c.json", "--out", "{dir}/run"], "number out of range")
                .with("c.json", r#"{"core": "stpnf", "ppo": {"learning_rate": 1e999}}"#),
        ]);
    }
    let root = std::env::temp_dir().join(format!("stpn-cli-bad-inputs-{}", std::process::id()));
    for (index, bad) in cases.iter().enumerate() {
        let dir = root.join(index.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        for (path, contents) in &bad.files {
            let path = dir.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, contents).unwrap();
        }
        let before = snapshot(&dir);
        let args: Vec<String> = bad
            .args
            .iter()
            .map(|arg| arg.replace("{dir}", &dir.display().to_string()))
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = stpn_bench(&args, &[]);
        let text = stderr(&output);
        assert!(!output.status.success(), "{}: succeeded", bad.name);
        let lines: Vec<&str> = text
            .lines()
            .filter(|line| !line.trim().is_empty())
            .collect();
        assert!(
            lines.first().is_some_and(|line| line.starts_with("error"))
                && text.contains(bad.needle),
            "{}: {text}",
            bad.name
        );
        // Our own errors are one line; the argument parser's (exit code 2) add its usage.
        if output.status.code() != Some(2) {
            assert_eq!(lines.len(), 1, "{}: {text}", bad.name);
        }
        assert!(
            !text.contains("panicked") && !text.contains("backtrace"),
            "{}: {text}",
            bad.name
        );
        assert_eq!(snapshot(&dir), before, "{}: the folder changed", bad.name);
    }
    std::fs::remove_dir_all(&root).ok();
}

/// `--resume` on a run that stopped before its first checkpoint says so, then runs it from the
/// beginning with its own config.
#[test]
fn resume_without_a_checkpoint_says_so_and_starts_over() {
    let dir = std::env::temp_dir().join(format!("stpn-cli-resume-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        r#"{"core": "stpn", "hidden_size": 4, "batch_size": 2, "iterations": 2, "burn_in": 1}"#,
    )
    .unwrap();
    let output = stpn_bench(
        &[
            "maze",
            "--out",
            dir.to_str().unwrap(),
            "--resume",
            "--quiet",
        ],
        &[],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("has no checkpoint yet"),
        "{}",
        stderr(&output)
    );
    assert!(dir.join("summary.json").exists() && dir.join("last").is_dir());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn missing_engines_are_named_before_any_folder_is_made() {
    let scratch = std::env::temp_dir().join(format!("stpn-cli-engines-{}", std::process::id()));
    for (command, engine, needle) in [
        ("pendulum", cfg!(feature = "mujoco"), "scripts/setup-mujoco"),
        ("pong", cfg!(feature = "atari"), "scripts/setup-ale"),
    ] {
        if engine {
            continue;
        }
        let out = scratch.join(command);
        assert_one_line_error(
            &stpn_bench(&[command, "--out", &out.display().to_string()], &[]),
            needle,
        );
        assert!(!out.exists());
    }
}

#[test]
fn envs_bench_prints_a_rate_per_environment() {
    let output = stpn_bench(&["envs-bench", "--steps", "2000"], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.lines().any(|line| line.starts_with("maze")), "{text}");
    assert!(text.contains("InvertedPendulum"), "{text}");
}
