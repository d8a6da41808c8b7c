//! `stpn-bench perf`: milliseconds per STPN training step (forward + backward + Adam) and peak
//! resident memory, for the cases of the paper's experiments, on every compiled CPU backend.
//!
//! Each (case, backend, path) runs in a child process of its own, so that its peak resident set
//! (`VmHWM`) is its own. The step is the recurrent STPN cell over the whole sequence with a
//! linear readout of the last output and a cross-entropy loss, backpropagated through every step
//! (full BPTT), then one Adam update.

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::GradientsParams;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use stpn_model::{ArtNetConfig, Backend, Normalisation, StpnRConfig};
use stpn_rl::ConvEncoder;

use crate::tools::iteration_perf::{self, ITERATION_CASES, IterationCase};

/// A benchmark case: the sizes of one experiment's STPN core.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    pub name: &'static str,
    pub hidden: usize,
    pub batch: usize,
    pub steps: usize,
    pub input: usize,
    pub normalisation: Normalisation,
    pub clamp: Option<f64>,
    pub what: &'static str,
}

pub const CASES: [Case; 4] = [
    Case {
        name: "art_h11",
        hidden: 11,
        batch: 128,
        steps: 9,
        input: 37,
        normalisation: Normalisation::Pre,
        clamp: None,
        what: "associative retrieval, the paper's STPN",
    },
    Case {
        name: "art_h64",
        hidden: 64,
        batch: 128,
        steps: 9,
        input: 37,
        normalisation: Normalisation::Pre,
        clamp: None,
        what: "associative retrieval, wider",
    },
    Case {
        name: "pong_core",
        hidden: 64,
        batch: 64,
        steps: 20,
        input: 2592,
        normalisation: Normalisation::Pre,
        clamp: None,
        what: "the Pong core: 2 592 conv features, sequences of 20",
    },
    Case {
        name: "maze",
        hidden: 55,
        batch: 512,
        steps: 200,
        input: 17,
        normalisation: Normalisation::Post,
        clamp: Some(1.0),
        what: "the main maze model: 512 episodes of 200 steps",
    },
];

/// One measurement (one JSON line with `--json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Measurement {
    pub case: String,
    pub backend: String,
    pub path: String,
    pub ms_per_step: f64,
    pub ms_min: f64,
    pub repeats: usize,
    pub peak_rss_mb: f64,
    pub threads: usize,
    pub machine: String,
    /// Environment steps per second of a whole-iteration case (none for a kernel case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_steps_per_second: Option<f64>,
    /// Path `kernel`: the medians of the forward and of the backward alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ms_forward: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ms_backward: Option<f64>,
}

fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split(':').nth(1))
                .map(|name| name.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{model}, {cores} cores")
}

