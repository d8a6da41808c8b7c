//! `scripts/gpu-check --dry-run`: the GPU machine's script, run on the CPU at tiny sizes, so that
//! it is known to work before a GPU machine is at hand.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn gpu_check_dry_run_records_every_step() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::env::temp_dir().join(format!("stpn-gpu-check-{}", std::process::id()));
    std::fs::remove_dir_all(&out).ok();
    let output = Command::new("bash")
        .arg(root.join("scripts/gpu-check"))
        .arg(&out)
        .args(["--dry-run", "--binary", env!("CARGO_BIN_EXE_stpn-bench")])
        .output()
        .expect("bash runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let steps = std::fs::read_to_string(out.join("steps.jsonl")).unwrap();
    let names: Vec<String> = steps
        .lines()
        .map(|line| {
            let step: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(step["exit_status"], 0, "{line}");
            step["step"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        names,
        [
            "machine",
            "golden_flex",
            "perf_flex",
            "maze_paper",
            "torch_cpu"
        ],
        "{steps}"
    );
    // The perf step's JSON lines, with the fields `perf --json` promises.
    let perf = std::fs::read_to_string(out.join("perf_flex.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(perf.lines().next().unwrap()).unwrap();
    assert_eq!(first["case"], "art_h11");
    assert!(first["ms_per_step"].as_f64().is_some_and(|ms| ms > 0.0));
    assert!(out.join("maze_paper/metrics.csv").is_file());
    // A second run refuses to write into the same folder.
    let again = Command::new("bash")
        .arg(root.join("scripts/gpu-check"))
        .arg(&out)
        .args(["--dry-run", "--binary", env!("CARGO_BIN_EXE_stpn-bench")])
        .output()
        .expect("bash runs");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
    std::fs::remove_dir_all(&out).ok();
}
