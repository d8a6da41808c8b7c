// A C interface to ale::ALEInterface (ALE 0.12.1) for Rust. Part of stpn-atari, GPL-2.0-only.
//
// Every function that can reach a C++ exception catches it and returns a status instead: an
// exception must never unwind into Rust. Status codes: 0 success, -1 failure (the message is then
// in the handle's last error, see stpn_ale_last_error).

#include <cstdint>
#include <cstring>
#include <exception>
#include <mutex>
#include <string>
#include <vector>

#include "ale/ale_interface.hpp"
#include "ale/emucore/MD5.hxx"

namespace {

struct Handle {
  ale::ALEInterface ale;
  std::string last_error;
};

void quiet_logger() {
  // Only errors reach stderr (ale-py does the same); the banner and per-ROM messages are Info.
  static std::once_flag once;
  std::call_once(once, [] { ale::Logger::setMode(ale::Logger::Error); });
}

template <typename F>
int guarded(Handle* handle, F&& body) {
  try {
    body();
    return 0;
  } catch (const std::exception& error) {
    handle->last_error = error.what();
  } catch (...) {
    handle->last_error = "unknown C++ exception";
  }
  return -1;
}

}  // namespace

extern "C" {

Handle* stpn_ale_new() {
  quiet_logger();
  try {
    return new Handle();
  } catch (...) {
    return nullptr;
  }
}

void stpn_ale_delete(Handle* handle) { delete handle; }

const char* stpn_ale_last_error(const Handle* handle) { return handle->last_error.c_str(); }

int stpn_ale_set_int(Handle* handle, const char* key, int value) {
  return guarded(handle, [&] { handle->ale.setInt(key, value); });
}

int stpn_ale_set_float(Handle* handle, const char* key, float value) {
  return guarded(handle, [&] { handle->ale.setFloat(key, value); });
}

int stpn_ale_set_bool(Handle* handle, const char* key, bool value) {
  return guarded(handle, [&] { handle->ale.setBool(key, value); });
}

// 1 if ALE 0.12.1 knows the ROM by its MD5 (its game name is then copied into `name`), 0 if not,
// -1 if the file cannot be read. Call before stpn_ale_load_rom: ALE's loadROM calls exit(1) on a
// ROM it cannot load.
int stpn_ale_supported_rom(const char* path, char* name, size_t capacity) {
  quiet_logger();
  try {
    auto game = ale::ALEInterface::isSupportedROM(path);
    if (!game) return 0;
    if (capacity > 0) {
      std::strncpy(name, game->c_str(), capacity - 1);
      name[capacity - 1] = '\0';
    }
    return 1;
  } catch (...) {
    return -1;
  }
}

int stpn_ale_load_rom(Handle* handle, const char* path) {
  return guarded(handle, [&] { handle->ale.loadROM(path); });
}

int stpn_ale_act(Handle* handle, int action, float paddle_strength) {
  return handle->ale.act(static_cast<ale::Action>(action), paddle_strength);
}

bool stpn_ale_game_over(const Handle* handle, bool with_truncation) {
  return handle->ale.game_over(with_truncation);
}

bool stpn_ale_game_truncated(const Handle* handle) { return handle->ale.game_truncated(); }

int stpn_ale_reset_game(Handle* handle) {
  return guarded(handle, [&] { handle->ale.reset_game(); });
}

int stpn_ale_lives(Handle* handle) { return handle->ale.lives(); }

int stpn_ale_frame_number(const Handle* handle) { return handle->ale.getFrameNumber(); }

int stpn_ale_episode_frame_number(const Handle* handle) {
  return handle->ale.getEpisodeFrameNumber();
}

// Writes at most `capacity` actions and returns how many the minimal set has.
size_t stpn_ale_minimal_action_set(const Handle* handle, int* actions, size_t capacity) {
  ale::ActionVect set = handle->ale.getMinimalActionSet();
  for (size_t i = 0; i < set.size() && i < capacity; i++) actions[i] = static_cast<int>(set[i]);
  return set.size();
}

size_t stpn_ale_screen_width(const Handle* handle) { return handle->ale.getScreen().width(); }

size_t stpn_ale_screen_height(const Handle* handle) { return handle->ale.getScreen().height(); }

// The screen as palette indices, row-major; valid until the next act or reset.
const uint8_t* stpn_ale_screen(const Handle* handle) { return handle->ale.getScreen().getArray(); }

// ALE's own conversions (height × width × 3 and height × width bytes).
void stpn_ale_screen_rgb(const Handle* handle, uint8_t* out) {
  std::vector<unsigned char> buffer;
  handle->ale.getScreenRGB(buffer);
  std::memcpy(out, buffer.data(), buffer.size());
}

void stpn_ale_screen_grayscale(const Handle* handle, uint8_t* out) {
  std::vector<unsigned char> buffer;
  handle->ale.getScreenGrayscale(buffer);
  std::memcpy(out, buffer.data(), buffer.size());
}

// The palette of the loaded ROM as lookup tables: `rgb` gets 256 × 3 bytes, `grey` 256 bytes, with
// exactly the values getScreenRGB and getScreenGrayscale give for a pixel of each index. (Screen
// pixels are even indices; ALE's grey of index i reads palette entry i + 1, so index 255, which
// never occurs, gets the grey of 254 instead of a read past the table.)
void stpn_ale_palette(const Handle* handle, uint8_t* rgb, uint8_t* grey) {
  uint8_t indices[256];
  for (int i = 0; i < 256; i++) indices[i] = static_cast<uint8_t>(i == 255 ? 254 : i);
  auto& palette = handle->ale.theOSystem->colourPalette();
  palette.applyPaletteGrayscale(grey, indices, 256);
  indices[255] = 255;
  palette.applyPaletteRGB(rgb, indices, 256);
}

int stpn_ale_save_screen_png(Handle* handle, const char* path) {
  return guarded(handle, [&] { handle->ale.saveScreenPNG(path); });
}

// The MD5 of `length` bytes as 32 hexadecimal digits and a NUL, with Stella's implementation (the
// one ALE identifies ROMs with).
void stpn_ale_md5(const uint8_t* bytes, size_t length, char* hex) {
  std::string digest = ale::stella::MD5(bytes, static_cast<uint32_t>(length));
  std::memset(hex, 0, 33);
  std::strncpy(hex, digest.c_str(), 32);
}

}  // extern "C"
