//! Replays what `scripts/record/pong.py` recorded from ale-py 0.12.1, Gymnasium 1.4 and OpenCV
//! 4.14 (`tests/data/pong_ale_py.json`) and compares exactly: rewards, episode ends, MD5s of
//! screens and observations. Needs `scripts/setup-ale` (the ROM).

use std::path::PathBuf;

use serde_json::Value;
use stpn_atari::ale::md5_hex;
use stpn_atari::pong::{ACTIONS, OBSERVATION_SIZE, SCREEN, paper_preprocess_rgb};
use stpn_atari::resize::{AreaResize, Image, LinearResize};
use stpn_atari::seed::SeedSequence;
use stpn_atari::{
    AleError, DeepMindConfig, DeepMindPong, Pong, PongConfig, ScaledDeepMindPong, rom_path,
};
use stpn_envs::Env;

fn record() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/pong_ale_py.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The action sequence of `pong.py`: glibc's LCG, index = (x >> 16) mod 6.
struct Actions(u64);

impl Iterator for Actions {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        self.0 = (self.0 * 1_103_515_245 + 12_345) % (1 << 31);
        Some(((self.0 >> 16) % 6) as usize)
    }
}

fn pong(config: PongConfig) -> Pong {
    Pong::with_config(config).unwrap_or_else(|error| panic!("{error}"))
}

fn grey_md5(pong: &Pong) -> String {
    let mut grey = vec![0u8; SCREEN.0 * SCREEN.1];
    pong.ale().screen_grayscale(&mut grey);
    md5_hex(&grey)
}

fn rgb_md5(pong: &Pong) -> String {
    let mut rgb = vec![0u8; SCREEN.0 * SCREEN.1 * 3];
    pong.ale().screen_rgb(&mut rgb);
    md5_hex(&rgb)
}

fn f32_md5(values: &[f32]) -> String {
    let bytes: Vec<u8> = values
        .iter()
        .flat_map(|value| value.to_le_bytes())
        .collect();
    md5_hex(&bytes)
}

/// `(frame, reward)` pairs of a recorded reward list.
fn events(value: &Value) -> Vec<(u64, f64)> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| (pair[0].as_u64().unwrap(), pair[1].as_f64().unwrap()))
        .collect()
}

#[test]
fn rom_and_action_set() {
    let record = record();
    let rom = std::fs::read(rom_path("pong")).expect("run scripts/setup-ale");
    assert_eq!(md5_hex(&rom), record["rom_md5"].as_str().unwrap());
    let pong = pong(PongConfig::default());
    assert_eq!(pong.ale().minimal_action_set(), ACTIONS);
    assert_eq!(pong.ale().screen_size(), SCREEN);
    fn is_send<T: Send>() {}
    is_send::<Pong>();
    is_send::<DeepMindPong>();
}

#[test]
fn missing_rom_says_run_setup() {
    let config = PongConfig {
        rom: Some(PathBuf::from("/nonexistent/roms/pong.bin")),
        ..PongConfig::default()
    };
    let error = Pong::with_config(config).err().expect("no ROM there");
    assert!(matches!(error, AleError::RomNotFound(_)));
    let message = error.to_string();
    assert!(message.contains("run scripts/setup-ale"), "{message}");
    assert_eq!(message.lines().count(), 1, "{message}");
}

#[test]
fn seed_sequence_matches_numpy() {
    for (seed, words) in record()["seed_sequence"].as_object().unwrap() {
        let expected: Vec<u32> = words
            .as_array()
            .unwrap()
            .iter()
            .map(|word| word.as_u64().unwrap() as u32)
            .collect();
        let seed: u64 = seed.parse().unwrap();
        assert_eq!(
            SeedSequence::new(seed).generate_state(2),
            expected,
            "seed {seed}"
        );
    }
}

