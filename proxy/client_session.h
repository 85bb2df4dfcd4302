#pragma once
// One client connection, served by one coroutine from accept to close:
// startup packet, client authentication, attaching a pooled server connection,
// then relaying both directions until either side leaves, and finally returning
// the server connection to its pool clean (or closing it).
#include <memory>
#include <string>

#include "pool/asio.h"
#include "pool/pool.h"
#include "protocol/read_buffer.h"
#include "protocol/relay_state.h"
#include "protocol/scanner.h"
#include "protocol/wire.h"
#include "proxy/context.h"

namespace sluice::proxy {

class ClientSession : public std::enable_shared_from_this<ClientSession> {
 public:
  ClientSession(tcp::socket socket, Context& context, std::uint64_t id);
  ~ClientSession();

  awaitable<void> run();
  // Thread-safe: closes the client (and its server connection) from the session's executor.
  void request_close();
  std::uint64_t id() const { return id_; }
  asio::any_io_executor executor() { return client_.get_executor(); }

 private:
  enum class RelayEnd {
    client_closed,
    client_terminated,
    client_protocol_error,
    server_closed,
    server_protocol_error,
    released,           // transaction/statement mode: the server is idle and owes nothing
    cancelled,          // the other pump ended first
    transaction_block,  // statement mode: the client opened a transaction
  };

  awaitable<void> serve();
  // Attaches a server if needed, relays until either side leaves, returns the server.
  awaitable<void> resume(error_code wait_error);
  awaitable<bool> read_startup();
  awaitable<bool> authenticate();
  std::shared_ptr<pool::Pool> find_pool();
  // Sends ParameterStatus, BackendKeyData and ReadyForQuery; attaches a server
  // first only when the pool has never reported parameters for these startup values.
  awaitable<bool> finish_login();
  awaitable<bool> attach_server();
  // Transaction/statement mode: SETs the client's tracked parameters that differ
  // on the connection it was just given; false (client told) if the server refuses.
  awaitable<bool> sync_parameters(const pool::ParameterList& wanted);
  // Transaction/statement mode: whether the attached server can go back to the
  // pool now (a reply is owed for nothing the client sent, and nothing is half-sent).
  bool release_due() const;
  awaitable<void> release_server();
  awaitable<void> wait_for_cancels_in_flight();
  // Waits, without a coroutine frame or buffer, for the client's next bytes.
  void park();
  // A ParameterStatus the client was sent: what it now believes.
  void client_parameter_changed(std::string_view name, std::string_view value);
  bool client_wants_to_leave();
  std::size_t forward_length(const protocol::StreamScanner::Outcome& outcome, std::size_t size);
  awaitable<RelayEnd> pump_client_to_server();
  awaitable<RelayEnd> pump_server_to_client();
  awaitable<void> return_server(bool client_said_goodbye);
  awaitable<bool> reset_server();
  awaitable<bool> drain_server();
  awaitable<bool> write_server(std::string_view bytes);

  // Login-phase reading of one typed client message into login_buffer_.
  awaitable<std::optional<protocol::Message>> read_client_message(std::size_t& consumed);
  awaitable<void> send_fatal(std::string_view sqlstate, std::string_view message, std::string_view detail = {});
  awaitable<bool> write_client(std::string_view bytes);
  void close_client();

  struct ParameterSink;

  tcp::socket client_;
  Context& context_;
  const std::uint64_t id_;
  std::string peer_;
  bool counted_ = false;
  std::unique_ptr<asio::steady_timer> login_timer_;  // only while logging in
  std::uint32_t max_message_size_;

  // Login.
  protocol::ReadBuffer login_buffer_{1024};
  std::string database_;  // as the client asked
  std::string user_;
  pool::StartupParams startup_params_;
  const config::Database* database_config_ = nullptr;
  const config::User* user_config_ = nullptr;
  protocol::BackendKey client_key_{};
  CancelsInFlight cancels_in_flight_;
  bool key_registered_ = false;

  // Relay.
  std::shared_ptr<pool::Pool> pool_;
  config::PoolMode pool_mode_ = config::PoolMode::session;
  // The reported parameters as the client knows them (told at login, then every
  // ParameterStatus relayed); shared with the pool's cache until one changes.
  std::shared_ptr<const pool::ParameterList> sent_parameters_;
  pool::Lease server_;
  // What only an attached session needs, allocated on attach so that a parked
  // (idle, logged-in) client carries none of it.
  struct Relay {
    explicit Relay(std::uint32_t max_message_size) : client_scanner(max_message_size) {}
    protocol::RelayState state;
    protocol::StreamScanner client_scanner;
    protocol::StreamScanner server_scanner{1u << 30};
    std::vector<std::uint8_t> client_buffer;
    std::vector<std::uint8_t> server_buffer;
    bool server_stream_broken = false;  // the server got part of a message: never reuse it
    bool forwarding = false;            // a write to the server was under way
  };
  std::unique_ptr<Relay> relay_;
  std::string protocol_error_;
  bool client_said_goodbye_ = false;
};

}  // namespace sluice::proxy