/// Peak resident set size of this process, in MiB (`VmHWM`).
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("VmHWM:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Runs one measurement in this process (the child side).
pub fn measure(case: &Case, backend: Backend, path: &str, repeats: usize) -> Result<Measurement> {
    if path == KERNEL_PATH {
        return measure_kernel(case, backend, repeats);
    }
    if path != "ops" && path != "fused" {
        bail!("unknown path `{path}`; choose fused, ops or {KERNEL_PATH}");
    }
    let device = backend.device()?.autodiff();
    device.seed(0);
    let classes = 4;
    let cell = StpnRConfig::new(case.input, case.hidden)
        .with_normalisation(case.normalisation)
        .with_clamp(case.clamp)
        .with_fused(path == "fused")
        .init(&device);
    let network = ArtNetConfig::new()
        .with_output_size(classes)
        .init(cell, &device);
    let inputs: Tensor<3> = Tensor::random(
        [case.steps, case.batch, case.input],
        Distribution::Uniform(-1.0, 1.0),
        &device,
    );
    let targets: Tensor<1, Int> = Tensor::from_data(
        TensorData::new(
            (0..case.batch as i64)
                .map(|i| i % classes as i64)
                .collect::<Vec<_>>(),
            [case.batch],
        ),
        &device,
    );
    let loss_function = CrossEntropyLossConfig::new().init(&device);
    let mut optimizer = stpn_rl::adam(stpn_rl::TORCH_ADAM_EPSILON);
    let times = time_steps(repeats, network, |network| {
        let output = network.forward(inputs.clone(), false);
        let loss = loss_function.forward(output.logits, targets.clone());
        let gradients = GradientsParams::from_grads(loss.backward(), &network);
        let network = optimizer.step(1e-3, network, gradients);
        // Reading a parameter waits for every queued operation.
        let _ = network.readout_bias.val().into_data();
        network
    });
    Ok(Measurement::of(case.name, backend, path, times, repeats))
}

/// Median and fastest milliseconds of `repeats` training steps, each `step` from the state the
/// previous one returned, after one warm-up step.
fn time_steps<S>(repeats: usize, mut state: S, mut step: impl FnMut(S) -> S) -> (f64, f64) {
    let mut times = Vec::with_capacity(repeats);
    for repeat in 0..=repeats {
        let started = Instant::now();
        state = step(state);
        if repeat > 0 {
            times.push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    median_and_min(times)
}

/// The median and the smallest of `times` (not empty).
fn median_and_min(mut times: Vec<f64>) -> (f64, f64) {
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times[0])
}

/// The Pong encoder case: forward, backward and Adam of the conv encoder alone, on a batch of
/// frames the size of one A2C minibatch (200 steps in sequences of up to 20, padded). Path
/// `fused` is the encoder's host operation (im2col and gemm), `ops` Burn's `conv2d`.
const ENCODER_CASE: &str = "pong_encoder";
const ENCODER_FRAMES: usize = 240;

/// Runs one measurement of [`ENCODER_CASE`] in this process (the child side).
fn measure_encoder(backend: Backend, path: &str, repeats: usize) -> Result<Measurement> {
    if path != "ops" && path != "fused" {
        bail!(
            "unknown path `{path}`; choose ops (Burn's conv2d) or fused (the host im2col + gemm)"
        );
    }
    let device = backend.device()?.autodiff();
    device.seed(0);
    let encoder = ConvEncoder::new(&device);
    let frames: Tensor<2> = Tensor::random(
        [ENCODER_FRAMES, ConvEncoder::SIDE * ConvEncoder::SIDE],
        Distribution::Uniform(0.0, 1.0),
        &device,
    );
    let mut optimizer = stpn_rl::adam(stpn_rl::TORCH_ADAM_EPSILON);
    let times = time_steps(repeats, encoder, |encoder| {
        let features = if path == "fused" {
            encoder.forward(frames.clone())
        } else {
            encoder.forward_reference(frames.clone())
        };
        let gradients = GradientsParams::from_grads(features.mean().backward(), &encoder);
        let encoder = optimizer.step(1e-3, encoder, gradients);
        let _ = encoder.conv2.weight.val().into_data();
        encoder
    });
    Ok(Measurement::of(ENCODER_CASE, backend, path, times, repeats))
}

impl Measurement {
    /// A measurement of this process, which ran `repeats` times with median and fastest
    /// `milliseconds`: its peak memory and the machine are read here.
    fn of(
        case: &str,
        backend: Backend,
        path: &str,
        (ms_per_step, ms_min): (f64, f64),
        repeats: usize,
    ) -> Self {
        Self {
            case: case.to_string(),
            backend: backend.to_string(),
            path: path.to_string(),
            ms_per_step,
            ms_min,
            repeats,
            peak_rss_mb: peak_rss_mb(),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            machine: machine(),
            env_steps_per_second: None,
            ms_forward: None,
            ms_backward: None,
        }
    }
}

/// The path that times the host kernel alone ([`measure_kernel`]).
pub const KERNEL_PATH: &str = "kernel";

/// Path [`KERNEL_PATH`]: the fused path's host kernel alone, float32, without Burn: the
/// sequence forward keeping its checkpoints, then the backward from a gradient of every output,
/// with the options and parameters of the case's cell. What the kernel itself costs of a
/// `fused` training step, to compare kernel changes without the noise of the work around it.
fn measure_kernel(case: &Case, backend: Backend, repeats: usize) -> Result<Measurement> {
    use stpn_model::kernel::{Parameters, Sequence};
    use stpn_model::params::host_values;
    let device = backend.device()?;
    device.seed(0);
    let cell = StpnRConfig::new(case.input, case.hidden)
        .with_normalisation(case.normalisation)
        .with_clamp(case.clamp)
        .init(&device);
    let config = cell.kernel_config();
    let [weight, lambda, gamma] = [&cell.weight, &cell.lambda, &cell.gamma]
        .map(|parameter| host_values::<f32, 2>(parameter.val()));
    let bias = host_values::<f32, 1>(cell.bias.val());
    let random = |shape: [usize; 3]| {
        host_values::<f32, 3>(Tensor::random(
            shape,
            Distribution::Uniform(-1.0, 1.0),
            &device,
        ))
    };
    let inputs = random([case.steps, case.batch, case.input]);
    let grad_outputs: Vec<f32> = random([case.steps, case.batch, case.hidden])
        .into_iter()
        .map(|gradient| gradient * 1e-2)
        .collect();
    let hidden = vec![0.0; case.batch * case.hidden];
    let synaptic = vec![0.0; case.batch * case.hidden * config.presynaptic_size()];
    let parameters = Parameters {
        weight: &weight,
        bias: &bias,
        lambda: &lambda,
        gamma: &gamma,
    };
    let sequence = Sequence {
        steps: case.steps,
        batch: case.batch,
        inputs: &inputs,
        hidden: &hidden,
        synaptic: &synaptic,
        lengths: &[],
    };
    let (mut forward_ms, mut backward_ms) = (Vec::new(), Vec::new());
    let times = time_steps(repeats, (), |()| {
        let started = Instant::now();
        let output = stpn_model::kernel::forward(config, parameters, sequence, true);
        let forward_done = Instant::now();
        let gradients = stpn_model::kernel::backward(
            config,
            parameters,
            sequence,
            Some(&output.checkpoints),
            &grad_outputs,
            None,
            None,
        );
        std::hint::black_box(gradients);
        forward_ms.push((forward_done - started).as_secs_f64() * 1e3);
        backward_ms.push(forward_done.elapsed().as_secs_f64() * 1e3);
    });
    // The first call is time_steps' warm-up.
    let median = |mut times: Vec<f64>| median_and_min(times.split_off(1)).0;
    Ok(Measurement {
        ms_forward: Some(median(forward_ms)),
        ms_backward: Some(median(backward_ms)),
        ..Measurement::of(case.name, backend, KERNEL_PATH, times, repeats)
    })
}

/// The path name of the whole-iteration cases: each experiment's own training loop.
const LOOP_PATH: &str = "loop";

/// Runs one whole-iteration measurement in this process (the child side).
fn measure_iteration(case: &str, backend: Backend, repeats: usize) -> Result<Measurement> {
    let times = iteration_perf::measure(case, backend, repeats)?;
    let seconds = times.ms_median / 1e3;
    Ok(Measurement {
        env_steps_per_second: Some(times.env_steps_per_iteration as f64 / seconds),
        ..Measurement::of(
            case,
            backend,
            LOOP_PATH,
            (times.ms_median, times.ms_min),
            repeats,
        )
    })
}

/// Runs every requested measurement, each in a child process, and prints them.
pub fn run(
    cases: &[String],
    backends: &[Backend],
    paths: &[String],
    repeats: Option<usize>,
    json: bool,
) -> Result<()> {
    let known = || {
        CASES
            .iter()
            .map(|case| case.name)
            .chain([ENCODER_CASE])
            .chain(ITERATION_CASES.iter().map(|case| case.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for name in cases {
        if !CASES.iter().any(|case| case.name == name)
            && name != ENCODER_CASE
            && !ITERATION_CASES.iter().any(|case| case.name == name)
        {
            bail!("unknown case `{name}`; known: {}", known());
        }
    }
    let wanted = |name: &str| cases.is_empty() || cases.iter().any(|case| case == name);
    let selected: Vec<&Case> = CASES.iter().filter(|case| wanted(case.name)).collect();
    let selected_iterations: Vec<&IterationCase> = ITERATION_CASES
        .iter()
        .filter(|case| wanted(case.name))
        .collect();
    let executable = std::env::current_exe()?;
    if !json {
        println!("machine: {}; one process per measurement", machine());
        println!(
            "{:<18} {:<8} {:<6} {:>12} {:>10} {:>14}  repeats",
            "case", "backend", "path", "ms/step", "min ms", "peak RSS MiB"
        );
    }
    for case in &selected {
        // Long steps get fewer repeats.
        let repeats = repeats.unwrap_or(match case.name {
            "maze" => 3,
            "pong_core" => 5,
            _ => 20,
        });
        for (index, backend) in backends.iter().enumerate() {
            for path in paths {
                // The host kernel is the same on every backend: measured once.
                if path == KERNEL_PATH && index > 0 {
                    continue;
                }
                // The op-by-op maze step stores every intermediate of 200 steps (docs/reference.md §7: on the
                // order of 10 GB); it runs only when asked for by name.
                if case.name == "maze" && path == "ops" && cases.is_empty() {
                    if !json {
                        println!(
                            "{:<18} {:<8} {:<6} skipped: needs ~10 GB; run with --cases maze --paths ops",
                            case.name,
                            backend.name(),
                            path
                        );
                    }
                    continue;
                }
                measure_in_child(&executable, case.name, *backend, path, repeats, json)?;
            }
        }
    }
    if wanted(ENCODER_CASE) {
        for backend in backends {
            for path in paths.iter().filter(|path| *path != KERNEL_PATH) {
                measure_in_child(
                    &executable,
                    ENCODER_CASE,
                    *backend,
                    path,
                    repeats.unwrap_or(20),
                    json,
                )?;
            }
        }
    }
    // Whole iterations run each experiment's default path (fused where the core has one).
    for case in &selected_iterations {
        let repeats = repeats.unwrap_or(case.repeats);
        for backend in backends {
            if case.name.starts_with("pong") && !cfg!(feature = "atari") {
                if !json {
                    println!(
                        "{:<18} skipped: this binary was built without ALE (feature atari)",
                        case.name
                    );
                }
                continue;
            }
            measure_in_child(&executable, case.name, *backend, LOOP_PATH, repeats, json)?;
        }
    }
    if !json {
        for case in selected {
            println!(
                "{:<18} {} (H {}, B {}, T {}, input {})",
                case.name, case.what, case.hidden, case.batch, case.steps, case.input
            );
        }
        if wanted(ENCODER_CASE) {
            println!(
                "{:<18} the Pong conv encoder alone, {ENCODER_FRAMES} frames (fused: host im2col + gemm; ops: Burn's conv2d)",
                ENCODER_CASE
            );
        }
        for case in selected_iterations {
            println!(
                "{:<18} {}; ms/step = ms per iteration",
                case.name, case.what
            );
        }
    }
    Ok(())
}

/// Runs one measurement in a child process of its own (so that its peak RSS is its own) and
/// prints it.
fn measure_in_child(
    executable: &std::path::Path,
    case: &str,
    backend: Backend,
    path: &str,
    repeats: usize,
    json: bool,
) -> Result<()> {
    let output = Command::new(executable)
        .args(["--backend", backend.name(), "perf-worker", case, path])
        .args(["--repeats", &repeats.to_string()])
        .output()
        .context("cannot start a measurement process")?;
    if !output.status.success() {
        let error = String::from_utf8_lossy(&output.stderr);
        bail!(
            "{case} on {backend} ({path}) failed: {}",
            error.lines().last().unwrap_or("no output")
        );
    }
    let measurement: Measurement = serde_json::from_slice(&output.stdout)
        .context("the measurement process printed no result")?;
    if json {
        println!("{}", serde_json::to_string(&measurement)?);
    } else {
        let throughput = measurement
            .env_steps_per_second
            .map(|rate| format!("  {rate:.0} env steps/s"))
            .unwrap_or_default();
        let split = measurement
            .ms_forward
            .zip(measurement.ms_backward)
            .map(|(forward, backward)| {
                format!("  forward {forward:.2} ms, backward {backward:.2} ms")
            })
            .unwrap_or_default();
        println!(
            "{:<18} {:<8} {:<6} {:>12.2} {:>10.2} {:>14.0}  {}{throughput}{split}",
            measurement.case,
            measurement.backend,
            measurement.path,
            measurement.ms_per_step,
            measurement.ms_min,
            measurement.peak_rss_mb,
            measurement.repeats
        );
    }
    Ok(())
}

/// The child side: one measurement, printed as JSON.
pub fn worker(case: &str, backend: Backend, path: &str, repeats: usize) -> Result<()> {
    let measurement = if ITERATION_CASES.iter().any(|known| known.name == case) {
        measure_iteration(case, backend, repeats.max(1))?
    } else if case == ENCODER_CASE {
        measure_encoder(backend, path, repeats.max(1))?
    } else {
        let case = CASES
            .iter()
            .find(|known| known.name == case)
            .with_context(|| format!("unknown case `{case}`"))?;
        measure(case, backend, path, repeats.max(1))?
    };
    println!("{}", serde_json::to_string(&measurement)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Path `kernel` times the host kernel of a case's cell alone and reports its forward and
    /// backward apart; an unknown path is refused with the known ones.
    #[test]
    fn kernel_path_times_forward_and_backward() {
        let _seeded = crate::seeded_device_lock();
        let case = CASES.iter().find(|case| case.name == "art_h11").unwrap();
        let measurement = measure(case, Backend::Flex, KERNEL_PATH, 2).unwrap();
        assert_eq!(
            (measurement.path.as_str(), measurement.repeats),
            ("kernel", 2)
        );
        for ms in [
            measurement.ms_per_step,
            measurement.ms_forward.unwrap(),
            measurement.ms_backward.unwrap(),
        ] {
            assert!(ms > 0.0 && ms.is_finite(), "{measurement:?}");
        }
        let error = measure(case, Backend::Flex, "fast", 1).err().unwrap();
        assert!(error.to_string().contains("kernel"), "{error}");
    }
}