/// PongNoFrameskip-v4 through the `Env` interface, 5 000 frames, against the raw ALEInterface.
#[test]
fn pong_matches_ale_py() {
    let record = record();
    let raw = &record["raw"];
    let every = raw["screen_md5_every"].as_u64().unwrap();
    let frames = raw["frames"].as_u64().unwrap();
    let mut env = pong(PongConfig::default());
    let (mut observation, _) = env.reset(Some(raw["seed"].as_u64().unwrap()));
    let mut actions = Actions(raw["action_seed"].as_u64().unwrap());
    let (mut rewards, mut returns, mut lengths) = (vec![], vec![], vec![]);
    let (mut episode_return, mut episode_length) = (0.0, 0);
    let mut screens_checked = 0;
    for frame in 0..=frames {
        if frame > 0 {
            let step = env.step(&actions.next().unwrap());
            assert!(!step.truncated, "no truncation within {frames} frames");
            observation = step.observation;
            episode_return += step.reward;
            episode_length += 1;
            if step.reward != 0.0 {
                rewards.push((frame, step.reward));
            }
            if step.terminated {
                assert!(env.ale().game_over(false));
            }
            if frame % every == 0 {
                check_screens(&env, raw, frame);
                screens_checked += 1;
            }
            if let Some(expected) = raw["observations"].get(frame.to_string()) {
                check_observation(&mut env, &observation, expected, frame);
            }
            if step.terminated {
                returns.push(episode_return);
                lengths.push(episode_length);
                (episode_return, episode_length) = (0.0, 0);
                observation = env.reset(None).0;
                assert_eq!(
                    grey_md5(&env),
                    raw["grey_md5"][format!("{frame}_reset")].as_str().unwrap(),
                    "grey screen after the reset at frame {frame}"
                );
            }
        } else {
            check_screens(&env, raw, 0);
            check_observation(&mut env, &observation, &raw["observations"]["0"], 0);
        }
    }
    assert_eq!(rewards, events(&raw["rewards"]));
    let expected_returns: Vec<f64> =
        serde_json::from_value(raw["episode_returns"].clone()).unwrap();
    let expected_lengths: Vec<usize> =
        serde_json::from_value(raw["episode_lengths"].clone()).unwrap();
    assert_eq!(returns, expected_returns);
    assert_eq!(lengths, expected_lengths);
    assert_eq!(episode_return, raw["partial_return"].as_f64().unwrap());
    assert_eq!(
        env.ale().frame_number() as u64,
        raw["final_frame_number"].as_u64().unwrap()
    );
    assert_eq!(
        env.ale().episode_frame_number() as u64,
        raw["final_episode_frame_number"].as_u64().unwrap()
    );
    assert!(screens_checked >= 20);
}

fn check_screens(env: &Pong, raw: &Value, frame: u64) {
    let key = frame.to_string();
    assert_eq!(
        grey_md5(env),
        raw["grey_md5"][&key].as_str().unwrap(),
        "grey screen, frame {frame}"
    );
    assert_eq!(
        rgb_md5(env),
        raw["rgb_md5"][&key].as_str().unwrap(),
        "RGB screen, frame {frame}"
    );
    // The palette tables give what ALE's own conversions give.
    let mut palette_rgb = Vec::with_capacity(SCREEN.0 * SCREEN.1 * 3);
    let palette = env.ale().palette();
    for &index in env.ale().screen() {
        palette_rgb.extend_from_slice(&palette.rgb[index as usize]);
    }
    assert_eq!(
        md5_hex(&palette_rgb),
        raw["rgb_md5"][&key].as_str().unwrap()
    );
    let palette_grey: Vec<u8> = env
        .ale()
        .screen()
        .iter()
        .map(|&index| palette.grey[index as usize])
        .collect();
    assert_eq!(
        md5_hex(&palette_grey),
        raw["grey_md5"][&key].as_str().unwrap()
    );
}

fn check_observation(env: &mut Pong, observation: &[f32], expected: &Value, frame: u64) {
    assert_eq!(observation.len(), OBSERVATION_SIZE);
    assert_eq!(
        md5_hex(env.resized_rgb()),
        expected["resized_rgb_md5"].as_str().unwrap(),
        "cv2.resize INTER_LINEAR of the cropped screen, frame {frame}"
    );
    let first: Vec<f32> = serde_json::from_value(expected["observation_first"].clone()).unwrap();
    assert_eq!(
        &observation[..first.len()],
        first.as_slice(),
        "frame {frame}"
    );
    assert_eq!(
        f32_md5(observation),
        expected["observation_md5"].as_str().unwrap(),
        "paper observation, frame {frame}"
    );
    let mut rgb = vec![0u8; SCREEN.0 * SCREEN.1 * 3];
    env.ale().screen_rgb(&mut rgb);
    assert_eq!(paper_preprocess_rgb(&rgb), observation, "frame {frame}");
}

