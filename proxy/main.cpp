// sluice --config FILE | --check --config FILE | --version | --help
// Exit status: 0 clean shutdown, 2 bad config or arguments, 1 fatal runtime error.
#include <spdlog/spdlog.h>

#include <cstdio>
#include <exception>
#include <iostream>
#include <string>

#include "config/config.h"
#include "pool/log.h"
#include "proxy/server.h"

namespace {

void print_usage(std::FILE* out) {
  std::fputs(
      "Usage: sluice --config FILE [--check]\n"
      "       sluice --version | --help\n\n"
      "  --config FILE   TOML configuration file\n"
      "  --check         validate the configuration, print every error, exit 0 (valid) or 2\n"
      "  --version       print the version and exit\n"
      "  --help          print this help and exit\n",
      out);
}

}  // namespace

int main(int argc, char** argv) {
  std::string config_path;
  bool check_only = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      print_usage(stdout);
      return 0;
    } else if (arg == "--version") {
      std::printf("sluice %s\n", SLUICE_VERSION);
      return 0;
    } else if (arg == "--check") {
      check_only = true;
    } else if (arg == "--config" && i + 1 < argc) {
      config_path = argv[++i];
    } else if (arg.starts_with("--config=")) {
      config_path = arg.substr(9);
    } else {
      std::fprintf(stderr, "sluice: unknown argument \"%s\"\n", arg.c_str());
      print_usage(stderr);
      return 2;
    }
  }
  if (config_path.empty()) {
    std::fprintf(stderr, "sluice: --config FILE is required\n");
    print_usage(stderr);
    return 2;
  }

  auto loaded = sluice::config::load_file(config_path);
  if (!loaded.errors.empty()) {
    for (const auto& error : loaded.errors) std::fprintf(stderr, "%s\n", error.to_string().c_str());
    std::fprintf(stderr, "sluice: %zu error(s) in %s\n", loaded.errors.size(), config_path.c_str());
    return 2;
  }
  if (check_only) {
    std::printf("%s: configuration is valid\n", config_path.c_str());
    return 0;
  }

  auto config = std::make_shared<const sluice::config::Config>(std::move(*loaded.config));
  spdlog::set_level(spdlog::level::from_str(config->log_level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%fZ %^%l%$ %n: %v", spdlog::pattern_time_type::utc);
  auto log = sluice::module_logger("proxy");
  try {
    sluice::proxy::Server server(config);
    server.bind();
    log->info("sluice {} started with {}", SLUICE_VERSION, config_path);
    return server.run();
  } catch (const std::exception& e) {
    log->critical("fatal: {}", e.what());
    return 1;
  }
}
