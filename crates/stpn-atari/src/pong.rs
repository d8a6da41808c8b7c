//! Pong as Gymnasium's `PongNoFrameskip-v4` (ale-py 0.12.1), observed as the STPN paper's agents
//! observed it (docs/reference.md §5.2).
//!
//! Semantics (`ale_py.env.AtariEnv` with the v4 registration):
//! - one step is one emulator frame (frame skip 1), with no sticky actions
//!   (`repeat_action_probability` 0);
//! - actions index the minimal action set, `[NOOP, FIRE, RIGHT, LEFT, RIGHTFIRE, LEFTFIRE]`
//!   (ALE codes `[0, 1, 3, 4, 11, 12]`);
//! - the reward is ALE's (−1, 0 or +1 per frame);
//! - `terminated` is `game_over(with_truncation=False)`: a player reached 21;
//! - `truncated` is `game_truncated()`: 108 000 frames (30 minutes of play) in the episode.
//!
//! Observation ([`PaperObservation`]), RLlib's generic pixel preprocessor as the paper ran it
//! (`preprocessor_pref: "rllib"`, no DeepMind wrappers): the 210×160 RGB screen, rows 25 to 184
//! kept (160×160), resized to 84×84 by OpenCV's `INTER_LINEAR` (bit-exact, [`crate::resize`]),
//! grey = mean of R, G and B, then `(x − 128) / 128`, as 84×84×1 `f32` in `[-1, 127/128]`. No
//! frame stack; the recurrent core carries the history. [`crate::deepmind`] has the DeepMind
//! preprocessing instead.
//!
//! Seeding: `reset(Some(seed))` seeds ALE exactly as ale-py does (see [`crate::seed`]), reloads
//! the ROM and resets. Without sticky actions the seed changes nothing in Pong: the emulator is
//! deterministic given the actions. A new `Pong` is seeded as by `reset(Some(0))`; ale-py seeds a
//! new env from OS entropy instead.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use stpn_envs::{Env, Info, Space, Step};

use crate::ale::{Ale, AleError, Palette, rom_path};
use crate::resize::{Image, LinearResize};
use crate::seed::ale_py_random_seed;

/// Gymnasium's `max_num_frames_per_episode` for the v4 and v5 environments.
pub const MAX_FRAMES_PER_EPISODE: i32 = 108_000;
/// The minimal action set of Pong, as ALE action codes.
pub const ACTIONS: [i32; 6] = [0, 1, 3, 4, 11, 12];
/// Names of [`ACTIONS`], as ale-py's `get_action_meanings`.
pub const ACTION_NAMES: [&str; 6] = ["NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE"];
/// The screen rows that RLlib keeps (`observation[25:-25]`).
pub const CROP_ROWS: Range<usize> = 25..185;
/// Side of the square observation.
pub const OBSERVATION_SIDE: usize = 84;
/// Length of a paper observation (84 × 84 × 1).
pub const OBSERVATION_SIZE: usize = OBSERVATION_SIDE * OBSERVATION_SIDE;
/// Screen size (height, width).
pub const SCREEN: (usize, usize) = (210, 160);

/// How the emulator runs.
#[derive(Clone, Debug, PartialEq)]
pub struct PongConfig {
    /// ALE's sticky actions: 0 for `PongNoFrameskip-v4` (the paper), 0.25 for v5.
    pub repeat_action_probability: f32,
    /// Frames after which an episode is truncated (0: never).
    pub max_frames_per_episode: i32,
    /// The ROM; `None` means [`rom_path`]`("pong")`.
    pub rom: Option<PathBuf>,
}

impl Default for PongConfig {
    /// `PongNoFrameskip-v4`.
    fn default() -> Self {
        Self {
            repeat_action_probability: 0.0,
            max_frames_per_episode: MAX_FRAMES_PER_EPISODE,
            rom: None,
        }
    }
}

/// The paper's observation of a screen; see the module documentation.
pub struct PaperObservation {
    resize: LinearResize,
    palette: Palette,
    resized: Vec<u8>,
}

