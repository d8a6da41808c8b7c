//! A safe wrapper around `ale::ALEInterface` (ALE 0.12.1, compiled by `build.rs`), through the C
//! shim in `csrc/ale_shim.cpp`.

use std::ffi::{CStr, CString, c_char, c_int};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

mod ffi {
    use std::ffi::{c_char, c_int};

    /// `Handle` of the shim: an `ALEInterface` and its last error message.
    #[repr(C)]
    pub struct Handle {
        _private: [u8; 0],
    }

    unsafe extern "C" {
        pub fn stpn_ale_new() -> *mut Handle;
        pub fn stpn_ale_delete(handle: *mut Handle);
        pub fn stpn_ale_last_error(handle: *const Handle) -> *const c_char;
        pub fn stpn_ale_set_int(handle: *mut Handle, key: *const c_char, value: c_int) -> c_int;
        pub fn stpn_ale_set_float(handle: *mut Handle, key: *const c_char, value: f32) -> c_int;
        pub fn stpn_ale_set_bool(handle: *mut Handle, key: *const c_char, value: bool) -> c_int;
        pub fn stpn_ale_supported_rom(
            path: *const c_char,
            name: *mut c_char,
            capacity: usize,
        ) -> c_int;
        pub fn stpn_ale_load_rom(handle: *mut Handle, path: *const c_char) -> c_int;
        pub fn stpn_ale_act(handle: *mut Handle, action: c_int, paddle_strength: f32) -> c_int;
        pub fn stpn_ale_game_over(handle: *const Handle, with_truncation: bool) -> bool;
        pub fn stpn_ale_game_truncated(handle: *const Handle) -> bool;
        pub fn stpn_ale_reset_game(handle: *mut Handle) -> c_int;
        pub fn stpn_ale_lives(handle: *mut Handle) -> c_int;
        pub fn stpn_ale_frame_number(handle: *const Handle) -> c_int;
        pub fn stpn_ale_episode_frame_number(handle: *const Handle) -> c_int;
        pub fn stpn_ale_minimal_action_set(
            handle: *const Handle,
            actions: *mut c_int,
            capacity: usize,
        ) -> usize;
        pub fn stpn_ale_screen_width(handle: *const Handle) -> usize;
        pub fn stpn_ale_screen_height(handle: *const Handle) -> usize;
        pub fn stpn_ale_screen(handle: *const Handle) -> *const u8;
        pub fn stpn_ale_screen_rgb(handle: *const Handle, out: *mut u8);
        pub fn stpn_ale_screen_grayscale(handle: *const Handle, out: *mut u8);
        pub fn stpn_ale_palette(handle: *const Handle, rgb: *mut u8, grey: *mut u8);
        pub fn stpn_ale_save_screen_png(handle: *mut Handle, path: *const c_char) -> c_int;
        pub fn stpn_ale_md5(bytes: *const u8, length: usize, hex: *mut c_char);
    }
}

/// The folder that `scripts/setup-ale` copies the ROMs into (git-ignored).
pub const DEFAULT_ROM_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../third_party/roms");
/// The variable that overrides [`DEFAULT_ROM_DIR`].
pub const ROM_DIR_VARIABLE: &str = "STPN_ROM_DIR";

/// Where the ROM of `game` (e.g. `"pong"`) is: `$STPN_ROM_DIR/<game>.bin`, or in
/// [`DEFAULT_ROM_DIR`].
pub fn rom_path(game: &str) -> PathBuf {
    let folder = std::env::var_os(ROM_DIR_VARIABLE)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ROM_DIR));
    folder.join(format!("{game}.bin"))
}

/// The MD5 of `bytes` in hexadecimal, computed by Stella's MD5 (the one ALE identifies ROMs with).
pub fn md5_hex(bytes: &[u8]) -> String {
    assert!(
        bytes.len() <= u32::MAX as usize,
        "Stella's MD5 takes up to 4 GiB"
    );
    let mut hex = [0 as c_char; 33];
    // SAFETY: `bytes` is readable for its length; the shim writes 33 bytes into `hex`.
    unsafe { ffi::stpn_ale_md5(bytes.as_ptr(), bytes.len(), hex.as_mut_ptr()) };
    // SAFETY: NUL-terminated by the shim.
    unsafe { CStr::from_ptr(hex.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// Why ALE could not do something.
#[derive(Debug, thiserror::Error)]
pub enum AleError {
    /// No ROM file at this path.
    #[error("ROM not found at {}: run scripts/setup-ale (or set {ROM_DIR_VARIABLE})", .0.display())]
    RomNotFound(PathBuf),
    /// The file at this path is not a ROM that ALE 0.12.1 knows (its MD5 is not in ALE's list).
    #[error(
        "{} is not a ROM that ALE 0.12.1 supports (unknown MD5): run scripts/setup-ale",
        .0.display()
    )]
    UnsupportedRom(PathBuf),
    /// ALE reported an error (its message).
    #[error("ALE: {0}")]
    Ale(String),
}

/// The colours of the loaded ROM's palette, by palette index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Palette {
    /// What `getScreenRGB` gives for a pixel of each index.
    pub rgb: [[u8; 3]; 256],
    /// What `getScreenGrayscale` gives for a pixel of each index (ALE's luminance).
    pub grey: [u8; 256],
}

