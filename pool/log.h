#pragma once
// One spdlog logger per module ("pool", "proxy", "config"); every line about a
// connection starts with its id ([c12] client, [s7] server).
#include <spdlog/spdlog.h>

#include <memory>

namespace sluice {
std::shared_ptr<spdlog::logger> module_logger(const char* name);
}  // namespace sluice