#[test]
fn truncation_matches_ale_py() {
    let truncation = &record()["truncation"];
    let max_frames = truncation["max_frames"].as_i64().unwrap() as i32;
    let mut env = pong(PongConfig {
        max_frames_per_episode: max_frames,
        ..PongConfig::default()
    });
    env.reset_emulator(Some(0));
    let mut actions = Actions(7);
    let mut first = None;
    for frame in 1..max_frames as u64 + 10 {
        let outcome = env.act(actions.next().unwrap());
        if first.is_none() && outcome.truncated {
            first = Some(frame);
            assert_eq!(
                outcome.terminated,
                truncation["terminated_then"].as_bool().unwrap()
            );
            assert_eq!(
                env.ale().game_over(true),
                truncation["game_over_then"].as_bool().unwrap()
            );
        }
    }
    assert_eq!(first, truncation["first_truncated_frame"].as_u64());
    assert_eq!(
        env.ale().episode_frame_number() as u64,
        truncation["episode_frame_number_after"].as_u64().unwrap()
    );
}

/// With sticky actions ALE's generator matters: equal screens show that ALE is seeded as ale-py
/// seeds it.
#[test]
fn sticky_actions_match_ale_py_seeding() {
    for sticky in record()["sticky"].as_array().unwrap() {
        let seed = sticky["seed"].as_u64().unwrap();
        assert_eq!(
            stpn_atari::seed::ale_py_random_seed(seed) as i64,
            sticky["ale_seed"].as_i64().unwrap()
        );
        let mut env = pong(PongConfig {
            repeat_action_probability: 0.25,
            ..PongConfig::default()
        });
        env.reset_emulator(Some(seed));
        let mut actions = Actions(sticky["action_seed"].as_u64().unwrap());
        let mut rewards = vec![];
        for frame in 1..=sticky["frames"].as_u64().unwrap() {
            let outcome = env.act(actions.next().unwrap());
            if outcome.reward != 0 {
                rewards.push((frame, outcome.reward as f64));
            }
            if let Some(expected) = sticky["grey_md5"].get(frame.to_string()) {
                assert_eq!(
                    grey_md5(&env),
                    expected.as_str().unwrap(),
                    "seed {seed}, frame {frame}"
                );
            }
        }
        assert_eq!(rewards, events(&sticky["rewards"]), "seed {seed}");
    }
}