/// One Arcade Learning Environment. It owns its emulator and may move between threads.
pub struct Ale {
    handle: NonNull<ffi::Handle>,
}

// SAFETY: an `ALEInterface` holds no thread-affine state (the only global is the logger level,
// set once); it is never shared (`Ale` is not `Sync`), only moved.
unsafe impl Send for Ale {}

impl Drop for Ale {
    fn drop(&mut self) {
        // SAFETY: the handle came from `stpn_ale_new` and is deleted once.
        unsafe { ffi::stpn_ale_delete(self.handle.as_ptr()) }
    }
}

fn c_string(text: &str) -> CString {
    CString::new(text).expect("no NUL inside ALE keys and paths")
}

fn c_path(path: &Path) -> Result<CString, AleError> {
    CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| AleError::Ale(format!("path {} holds a NUL byte", path.display())))
}

impl Ale {
    /// A new emulator with ALE's default settings (note: ALE's default
    /// `repeat_action_probability` is 0.25; Gymnasium's v4 environments set 0).
    pub fn new() -> Result<Self, AleError> {
        // SAFETY: no preconditions; null means the constructor failed.
        let handle = unsafe { ffi::stpn_ale_new() };
        NonNull::new(handle)
            .map(|handle| Self { handle })
            .ok_or_else(|| AleError::Ale("could not create an ALEInterface".into()))
    }

    fn check(&self, status: c_int) -> Result<(), AleError> {
        if status == 0 {
            return Ok(());
        }
        // SAFETY: the shim returns a pointer to the handle's own NUL-terminated string.
        let message = unsafe { CStr::from_ptr(ffi::stpn_ale_last_error(self.handle.as_ptr())) };
        Err(AleError::Ale(message.to_string_lossy().into_owned()))
    }

    /// `setInt`. Settings take effect at the next [`Ale::load_rom`].
    pub fn set_int(&mut self, key: &str, value: i32) -> Result<(), AleError> {
        let key = c_string(key);
        // SAFETY: valid handle and NUL-terminated key.
        self.check(unsafe { ffi::stpn_ale_set_int(self.handle.as_ptr(), key.as_ptr(), value) })
    }

    /// `setFloat`. Settings take effect at the next [`Ale::load_rom`].
    pub fn set_float(&mut self, key: &str, value: f32) -> Result<(), AleError> {
        let key = c_string(key);
        // SAFETY: as `set_int`.
        self.check(unsafe { ffi::stpn_ale_set_float(self.handle.as_ptr(), key.as_ptr(), value) })
    }

    /// `setBool`. Settings take effect at the next [`Ale::load_rom`].
    pub fn set_bool(&mut self, key: &str, value: bool) -> Result<(), AleError> {
        let key = c_string(key);
        // SAFETY: as `set_int`.
        self.check(unsafe { ffi::stpn_ale_set_bool(self.handle.as_ptr(), key.as_ptr(), value) })
    }

    /// The game name under which ALE 0.12.1 knows the ROM at `path`, checked by MD5.
    pub fn supported_rom(path: &Path) -> Result<String, AleError> {
        if !path.is_file() {
            return Err(AleError::RomNotFound(path.to_path_buf()));
        }
        let c_path = c_path(path)?;
        let mut name = [0 as c_char; 64];
        // SAFETY: NUL-terminated path; the buffer's capacity is passed.
        match unsafe { ffi::stpn_ale_supported_rom(c_path.as_ptr(), name.as_mut_ptr(), name.len()) }
        {
            1 => {
                // SAFETY: the shim NUL-terminates within the capacity.
                let name = unsafe { CStr::from_ptr(name.as_ptr()) };
                Ok(name.to_string_lossy().into_owned())
            }
            0 => Err(AleError::UnsupportedRom(path.to_path_buf())),
            _ => Err(AleError::RomNotFound(path.to_path_buf())),
        }
    }

    /// `loadROM`: (re)creates the console with the current settings and resets the game. The
    /// ROM is checked first, because ALE itself calls `exit(1)` on a ROM it cannot load.
    pub fn load_rom(&mut self, path: &Path) -> Result<(), AleError> {
        Self::supported_rom(path)?;
        let c_path = c_path(path)?;
        // SAFETY: valid handle and NUL-terminated path of a ROM ALE supports.
        self.check(unsafe { ffi::stpn_ale_load_rom(self.handle.as_ptr(), c_path.as_ptr()) })
    }

    /// `act(action)` with paddle strength 1: one emulator frame (ALE's `frame_skip` setting is
    /// 1 unless set), returning the reward. `action` is an ALE action code (0..18).
    pub fn act(&mut self, action: i32) -> i32 {
        // SAFETY: valid handle; a ROM is loaded (every constructor in this crate loads one).
        unsafe { ffi::stpn_ale_act(self.handle.as_ptr(), action, 1.0) }
    }

