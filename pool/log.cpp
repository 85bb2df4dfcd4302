#include "pool/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

namespace sluice {
std::shared_ptr<spdlog::logger> module_logger(const char* name) {
  if (auto existing = spdlog::get(name)) return existing;
  // Register under a lock-free check first; spdlog's registry is thread-safe.
  try {
    auto logger = spdlog::stderr_color_mt(name);
    logger->set_level(spdlog::get_level());
    return logger;
  } catch (const spdlog::spdlog_ex&) {
    return spdlog::get(name);  // created concurrently by another thread
  }
}
}  // namespace sluice
