#pragma once
// Helpers shared by the config tests: load a document written as a raw string, and
// check that it gives exactly one error at a given place.
#include <gtest/gtest.h>

#include <initializer_list>
#include <string>
#include <string_view>

#include "config/config.h"

namespace sluice::config::test_support {

// A TOML document written as a raw string starting with a newline; line 1 is the
// line after `R"(`, so the line numbers in the tests match what one sees.
inline std::string doc(std::string_view text) {
  if (!text.empty() && text.front() == '\n') text.remove_prefix(1);
  return std::string(text);
}

inline LoadResult load(std::string_view text) { return load_string(doc(text), "test.toml"); }

inline std::string describe(const LoadResult& result) {
  std::string out;
  for (const auto& e : result.errors) out += "\n  " + e.to_string();
  return out.empty() ? " (no errors)" : out;
}

// Exactly one error, at `line` (and `column` unless 0) on `key`, whose message contains
// every one of `parts`; and no Config.
inline ::testing::AssertionResult OnlyError(const LoadResult& result, int line, int column, const std::string& key,
                                            std::initializer_list<std::string> parts) {
  if (result.errors.size() != 1)
    return ::testing::AssertionFailure() << "expected exactly one error, got" << describe(result);
  const ConfigError& e = result.errors.front();
  bool ok = e.line == line && (column == 0 || e.column == column) && e.key == key;
  for (const auto& part : parts) ok = ok && e.message.find(part) != std::string::npos;
  if (!ok) {
    auto failure = ::testing::AssertionFailure();
    failure << "expected test.toml:" << line << ":" << column << ": " << key << ": ...";
    for (const auto& part : parts) failure << " \"" << part << "\"";
    return failure << " ..., got" << describe(result);
  }
  if (result.config) return ::testing::AssertionFailure() << "config set despite errors";
  return ::testing::AssertionSuccess();
}

inline ::testing::AssertionResult OnlyError(const LoadResult& result, int line, int column, const std::string& key,
                                            const std::string& message) {
  return OnlyError(result, line, column, key, {message});
}

}  // namespace sluice::config::test_support
