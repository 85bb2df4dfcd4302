// Keeps the benchmark script working: runs `bench/compare.sh --quick` (its own throwaway
// PostgreSQL, this build's Sluice, PgBouncer; one round of 2 s of a few scenarios) and checks
// that it exits 0 and prints the results table. No timing assertions: the numbers of a 2-second
// run on a shared machine mean nothing, and a scenario cell may read "failed" (idle clients
// through Sluice in session mode, until a login stops needing a server connection).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#ifndef SLUICE_SOURCE_DIR
#error "SLUICE_SOURCE_DIR must be defined by the build (the repository root)"
#endif
#ifndef SLUICE_BINARY
#error "SLUICE_BINARY must be defined by the build (path of the sluice executable)"
#endif

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

struct Result {
  int exit_code = -1;  // -1: killed by a signal
  bool timed_out = false;
  std::string output;  // stdout and stderr
};

// Runs argv with stdout+stderr captured. After `timeout` the script gets SIGTERM (its trap
// stops everything it started and removes its temp dir), then SIGKILL 30 s later.
Result run(const std::vector<std::string>& argv, std::chrono::seconds timeout) {
  Result result;
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) {
    result.output = std::string("pipe2: ") + std::strerror(errno);
    return result;
  }
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t child = fork();
  if (child < 0) {
    result.output = std::string("fork: ") + std::strerror(errno);
    close(out[0]);
    close(out[1]);
    return result;
  }
  if (child == 0) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    for (int s : {SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGCHLD}) signal(s, SIG_DFL);
    const int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, 0);
    dup2(out[1], 1);
    dup2(out[1], 2);
    execvp(args[0], args.data());
    const char msg[] = "exec failed\n";
    (void)!write(2, msg, sizeof msg - 1);
    _exit(127);
  }
  close(out[1]);
  const auto deadline = Clock::now() + timeout;
  bool term_sent = false;
  char buf[4096];
  for (;;) {
    const auto now = Clock::now();
    if (now >= deadline && !term_sent) {
      result.timed_out = true;
      kill(child, SIGTERM);
      term_sent = true;
    } else if (now >= deadline + 30s) {
      kill(child, SIGKILL);
      break;
    }
    pollfd pfd{out[0], POLLIN, 0};
    if (poll(&pfd, 1, 500) <= 0) continue;
    const ssize_t n = read(out[0], buf, sizeof buf);
    if (n > 0) {
      result.output.append(buf, static_cast<std::size_t>(n));
    } else if (n == 0 || errno != EINTR) {
      break;
    }
  }
  close(out[0]);
  int status = 0;
  while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  return result;
}

TEST(BenchSmoke, QuickCompareRunsAndPrintsTheTable) {
  const std::string script = std::string(SLUICE_SOURCE_DIR) + "/bench/compare.sh";
  ASSERT_EQ(access(script.c_str(), X_OK), 0) << script << " is missing or not executable";

  char dir_template[] = "/tmp/sluice-bench-smoke-XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr) << std::strerror(errno);
  const std::string results_dir = dir_template;

  // --no-install: a test never installs packages (the chart is skipped without gnuplot).
  // --floor: the transparent relay (bench/floor_relay.c) is built and measured too.
  const Result r = run({"bash", script, "--quick", "--floor", "--sluice-binary", SLUICE_BINARY, "--results-dir",
                        results_dir, "--no-install"},
                       300s);
  std::printf("---- bench/compare.sh --quick ----\n%s\n----------------------------------\n", r.output.c_str());

  EXPECT_FALSE(r.timed_out) << "compare.sh --quick did not finish within 300 s";
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.output.find("| scenario | target | TPS |"), std::string::npos) << "no results table in the output";
  EXPECT_NE(r.output.find("| simple20 | floor |"), std::string::npos) << "no row for the floor relay";
  bool wrote_markdown = false;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(results_dir, ec)) {
    wrote_markdown |= entry.path().extension() == ".md";
  }
  EXPECT_TRUE(wrote_markdown) << "no .md report in " << results_dir;
  std::filesystem::remove_all(results_dir, ec);
}

}  // namespace
