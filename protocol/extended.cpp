#include "protocol/extended.h"

#include <cctype>
#include <cstring>
#include <vector>

namespace sluice::protocol {
namespace {

// A NUL-terminated string at `pos`; advances pos past the NUL.
std::optional<std::string_view> read_cstr(Bytes body, std::size_t& pos) noexcept {
  if (pos >= body.size()) return std::nullopt;
  const auto* start = body.data() + pos;
  const auto* nul = static_cast<const std::uint8_t*>(std::memchr(start, 0, body.size() - pos));
  if (nul == nullptr) return std::nullopt;
  std::string_view s(reinterpret_cast<const char*>(start), static_cast<std::size_t>(nul - start));
  pos += s.size() + 1;
  return s;
}

std::string_view as_view(Bytes bytes) { return {reinterpret_cast<const char*>(bytes.data()), bytes.size()}; }

// PostgreSQL's scanner: space, tab, newline, carriage return, form feed (not \v).
bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f'; }

// Splits SQL into words: keywords and identifiers (quoted ones unquoted). Returns
// false on anything else (comments, other punctuation), which the caller treats
// as "not a command we recognise".
bool split_words(std::string_view sql, std::vector<std::string>& words) {
  std::size_t i = 0;
  while (i < sql.size()) {
    const char c = sql[i];
    if (is_space(c)) {
      ++i;
    } else if (c == '"') {
      std::string word;
      ++i;
      for (;;) {
        if (i >= sql.size()) return false;
        if (sql[i] == '"') {
          if (i + 1 < sql.size() && sql[i + 1] == '"') {
            word.push_back('"');
            i += 2;
            continue;
          }
          ++i;
          break;
        }
        word.push_back(sql[i++]);
      }
      if (word.empty()) return false;
      words.push_back("\"" + word);  // marked as quoted: kept as written
    } else if (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || static_cast<unsigned char>(c) >= 0x80) {
      std::string word;
      while (i < sql.size() && (std::isalnum(static_cast<unsigned char>(sql[i])) || sql[i] == '_' || sql[i] == '$' ||
                                static_cast<unsigned char>(sql[i]) >= 0x80)) {
        word.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(sql[i]))));
        ++i;
      }
      words.push_back(std::move(word));
    } else if (c == ';') {
      ++i;
      while (i < sql.size() && is_space(sql[i])) ++i;
      return i == sql.size();  // only a trailing semicolon
    } else {
      return false;
    }
  }
  return true;
}

}  // namespace

std::optional<ParseView> parse_parse(Bytes body) noexcept {
  std::size_t pos = 0;
  auto name = read_cstr(body, pos);
  if (!name) return std::nullopt;
  return ParseView{*name, body.subspan(pos)};
}

std::optional<BindView> parse_bind(Bytes body) noexcept {
  std::size_t pos = 0;
  auto portal = read_cstr(body, pos);
  if (!portal) return std::nullopt;
  auto statement = read_cstr(body, pos);
  if (!statement) return std::nullopt;
  return BindView{*portal, *statement, body.subspan(pos)};
}

std::optional<TargetView> parse_target(Bytes body) noexcept {
  if (body.empty()) return std::nullopt;
  const char kind = static_cast<char>(body[0]);
  if (kind != 'S' && kind != 'P') return std::nullopt;
  std::size_t pos = 1;
  auto name = read_cstr(body, pos);
  if (!name || pos != body.size()) return std::nullopt;
  return TargetView{kind, *name};
}

void append_parse(std::string& out, std::string_view name, Bytes tail) {
  MessageBuilder(out, 'P').cstr(name).bytes(as_view(tail)).finish();
}

void append_bind(std::string& out, std::string_view portal, std::string_view statement, Bytes tail) {
  MessageBuilder(out, 'B').cstr(portal).cstr(statement).bytes(as_view(tail)).finish();
}

void append_describe(std::string& out, char kind, std::string_view name) {
  MessageBuilder(out, 'D').u8(static_cast<std::uint8_t>(kind)).cstr(name).finish();
}

void append_close(std::string& out, char kind, std::string_view name) {
  MessageBuilder(out, 'C').u8(static_cast<std::uint8_t>(kind)).cstr(name).finish();
}

void append_parse_complete(std::string& out) { MessageBuilder(out, '1').finish(); }
void append_close_complete(std::string& out) { MessageBuilder(out, '3').finish(); }
void append_command_complete(std::string& out, std::string_view tag) { MessageBuilder(out, 'C').cstr(tag).finish(); }

bool ends_response(char request, char response) noexcept {
  switch (request) {
    case 'P': return response == '1';
    case 'B': return response == '2';
    case 'C': return response == '3';
    case 'D': return response == 'T' || response == 'n';
    case 'E': return response == 'C' || response == 'I' || response == 's';
    case 'S':
    case 'Q':
    case 'F': return response == 'Z';
    default: return false;
  }
}

bool is_extended_request(char request) noexcept {
  return request == 'P' || request == 'B' || request == 'D' || request == 'E' || request == 'C';
}

StatementCommand classify_statement_command(std::string_view sql) {
  std::vector<std::string> words;
  if (sql.size() > 1024 || !split_words(sql, words)) return {};
  if (words.size() == 2 && words[0] == "discard" && words[1] == "all") return {StatementCommand::discard_all, {}};
  if (words.empty() || words[0] != "deallocate") return {};
  std::size_t at = 1;
  // PREPARE is optional, and also a valid statement name ("DEALLOCATE prepare").
  if (words.size() == 3 && words[at] == "prepare") ++at;
  if (at + 1 != words.size()) return {};
  const std::string& name = words[at];
  if (name == "all") return {StatementCommand::deallocate_all, {}};
  if (name.front() == '"') return {StatementCommand::deallocate, name.substr(1)};
  if (std::isdigit(static_cast<unsigned char>(name.front()))) return {};
  return {StatementCommand::deallocate, name};
}

}  // namespace sluice::protocol
