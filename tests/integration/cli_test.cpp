// The command line as PRODUCT.md specifies it: --check, --version, --help, and
// exit statuses 0 (clean), 2 (bad config or arguments), 1 (fatal runtime error).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <string>

#include "support/harness.h"

namespace {

struct Run {
  int status = -1;
  std::string output;  // stdout and stderr together
};

Run run_sluice(const std::string& args) {
  Run run;
  const std::string command = std::string(SLUICE_BINARY) + " " + args + " 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return run;
  std::array<char, 4096> chunk{};
  while (std::fgets(chunk.data(), chunk.size(), pipe) != nullptr) run.output += chunk.data();
  const int raw = ::pclose(pipe);
  run.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  return run;
}

std::string write_file(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + name;
  std::ofstream(path) << text;
  return path;
}

TEST(CliTest, VersionAndHelpExitZero) {
  auto version = run_sluice("--version");
  EXPECT_EQ(version.status, 0);
  EXPECT_NE(version.output.find("sluice "), std::string::npos) << version.output;
  auto help = run_sluice("--help");
  EXPECT_EQ(help.status, 0);
  EXPECT_NE(help.output.find("--check"), std::string::npos) << help.output;
}

TEST(CliTest, BadArgumentsExitTwo) {
  EXPECT_EQ(run_sluice("--bogus").status, 2);
  EXPECT_EQ(run_sluice("").status, 2);  // --config is required
}

TEST(CliTest, CheckAcceptsTheExampleConfig) {
  auto run = run_sluice("--check --config " + std::string(SLUICE_SOURCE_DIR) + "/examples/sluice.toml");
  EXPECT_EQ(run.status, 0) << run.output;
  EXPECT_NE(run.output.find("configuration is valid"), std::string::npos) << run.output;
}

TEST(CliTest, CheckListsEveryErrorWithPositionAndKey) {
  const auto path = write_file("cli_bad.toml",
                               "[sluice]\n"
                               "listen = [\"127.0.0.1:6432\", \"127.0.0.1:6432\"]\n"
                               "bogus = 1\n"
                               "[pool]\n"
                               "mode = \"transactional\"\n"
                               "[databases.app]\n"
                               "port = 99999\n");
  auto run = run_sluice("--check --config " + path);
  EXPECT_EQ(run.status, 2) << run.output;
  // Each error as file:line:column: key: message.
  EXPECT_NE(run.output.find(path + ":2:"), std::string::npos) << run.output;  // duplicate listen
  EXPECT_NE(run.output.find(path + ":3:1: sluice.bogus"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("pool.mode"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("databases.app.port"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("host"), std::string::npos) << run.output;  // missing host
}

TEST(CliTest, MissingConfigFileExitsTwo) {
  auto run = run_sluice("--config /nonexistent/sluice.toml");
  EXPECT_EQ(run.status, 2);
  EXPECT_NE(run.output.find("/nonexistent/sluice.toml"), std::string::npos) << run.output;
}

TEST(CliTest, ListenAddressInUseIsAFatalRuntimeError) {
  // One Sluice holds a port; a second one asked to listen there must fail with 1.
  sluice::test::SluiceProcess holder(sluice::test::default_config());
  const auto busy = write_file("cli_busy2.toml", "[sluice]\nlisten = [\"127.0.0.1:" +
                                                     std::to_string(holder.port()) +
                                                     "\"]\n[databases.app]\nhost = \"127.0.0.1\"\n");
  auto run = run_sluice("--config " + busy);
  EXPECT_EQ(run.status, 1) << run.output;
  EXPECT_NE(run.output.find("could not listen on 127.0.0.1:" + std::to_string(holder.port())), std::string::npos)
      << run.output;
  EXPECT_EQ(holder.stop(), 0) << holder.log();  // and the holder shuts down cleanly
}

}  // namespace
