#pragma once
// Pieces of the extended query protocol that transaction pooling needs to
// rewrite: views of the frontend messages that name prepared statements, their
// builders, which server message ends the answer to which request, and the SQL
// commands a client uses to drop statements. Pure code, unit-tested byte by byte.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "protocol/wire.h"

namespace sluice::protocol {

// Parse ('P'): statement name, then the rest of the body (query text, parameter
// types), which identifies the statement whatever the client called it.
struct ParseView {
  std::string_view name;
  Bytes tail;
};
[[nodiscard]] std::optional<ParseView> parse_parse(Bytes body) noexcept;

// Bind ('B'): portal and statement names, then the rest (formats, values).
struct BindView {
  std::string_view portal;
  std::string_view statement;
  Bytes tail;
};
[[nodiscard]] std::optional<BindView> parse_bind(Bytes body) noexcept;

// Describe ('D') and Close ('C'): 'S' for a statement or 'P' for a portal, and its name.
struct TargetView {
  char kind = 'S';
  std::string_view name;
};
[[nodiscard]] std::optional<TargetView> parse_target(Bytes body) noexcept;

void append_parse(std::string& out, std::string_view name, Bytes tail);
void append_bind(std::string& out, std::string_view portal, std::string_view statement, Bytes tail);
void append_describe(std::string& out, char kind, std::string_view name);
void append_close(std::string& out, char kind, std::string_view name);
void append_parse_complete(std::string& out);
void append_close_complete(std::string& out);
void append_command_complete(std::string& out, std::string_view tag);

// Whether `response` is the last message the server sends for `request`, when the
// request succeeds: Parse '1', Bind '2', Close '3', Describe 'T' or 'n', Execute
// 'C', 'I' or 's', Sync/Query/FunctionCall 'Z'. An ErrorResponse ends an extended
// request too (and the server then skips to Sync); see is_extended_request.
bool ends_response(char request, char response) noexcept;
// Parse, Bind, Describe, Execute, Close: after an error in one of them the server
// ignores everything up to the next Sync.
bool is_extended_request(char request) noexcept;

// SQL a client sends to drop prepared statements, recognised in a Query message
// that holds only that one command (psycopg 3 evicts its cache with DEALLOCATE).
struct StatementCommand {
  enum Kind { none, deallocate, deallocate_all, discard_all } kind = none;
  std::string name;  // for deallocate: the statement name, unquoted and case-folded as PostgreSQL would
};
StatementCommand classify_statement_command(std::string_view sql);

}  // namespace sluice::protocol