impl PaperObservation {
    /// The preprocessing of screens drawn with `palette` (the loaded ROM's, [`Ale::palette`]).
    pub fn new(palette: Palette) -> Self {
        Self {
            resize: LinearResize::new(
                (CROP_ROWS.len(), SCREEN.1),
                (OBSERVATION_SIDE, OBSERVATION_SIDE),
            ),
            palette,
            resized: vec![0; OBSERVATION_SIZE * 3],
        }
    }

    /// The cropped and resized RGB image (84 × 84 × 3, what `cv2.resize` returns) of a screen of
    /// palette indices. Rows are converted to RGB as the resize asks for them.
    pub fn resized_rgb(&mut self, screen: &[u8]) -> &[u8] {
        assert_eq!(screen.len(), SCREEN.0 * SCREEN.1, "a 210×160 screen");
        let palette = &self.palette.rgb;
        let fetch = |row: usize, buffer: &mut [u8]| {
            let start = (CROP_ROWS.start + row) * SCREEN.1;
            for (rgb, &index) in buffer
                .chunks_exact_mut(3)
                .zip(&screen[start..start + SCREEN.1])
            {
                rgb.copy_from_slice(&palette[index as usize]);
            }
        };
        self.resize.apply_rows(3, fetch, &mut self.resized);
        &self.resized
    }

    /// The observation of a screen of palette indices, written into `out` (84 × 84).
    pub fn observe_into(&mut self, screen: &[u8], out: &mut [f32]) {
        assert_eq!(out.len(), OBSERVATION_SIZE, "an 84×84 observation");
        self.resized_rgb(screen);
        grey_and_scale(&self.resized, out);
    }

    /// The observation of a screen of palette indices.
    pub fn observe(&mut self, screen: &[u8]) -> Vec<f32> {
        let mut out = vec![0.0; OBSERVATION_SIZE];
        self.observe_into(screen, &mut out);
        out
    }
}

/// RLlib's last two operations on the resized RGB image: `scaled.mean(2).astype(np.float32)`
/// (the mean in double precision, as numpy's mean of `uint8`), then `(x − 128) / 128` in `f32`.
pub fn grey_and_scale(rgb: &[u8], out: &mut [f32]) {
    assert_eq!(rgb.len(), out.len() * 3, "three channels per output value");
    // The result depends on R + G + B only: tabulate its 766 values.
    static BY_SUM: LazyLock<Vec<f32>> = LazyLock::new(|| {
        (0..=3 * 255u32)
            .map(|sum| ((sum as f64 / 3.0) as f32 - 128.0) / 128.0)
            .collect()
    });
    for (value, pixel) in out.iter_mut().zip(rgb.chunks_exact(3)) {
        *value = BY_SUM[pixel[0] as usize + pixel[1] as usize + pixel[2] as usize];
    }
}

/// The paper's preprocessing of an RGB screen (210 × 160 × 3 bytes, as `getScreenRGB`).
pub fn paper_preprocess_rgb(screen_rgb: &[u8]) -> Vec<f32> {
    assert_eq!(
        screen_rgb.len(),
        SCREEN.0 * SCREEN.1 * 3,
        "a 210×160 RGB screen"
    );
    let row = SCREEN.1 * 3;
    let cropped = &screen_rgb[CROP_ROWS.start * row..CROP_ROWS.end * row];
    let mut resized = vec![0u8; OBSERVATION_SIZE * 3];
    LinearResize::new(
        (CROP_ROWS.len(), SCREEN.1),
        (OBSERVATION_SIDE, OBSERVATION_SIDE),
    )
    .apply(
        Image::new(cropped, CROP_ROWS.len(), SCREEN.1, 3),
        &mut resized,
    );
    let mut out = vec![0.0; OBSERVATION_SIZE];
    grey_and_scale(&resized, &mut out);
    out
}

/// The outcome of one emulator frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    /// ALE's reward of the frame: −1, 0 or +1 in Pong.
    pub reward: i32,
    /// The game is over (`game_over(with_truncation=False)`): a player reached 21.
    pub terminated: bool,
    /// The episode hit the frame cap (`game_truncated()`).
    pub truncated: bool,
}

/// `PongNoFrameskip-v4` with the paper's observation; see the module documentation.
pub struct Pong {
    ale: Ale,
    rom: PathBuf,
    observation: PaperObservation,
}