/// Gymnasium's AtariPreprocessing + FrameStackObservation(4), with the recorded no-op counts.
#[test]
fn deepmind_matches_gymnasium() {
    let record = record();
    let deepmind = &record["deepmind"];
    let noops: Vec<usize> = serde_json::from_value(deepmind["noops"].clone()).unwrap();
    let expected = &deepmind["observation_md5"];
    let mut env = DeepMindPong::new(DeepMindConfig::default()).unwrap();
    let observation = env.reset_with_noops(deepmind["seed"].as_u64(), noops[0]);
    assert_eq!(observation.len(), 4 * OBSERVATION_SIZE);
    assert_eq!(
        md5_hex(&observation),
        expected["0"].as_str().unwrap(),
        "after reset"
    );
    let mut actions = Actions(deepmind["action_seed"].as_u64().unwrap());
    let (mut rewards, mut ends, mut resets) = (vec![], vec![], 1);
    let mut checked = 0;
    for step in 1..=deepmind["steps"].as_u64().unwrap() {
        let outcome = env.step(&actions.next().unwrap());
        if outcome.reward != 0.0 {
            rewards.push((step, outcome.reward));
        }
        if let Some(md5) = expected.get(step.to_string()) {
            assert_eq!(
                md5_hex(&outcome.observation),
                md5.as_str().unwrap(),
                "step {step}"
            );
            checked += 1;
        }
        if outcome.done() {
            ends.push((step, outcome.terminated, outcome.truncated));
            let observation = env.reset_with_noops(None, noops[resets]);
            resets += 1;
            assert_eq!(
                md5_hex(&observation),
                expected[format!("{step}_reset")].as_str().unwrap(),
                "reset after step {step}"
            );
        }
    }
    assert!(checked >= 20);
    assert_eq!(rewards, events(&deepmind["rewards"]));
    let expected_ends: Vec<(u64, bool, bool)> = deepmind["ends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|end| {
            (
                end[0].as_u64().unwrap(),
                end[1].as_bool().unwrap(),
                end[2].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(ends, expected_ends);
    assert_eq!(resets, noops.len());
}

/// The agent's view of the DeepMind env: the same frames as `f32` / 255, rewards clipped to
/// their sign, the same episode ends.
#[test]
fn scaled_deepmind_is_the_deepmind_env_scaled_and_clipped() {
    let mut raw = DeepMindPong::new(DeepMindConfig::default()).unwrap();
    let mut scaled = ScaledDeepMindPong(DeepMindPong::new(DeepMindConfig::default()).unwrap());
    let (first_raw, first_scaled) = (raw.reset(Some(3)).0, scaled.reset(Some(3)).0);
    assert_eq!(first_scaled.len(), first_raw.len());
    assert!(
        first_raw
            .iter()
            .zip(&first_scaled)
            .all(|(&r, &s)| s == f32::from(r) / 255.0)
    );
    let mut actions = Actions(7);
    let mut scored = 0;
    for _ in 0..1_500 {
        let action = actions.next().unwrap();
        let (step_raw, step_scaled) = (raw.step(&action), scaled.step(&action));
        assert_eq!(
            step_scaled.reward,
            step_raw.reward.signum() * f64::from(step_raw.reward != 0.0)
        );
        assert_eq!(
            (step_scaled.terminated, step_scaled.truncated),
            (step_raw.terminated, step_raw.truncated)
        );
        assert!(
            step_raw
                .observation
                .iter()
                .zip(&step_scaled.observation)
                .all(|(&r, &s)| s == f32::from(r) / 255.0)
        );
        scored += usize::from(step_raw.reward != 0.0);
        if step_raw.done() {
            break;
        }
    }
    assert!(scored > 0, "no point scored in 1 500 steps");
    assert_eq!(scaled.observation_space().size(), 4 * OBSERVATION_SIZE);
}

/// `pong.py`'s synthetic image: byte i = ((i·2654435761 + salt) mod 2³²) >> 13 & 255.
fn synthetic(length: usize, salt: u64) -> Vec<u8> {
    (0..length as u64)
        .map(|index| (((index * 2_654_435_761 + salt) % (1 << 32)) >> 13 & 255) as u8)
        .collect()
}

#[test]
fn resize_matches_opencv() {
    for case in record()["resize"].as_array().unwrap() {
        let get = |key: &str| case[key].as_u64().unwrap() as usize;
        let (height, width, channels) = (get("height"), get("width"), get("channels"));
        let destination = (get("out_height"), get("out_width"));
        let image = synthetic(height * width * channels, case["salt"].as_u64().unwrap());
        let mut out = vec![0u8; destination.0 * destination.1 * channels];
        let source = Image::new(&image, height, width, channels);
        let method = case["method"].as_str().unwrap();
        match method {
            "linear" => LinearResize::new((height, width), destination).apply(source, &mut out),
            "area" => AreaResize::new((height, width), destination).apply(source, &mut out),
            other => panic!("unknown method {other}"),
        }
        let name = format!("{method} {height}×{width}×{channels} → {destination:?}");
        if let Some(values) = case.get("values") {
            let values: Vec<u8> = serde_json::from_value(values.clone()).unwrap();
            assert_eq!(out, values, "{name}");
        }
        assert_eq!(md5_hex(&out), case["md5"].as_str().unwrap(), "{name}");
    }
}