    /// `game_over(with_truncation)`.
    pub fn game_over(&self, with_truncation: bool) -> bool {
        // SAFETY: valid handle.
        unsafe { ffi::stpn_ale_game_over(self.handle.as_ptr(), with_truncation) }
    }

    /// `game_truncated()`: the frame cap `max_num_frames_per_episode` was reached.
    pub fn game_truncated(&self) -> bool {
        // SAFETY: valid handle.
        unsafe { ffi::stpn_ale_game_truncated(self.handle.as_ptr()) }
    }

    /// `reset_game()`.
    pub fn reset_game(&mut self) -> Result<(), AleError> {
        // SAFETY: valid handle.
        self.check(unsafe { ffi::stpn_ale_reset_game(self.handle.as_ptr()) })
    }

    /// `lives()`: the lives left in the game (constant in games without lives, such as Pong).
    pub fn lives(&mut self) -> i32 {
        // SAFETY: valid handle.
        unsafe { ffi::stpn_ale_lives(self.handle.as_ptr()) }
    }

    /// Frames emulated since the ROM was loaded.
    pub fn frame_number(&self) -> i32 {
        // SAFETY: valid handle.
        unsafe { ffi::stpn_ale_frame_number(self.handle.as_ptr()) }
    }

    /// Frames emulated since the episode started.
    pub fn episode_frame_number(&self) -> i32 {
        // SAFETY: valid handle.
        unsafe { ffi::stpn_ale_episode_frame_number(self.handle.as_ptr()) }
    }

    /// `getMinimalActionSet()`: the ALE action codes the game uses.
    pub fn minimal_action_set(&self) -> Vec<i32> {
        let mut actions = [0 as c_int; 18];
        // SAFETY: valid handle; the buffer's capacity is passed.
        let count = unsafe {
            ffi::stpn_ale_minimal_action_set(
                self.handle.as_ptr(),
                actions.as_mut_ptr(),
                actions.len(),
            )
        };
        actions[..count.min(actions.len())].to_vec()
    }

    /// (height, width) of the screen: (210, 160).
    pub fn screen_size(&self) -> (usize, usize) {
        // SAFETY: valid handle.
        unsafe {
            (
                ffi::stpn_ale_screen_height(self.handle.as_ptr()),
                ffi::stpn_ale_screen_width(self.handle.as_ptr()),
            )
        }
    }

    /// The screen as palette indices, row-major (see [`Ale::palette`]).
    pub fn screen(&self) -> &[u8] {
        let (height, width) = self.screen_size();
        // SAFETY: the screen buffer has height × width bytes and lives as long as the console;
        // the borrow of `self` keeps `act`, `reset_game` and `load_rom` (all `&mut`) away.
        unsafe {
            std::slice::from_raw_parts(ffi::stpn_ale_screen(self.handle.as_ptr()), height * width)
        }
    }

    /// `getScreenRGB()` into `out` (height × width × 3 bytes).
    pub fn screen_rgb(&self, out: &mut [u8]) {
        let (height, width) = self.screen_size();
        assert_eq!(out.len(), height * width * 3, "RGB screen size");
        // SAFETY: `out` has the size ALE writes.
        unsafe { ffi::stpn_ale_screen_rgb(self.handle.as_ptr(), out.as_mut_ptr()) }
    }

    /// `getScreenGrayscale()` into `out` (height × width bytes).
    pub fn screen_grayscale(&self, out: &mut [u8]) {
        let (height, width) = self.screen_size();
        assert_eq!(out.len(), height * width, "grayscale screen size");
        // SAFETY: `out` has the size ALE writes.
        unsafe { ffi::stpn_ale_screen_grayscale(self.handle.as_ptr(), out.as_mut_ptr()) }
    }

    /// The loaded ROM's palette, to convert [`Ale::screen`] without going through ALE.
    pub fn palette(&self) -> Palette {
        let mut rgb = [0u8; 256 * 3];
        let mut grey = [0u8; 256];
        // SAFETY: buffers of the sizes the shim writes.
        unsafe { ffi::stpn_ale_palette(self.handle.as_ptr(), rgb.as_mut_ptr(), grey.as_mut_ptr()) };
        let mut colours = [[0u8; 3]; 256];
        for (colour, bytes) in colours.iter_mut().zip(rgb.chunks_exact(3)) {
            colour.copy_from_slice(bytes);
        }
        Palette { rgb: colours, grey }
    }

    /// `saveScreenPNG(path)`.
    pub fn save_screen_png(&mut self, path: &Path) -> Result<(), AleError> {
        let c_path = c_path(path)?;
        // SAFETY: valid handle and NUL-terminated path.
        self.check(unsafe { ffi::stpn_ale_save_screen_png(self.handle.as_ptr(), c_path.as_ptr()) })
    }
}
