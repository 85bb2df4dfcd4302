// Configuration text: the TOML parser and Sluice's validation of every key.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "config/config.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto loaded = sluice::config::load_string(text, "fuzz.toml");
  if (loaded.config.has_value() == !loaded.errors.empty()) __builtin_trap();  // exactly one of the two
  for (const auto& error : loaded.errors) (void)error.to_string();
  return 0;
}
