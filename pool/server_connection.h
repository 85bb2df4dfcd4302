#pragma once
// One authenticated connection from Sluice to a PostgreSQL backend, and the
// coroutine that opens it (TCP connect, StartupMessage, authentication as the
// server asks, parameter statuses, BackendKeyData, first ReadyForQuery).
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "config/tls.h"
#include "pool/asio.h"
#include "pool/prepared_statements.h"
#include "pool/stream.h"
#include "protocol/auth.h"
#include "protocol/wire.h"

namespace sluice::pool {

using Clock = std::chrono::steady_clock;

// Startup parameters a client asked for (everything but user and database),
// sorted by lower-cased name so that two sets compare equal regardless of order.
using StartupParams = std::vector<std::pair<std::string, std::string>>;
// Reportable server parameters (ParameterStatus name/value pairs).
using ParameterList = std::vector<std::pair<std::string, std::string>>;
StartupParams normalize_startup_params(StartupParams params);

// Reported parameters a client may set and that Sluice carries over when, in
// transaction or statement mode, the client moves to another server connection
// (compared case-insensitively with startup parameter names).
bool is_tracked_parameter(std::string_view name);
// The startup parameters that decide which server connections a client may share
// in transaction/statement mode: all but the tracked ones, which are SET instead.
StartupParams sharing_key(const StartupParams& params);

struct ServerCredential {
  std::string plain;     // cleartext password, when known
  std::string md5_hash;  // "md5..." hash, enough for md5 authentication
  // SCRAM keys a client proved (the user's password is known only as a SCRAM secret).
  std::shared_ptr<const protocol::auth::ScramKeys> scram_keys;
  bool empty() const { return plain.empty() && md5_hash.empty() && !scram_keys; }
};

struct ServerTarget {
  std::string host;
  std::uint16_t port = 5432;
  std::string dbname;
  std::string user;
  ServerCredential credential;
  // TLS settings (mode, context) for this server; null = plain TCP. Points into a
  // configuration that outlives every connection.
  const config::TlsSettings* tls = nullptr;
  std::string address() const { return host + ":" + std::to_string(port); }
};

class ServerConnection {
 public:
  ServerConnection(Stream stream, std::uint64_t id) : stream_(std::move(stream)), id_(id) {}

  // What the relay reads and writes (TLS or not).
  Stream& stream() { return stream_; }
  // The TCP connection under it.
  tcp::socket& socket() { return stream_.socket(); }
  std::uint64_t id() const { return id_; }

  protocol::BackendKey backend_key;
  // Current values of the server's reportable parameters, kept up to date from
  // every ParameterStatus the server sends.
  std::vector<std::pair<std::string, std::string>> parameters;
  // A shared list known to equal `parameters` (one that clients were told), so that
  // a session holding the same list checks it with a pointer comparison instead of
  // comparing every name and value on each attach. Dropped when a value changes.
  std::shared_ptr<const ParameterList> reports_as;
  ParameterList initial_parameters;  // what the server reported at login
  StartupParams startup_params;  // what this connection was opened with
  StartupParams pool_key;        // which clients may use it (see Pool)
  std::string address;           // "host:port" of the backend
  std::string host;              // where CancelRequests for it go
  std::uint16_t port = 0;
  std::uint64_t generation = 0;  // the pool's generation when it was opened (see RECONNECT)
  Clock::time_point created_at = Clock::now();
  Clock::time_point last_used_at = Clock::now();
  ServerStatements statements;   // shared prepared statements it holds (transaction mode)

  void set_parameter(std::string_view name, std::string_view value);

  // True when the socket has nothing to read and is not closed: a connection that
  // sat idle in the pool and received bytes (the server closed it, or sent an
  // unsolicited message) must not be handed out.
  bool idle_and_clean();
  // Best-effort Terminate, then close.
  void close();

 private:
  Stream stream_;
  std::uint64_t id_;
};

// Why a connection attempt failed. When PostgreSQL itself refused (bad password,
// no such database, too many connections), `server_error` holds its raw
// ErrorResponse message so the client can be shown exactly what PostgreSQL said.
struct ConnectFailure {
  std::string reason;        // for logs and for Sluice's own ErrorResponse
  std::string server_error;  // raw ErrorResponse bytes ('E' + length + body), may be empty
  std::string sqlstate;      // from server_error, or "08006" for transport failures
  // The host is at fault (unreachable, reset, timed out, garbled), as opposed to
  // this role's credentials or authentication setup: only then is it marked down.
  bool host_fault = false;
};

using ConnectResult = std::variant<std::unique_ptr<ServerConnection>, ConnectFailure>;

awaitable<ConnectResult> connect_server(const ServerTarget& target, const StartupParams& params,
                                        std::chrono::milliseconds timeout, std::uint64_t id);

// Runs `query` ("" = an empty query) and expects a clean answer ending in
// ReadyForQuery 'I' within `timeout`: the connection is alive and idle.
awaitable<bool> check_server(ServerConnection& conn, const std::string& query, std::chrono::milliseconds timeout);

// Sends `request` (whole messages ending in a Query or Sync) and reads the answer up
// to its ReadyForQuery, handing every message but ParameterStatus (applied to the
// connection) to `on_message`. Off the relay path: health checks, [auth_query].
struct ReadyOutcome {
  bool idle = false;  // ReadyForQuery 'I' with nothing after it: the connection may go back to the pool
};
awaitable<std::optional<ReadyOutcome>> exchange(ServerConnection& conn, std::string_view request,
                                                const std::function<void(const protocol::Message&)>& on_message);

// Sends a CancelRequest for `key` to `address` and waits until the server closes
// that connection (so the signal has been delivered when this returns).
awaitable<void> send_cancel(std::string host, std::uint16_t port, protocol::BackendKey key);

}  // namespace sluice::pool