impl Pong {
    /// `PongNoFrameskip-v4`. Fails, with a message that says to run `scripts/setup-ale`, when
    /// the ROM is missing.
    pub fn new() -> Result<Self, AleError> {
        Self::with_config(PongConfig::default())
    }

    /// Pong with the emulator settings of `config`; fails when the ROM is missing or not Pong's.
    pub fn with_config(config: PongConfig) -> Result<Self, AleError> {
        let rom = config.rom.unwrap_or_else(|| rom_path("pong"));
        Ale::supported_rom(&rom)?;
        let mut ale = Ale::new()?;
        ale.set_float(
            "repeat_action_probability",
            config.repeat_action_probability,
        )?;
        ale.set_int("max_num_frames_per_episode", config.max_frames_per_episode)?;
        ale.set_int("random_seed", ale_py_random_seed(0))?;
        ale.load_rom(&rom)?;
        let actions = ale.minimal_action_set();
        if actions != ACTIONS {
            return Err(AleError::Ale(format!(
                "{} has the minimal action set {actions:?}, not Pong's {ACTIONS:?}",
                rom.display()
            )));
        }
        let observation = PaperObservation::new(ale.palette());
        Ok(Self {
            ale,
            rom,
            observation,
        })
    }

    /// The emulator, for what the `Env` interface does not show (lives, frame numbers, screens).
    pub fn ale(&self) -> &Ale {
        &self.ale
    }

    /// The emulator, mutably, e.g. to act or reset it outside the `Env` interface.
    pub fn ale_mut(&mut self) -> &mut Ale {
        &mut self.ale
    }

    /// Path of the loaded ROM file.
    pub fn rom(&self) -> &Path {
        &self.rom
    }

    /// Starts an episode without making an observation: with a seed, ALE is seeded as ale-py
    /// seeds it and the ROM reloaded; then `reset_game`.
    pub fn reset_emulator(&mut self, seed: Option<u64>) {
        if let Some(seed) = seed {
            self.ale
                .set_int("random_seed", ale_py_random_seed(seed))
                .expect("random_seed is an ALE setting");
            self.ale
                .load_rom(&self.rom)
                .expect("the ROM loaded when the env was made");
        }
        self.ale.reset_game().expect("ALE resets a loaded game");
    }

    /// Emulates one frame with the action of index `action` in [`ACTIONS`], without making an
    /// observation.
    pub fn act(&mut self, action: usize) -> Frame {
        assert!(
            action < ACTIONS.len(),
            "Pong actions are 0..6, got {action}"
        );
        let reward = self.ale.act(ACTIONS[action]);
        Frame {
            reward,
            terminated: self.ale.game_over(false),
            truncated: self.ale.game_truncated(),
        }
    }

    /// The paper's observation of the current screen.
    pub fn observe(&mut self) -> Vec<f32> {
        let Self {
            ale, observation, ..
        } = self;
        observation.observe(ale.screen())
    }

    /// The cropped, resized RGB image of the current screen (84 × 84 × 3).
    pub fn resized_rgb(&mut self) -> &[u8] {
        let Self {
            ale, observation, ..
        } = self;
        observation.resized_rgb(ale.screen())
    }
}

impl Env for Pong {
    type Observation = Vec<f32>;
    type Action = usize;

    fn reset(&mut self, seed: Option<u64>) -> (Vec<f32>, Info<Vec<f32>>) {
        self.reset_emulator(seed);
        (self.observe(), Info::empty())
    }

    fn step(&mut self, action: &usize) -> Step<Vec<f32>> {
        let frame = self.act(*action);
        Step {
            observation: self.observe(),
            reward: frame.reward as f64,
            terminated: frame.terminated,
            truncated: frame.truncated,
            info: Info::empty(),
        }
    }

    fn observation_space(&self) -> Space {
        Space::uniform_box(
            -1.0,
            127.0 / 128.0,
            vec![OBSERVATION_SIDE, OBSERVATION_SIDE, 1],
        )
    }

    fn action_space(&self) -> Space {
        Space::Discrete(ACTIONS.len())
    }
}
