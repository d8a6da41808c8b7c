//! The command line as a user meets it: exit codes and one-line errors.

use std::path::PathBuf;
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
    let output = stpn_bench(&["--backend", "cuda", "golden", "x.json"], &[]);
    assert!(stderr(&output).contains("unknown backend `cuda`; choose one of flex, ndarray, wgpu"));
    assert!(!output.status.success());
}

#[test]
fn missing_file_is_a_one_line_error() {
    let output = stpn_bench(&["golden", "no-such-case.json"], &[]);
    assert_one_line_error(&output, "cannot read no-such-case.json");
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

/// Experiment folders and configs: an occupied folder, a malformed config, a missing engine.
#[test]
fn experiment_commands_fail_with_one_line() {
    let scratch = std::env::temp_dir().join(format!("stpn-cli-experiments-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let occupied = scratch.join("occupied");
    std::fs::create_dir_all(&occupied).unwrap();
    std::fs::write(occupied.join("config.json"), "{}").unwrap();
    let occupied = occupied.display().to_string();
    for command in [
        vec!["familiarity", "--out", &occupied],
        vec!["maze", "--out", &occupied],
    ] {
        assert_one_line_error(&stpn_bench(&command, &[]), "already holds a run");
    }
    let bad = scratch.join("bad.json");
    std::fs::write(
        &bad,
        "{\"core\": \"stpn\", \"hidden_size\": 5, \"iterations\": 1, \"oops\": 1}",
    )
    .unwrap();
    let bad = bad.display().to_string();
    assert_one_line_error(&stpn_bench(&["maze", "--config", &bad], &[]), "malformed");
    assert_one_line_error(
        &stpn_bench(
            &["maze-eval", &scratch.join("nothing").display().to_string()],
            &[],
        ),
        "",
    );
    if !cfg!(feature = "mujoco") {
        let out = scratch.join("pendulum").display().to_string();
        assert_one_line_error(
            &stpn_bench(&["pendulum", "--out", &out], &[]),
            "scripts/setup-mujoco",
        );
    }
    std::fs::remove_dir_all(&scratch).ok();
}

#[test]
fn envs_bench_prints_a_rate_per_environment() {
    let output = stpn_bench(&["envs-bench", "--steps", "2000"], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.lines().any(|line| line.starts_with("maze")), "{text}");
    assert!(text.contains("InvertedPendulum"), "{text}");
}
