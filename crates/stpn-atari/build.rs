//! Compiles the Arcade Learning Environment 0.12.1 from the C++ source in the ale-py 0.12.1 sdist
//! (`scripts/setup-ale` unpacks it; `ALE_SRC` points elsewhere) together with the small C shim in
//! `csrc/`, with the `cc` crate.
//!
//! Why not ALE's own CMake: its Release build forces link-time optimisation, whose GCC LTO objects
//! `rust-lld` cannot read. The `cc` route needs only g++ and zlib (no cmake, SDL or libclang), and
//! compiles exactly the sources ALE's CMake lists for the C++ library without SDL.

use std::path::{Path, PathBuf};

const ALE_VERSION: &str = "0.12.1";
/// The folders of `src/ale` whose sources form the library (the others are the Python, vector,
/// and WebAssembly front ends).
const SOURCE_FOLDERS: [&str; 5] = [
    "common",
    "emucore",
    "environment",
    "games",
    "games/supported",
];

fn main() {
    println!("cargo::rerun-if-env-changed=ALE_SRC");
    println!("cargo::rerun-if-changed=csrc");
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = std::env::var_os("ALE_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join(format!("../../third_party/ale_py-{ALE_VERSION}")));
    let ale = root.join("src/ale");
    if !ale.join("ale_interface.cpp").is_file() {
        // One line, no panic backtrace: the fix is always the same.
        println!(
            "cargo::error=ALE source not found at {}: run scripts/setup-ale",
            root.display()
        );
        return;
    }
    println!("cargo::rerun-if-changed={}", ale.display());

    // ALE's CMake generates `version.hpp` from `version.hpp.in`; write the same file.
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let generated = out.join("include");
    std::fs::create_dir_all(&generated).unwrap();
    let (major, minor, patch) = {
        let mut parts = ALE_VERSION.split('.');
        (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        )
    };
    std::fs::write(
        generated.join("version.hpp"),
        format!(
            "#ifndef __VERSION_HPP__\n#define __VERSION_HPP__\n\
             #define ALE_VERSION \"{ALE_VERSION}\"\n#define ALE_VERSION_MAJOR \"{major}\"\n\
             #define ALE_VERSION_MINOR \"{minor}\"\n#define ALE_VERSION_PATCH \"{patch}\"\n\
             #define ALE_VERSION_GIT_SHA \"sdist\"\n#define STELLA_VERSION \"2.4.2\"\n#endif\n"
        ),
    )
    .unwrap();

    let mut sources = vec![ale.join("ale_interface.cpp")];
    for folder in SOURCE_FOLDERS {
        sources.extend(cpp_files(&ale.join(folder)));
    }
    sources.push(manifest.join("csrc/ale_shim.cpp"));

    cc::Build::new()
        .cpp(true)
        .std("c++17")
        // Emulation is only useful optimised, also in debug builds of the Rust code.
        .opt_level(3)
        .debug(false)
        // As the wheel's Release build: `NDEBUG` also skips `assert(seed >= 0)`, which the
        // negative seeds that ale-py passes (`np.int32` of a 32-bit word) would trip.
        .define("NDEBUG", None)
        .include(root.join("src"))
        .include(&ale)
        .include(&generated)
        // Third-party code: its warnings are not ours to fix.
        .warnings(false)
        .flag_if_supported("-w")
        .files(sources)
        .compile("ale");
    println!("cargo::rustc-link-lib=z");
}

/// The `.cpp` and `.cxx` files directly in `folder`, sorted (deterministic builds).
fn cpp_files(folder: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", folder.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            matches!(
                path.extension().and_then(|extension| extension.to_str()),
                Some("cpp" | "cxx")
            )
        })
        .collect();
    files.sort();
    files
}
