#pragma once
// One client connection, served by one coroutine from accept to close:
// startup packet, client authentication, attaching a pooled server connection,
// then relaying both directions until either side leaves, and finally returning
// the server connection to its pool clean (or closing it).
#include <boost/container/devector.hpp>
#include <chrono>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include "pool/asio.h"
#include "pool/pool.h"
#include "protocol/extended.h"
#include "protocol/read_buffer.h"
#include "protocol/relay_state.h"
#include "protocol/scanner.h"
#include "protocol/wire.h"
#include "proxy/admin_console.h"
#include "proxy/context.h"
#include "proxy/reused_fifo.h"

namespace sluice::proxy {

class ClientSession : public std::enable_shared_from_this<ClientSession>, public pool::Pool::WaitListener {
 public:
  ClientSession(tcp::socket socket, Context& context, std::uint64_t id);
  ~ClientSession();

  awaitable<void> run();
  // Thread-safe: closes the client (and its server connection) from the session's executor.
  // With tell_client, a logged-in client between messages gets FATAL 57P01 first.
  void request_close(bool tell_client = false);
  // Thread-safe (shutdown): closes the client with 57P01 once it is between
  // transactions (at once when it is).
  void request_graceful_close();
  std::uint64_t id() const { return id_; }
  asio::any_io_executor executor() { return client_.get_executor(); }

  // The statement this session is running, for SHOW ACTIVE. Call on the session's
  // executor only.
  struct ActiveStatement {
    std::string database, user, application_name, client, protocol, query;
    std::int32_t backend_pid = 0;
    std::chrono::steady_clock::duration running{};
    bool slow = false;  // at or over its slow_query threshold
  };
  std::optional<ActiveStatement> active_statement() const;
  // SHOW CLIENTS / SHOW SERVERS rows of this session (its server's, when one is
  // attached). nullopt before login. Call on the session's executor only.
  struct ConnectionRows {
    ConsoleConnection client;
    std::optional<ConsoleConnection> server;
  };
  std::optional<ConnectionRows> connection_rows() const;
  // The database it logged in to ("" before login). On the session's executor only.
  const std::string& database() const { return database_; }

 private:
  // A request passed to the server (or answered here), in order, until the server
  // message that ends its answer has gone by.
  struct PendingRequest {
    enum class Answer : std::uint8_t {
      relay,           // the server's answer goes to the client
      hide,            // Sluice's own request (injected Parse or Close): the answer is dropped
      parse_complete,  // the server had the statement: ParseComplete is made here
      close_complete,  // Close of a statement is answered here (the server keeps it for others)
      deallocate,      // SQL DEALLOCATE of a protocol-level statement, answered here
    };
    PendingRequest() = default;
    PendingRequest(char request, Answer how) : type(request), answer(how) {}
    char type = 0;
    Answer answer = Answer::relay;
    bool failed = false;             // an ErrorResponse came while this request was first in line
    bool clears_statements = false;  // DISCARD ALL / DEALLOCATE ALL: the server's statements go
    pool::StatementPtr registers;    // a Parse that put this statement on the server
    std::string client_name;         // a client's named Parse: its name is free again if it fails
    pool::StatementPtr uses;         // a Bind of a shared statement (retried if its plan went stale)
  };

  enum class RelayEnd {
    client_closed,
    client_terminated,
    client_protocol_error,
    server_closed,
    server_protocol_error,
    released,           // transaction/statement mode: the server is idle and owes nothing
    cancelled,          // the other pump ended first
    transaction_block,  // statement mode: the client opened a transaction
    // The exchange without the `||` of two pumps (see resume):
    awaiting_answer,  // the client step sent whole requests that await their answers
    needs_both,    // the exchange must go on with both pumps
    internal_error,  // a handler chain step threw (see relay_plain_session)
  };

  awaitable<void> serve();
  // Attaches a server if needed, relays until either side leaves, returns the server.
  awaitable<void> resume(error_code wait_error);
  // resume()'s relay, with the server attached; `handed_over` is where the lone
  // exchange's handler chain stopped (see exchange_without_coroutine).
  awaitable<void> relay(std::optional<RelayEnd> handed_over);
  // Runs `work` for the session, logging an exception that escapes it.
  static void spawn(std::shared_ptr<ClientSession> self, awaitable<void> work);
  awaitable<bool> read_startup();
  // The admin console (database "sluice" or "pgbouncer"): simple queries answered here.
  awaitable<void> serve_console();
  // SHOW ACTIVE: statements running now in every session, longest first.
  static bool is_show_active(std::string_view sql);
  awaitable<std::string> show_active();
  // Reads every session's rows on its own executor (SHOW CLIENTS / SERVERS).
  awaitable<std::vector<ConnectionRows>> gather_connection_rows();
  // KILL: closes every client session of `database` (on their executors).
  awaitable<void> close_sessions_of(std::string database);
  // [auth_query]: the user (into looked_up_user_) for a name without a [users]
  // entry; false when the lookup failed (client told).
  awaitable<bool> look_up_user();
  // TLS handshake with the client (after SSLRequest, or at once for direct TLS).
  awaitable<bool> start_client_tls(bool direct);
  // tls.client.mode require/verify-*, client certificates and [[hba]] rules: how
  // this client must prove who it is, or false (client told) when it may not log in.
  awaitable<bool> check_access();
  // Common name of the client's verified certificate; empty when there is none.
  std::string client_certificate_name();
  awaitable<bool> authenticate();
  // A failed login: slowed down for addresses that keep failing, then FATAL.
  awaitable<void> refuse_login(std::string_view sqlstate, std::string message);
  std::shared_ptr<pool::Pool> find_pool();
  // Sends ParameterStatus, BackendKeyData and ReadyForQuery; attaches a server
  // first only when the pool has never reported parameters for these startup values.
  awaitable<bool> finish_login();
  awaitable<bool> attach_server();
  // attach_server after the pool's answer: the server adopted, or the client told.
  awaitable<bool> attach_acquired(pool::AcquireResult acquired);
  // attach_server, noting how long the client's request waited for it.
  awaitable<bool> attach_timed();
  // Attaching without a coroutine when the pool has an idle connection ready
  // (Pool::try_acquire_idle): attached, attached but the connection's reported
  // parameters still to be settled (settle_parameters), or not attached.
  enum class AttachNow : std::uint8_t { attached, settle, none };
  AttachNow attach_now();
  void adopt_server(pool::Lease lease);
  // The attached connection reports exactly what the client was told.
  bool parameters_known();
  // Otherwise: SETs (transaction mode) and ParameterStatus for what differs.
  awaitable<bool> settle_parameters();
  // Transaction/statement mode: SETs the client's tracked parameters that differ
  // on the connection it was just given; false (client told) if the server refuses.
  awaitable<bool> sync_parameters(const pool::ParameterList& wanted);
  // Transaction/statement mode: whether the attached server can go back to the
  // pool now (a reply is owed for nothing the client sent, and nothing is half-sent).
  bool release_due() const;
  awaitable<void> release_server();
  // Releases at once when no cancel is in flight (only the server pump may: the
  // server socket must have no other operation pending); false otherwise.
  bool release_now();
  awaitable<void> wait_for_cancels_in_flight();
  // Waits, without a coroutine frame or buffer, for the client's next bytes.
  void park();
  static void wake_parked(std::shared_ptr<ClientSession> self, error_code ec);
  // The client watch (plain TCP): a one-byte MSG_PEEK receive on the client. Started
  // while a lone server pump waits for an answer (it tells whether the client spoke
  // or left meanwhile), it goes on as the park's wait once the server is released.
  enum class ClientWatch : std::uint8_t { none, watching, fired };
  void start_client_watch();
  void client_watch_done(std::uint32_t generation, error_code ec, std::size_t n);
  // Forgets the watch (cancelling it if pending) before the client is read again.
  void take_watched_bytes();  // what the client watch read goes to login_buffer_
  void abandon_client_watch();
  // A ParameterStatus the client was sent: what it now believes.
  void client_parameter_changed(std::string_view name, std::string_view value);
  enum class ClientReadiness { leaving, has_bytes, nothing };
  // What a parked client's socket holds: EOF or a Terminate (leaving), a request,
  // or nothing after all (from the byte the park peeked, when it did).
  ClientReadiness client_readiness();
  std::size_t forward_length(const protocol::StreamScanner::Outcome& outcome, std::size_t size);
  // The tracked pumps' steps, shared with the lone exchange's handler chain.
  struct ClientScan {
    bool terminated = false;     // a Terminate was relayed
    bool protocol_error = false;  // relay_->protocol_error says why
    std::size_t wanted = 0;      // bytes still missing from the message that starts the rest
  };
  // Whole messages from relay_->client_in to relay_->client_out (relayed, rewritten
  // or answered here).
  // The client's bytes kept in login_buffer_ go to relay_->client_in.
  void take_kept_bytes();
  ClientScan scan_client_bytes(protocol::FrontendObserver& observer);
  // After relay_->client_out went to the server: how the client step ends, or
  // nullopt when it goes on reading.
  std::optional<RelayEnd> requests_sent(bool one_request, bool terminated);
  struct ParameterSink;  // a server's ParameterStatus, told to the connection and the client's tracking
  struct ServerScan {
    const std::uint8_t* data = nullptr;  // relay_->server_in's bytes as scanned
    std::size_t pos = 0;                 // how many of them were dealt with
    std::size_t flushed = 0;             // how many of those are in relay_->server_out already
    bool rewritten = false;              // the reply is relay_->server_out, not data[0, pos)
    bool protocol_error = false;
    std::size_t wanted = 0;       // bytes still missing from the message that starts the rest
    pool::StatementPtr retry;     // a stale plan to prepare again (retry_stale_plan) first
    const std::uint8_t* reply = nullptr;  // what goes to the client (reply_ready)
    std::size_t reply_size = 0;
  };
  // Whole server messages in relay_->server_in: observed, matched to the requests
  // in flight, and passed on, dropped or joined by answers made here.
  ServerScan scan_server_bytes(protocol::BackendObserver<ParameterSink>& observer);
  // Settles the reply and consumes its bytes; releases the server when its work is
  // done (true then), before the client has the reply.
  bool reply_ready(ServerScan& scan);
  // After the reply went to the client (or failed to): how the server step ends, or
  // nullopt when it goes on reading.
  std::optional<RelayEnd> reply_sent(bool solo, bool released, bool sent);
  // The lone exchange as a handler chain, when the wake from the park allows it
  // (false: resume() does the whole job).
  bool exchange_without_coroutine(error_code wait_error);
  // The lone exchange's wait for a server, queued without a coroutine when that
  // is all Pool::acquire would do (false: resume() waits). Its turn comes in
  // wait_served (under the pool's lock, from any thread), which posts wait_done.
  bool wait_without_coroutine();
  void wait_served() override;
  void wait_done();
  // A wait for a server: SHOW CLIENTS' state and the pool's waiting count.
  void start_waiting(std::chrono::steady_clock::time_point now);
  void stop_waiting();
  // What attaching a server took, from `started` (the pool's wait_us, the statement's timing).
  void record_attach_wait(std::chrono::steady_clock::time_point started, std::chrono::steady_clock::time_point now);
  // A server attached with the whole request stashed: the lone exchange goes on
  // as a chain of handlers, as it does when an idle server is there at once.
  // Otherwise the relay's coroutines take over.
  awaitable<void> exchange_attached();
  // The client's stashed bytes are whole requests that await their answers, on a
  // plain-TCP client in transaction or statement mode: the lone exchange's handler
  // chain can send them at once.
  bool lone_request_stashed() const;
  template <class Step>
  void lone_step(Step&& step) noexcept;
  void hand_over(RelayEnd end);
  void send_lone_request();
  void read_lone_reply();
  void lone_reply_read(error_code ec, std::size_t n, bool read);
  awaitable<void> finish_lone_reply(ServerScan scan);
  awaitable<void> lone_reply_sent(bool released, bool sent);
  void lone_reply_done(std::optional<RelayEnd> end);
  // Why a client's message length was refused (RelayEnd::client_protocol_error).
  std::string client_length_error(bool too_large) const;
  awaitable<RelayEnd> pump_client_to_server();
  awaitable<RelayEnd> pump_server_to_client();
  // Session mode over plain TCP: the same two pumps as chains of completion
  // handlers, which resume() awaits once per attach instead of resuming two
  // coroutines per round trip.
  awaitable<RelayEnd> relay_plain_session();
  void read_client_plain();
  void relay_client_plain(std::size_t n);
  void client_plain_relayed(std::size_t n, bool terminated);
  void read_server_plain();
  void relay_server_plain(error_code ec, std::size_t n);
  void server_plain_relayed(std::size_t n, bool scanned, bool delivered);
  void plain_direction_done(RelayEnd end);
  // Runs one step of a chain: what would have ended the session coroutine (and
  // been logged) ends the relay instead of escaping io_context::run.
  template <class Step>
  void plain_step(Step&& step) noexcept;
  // Starts an operation on the server socket whose completion must run on the
  // session's executor (a pooled server's socket may have another's).
  template <class Initiate, class Handler>
  void on_session_executor(Initiate&& initiate, Handler&& handler);
  // The same, message by message, for transaction/statement mode with shared
  // prepared statements: client statement names are mapped to server-side ones,
  // a Parse the server already has is answered here, one it lacks is sent first.
  // With `one_request`, the client step of a lone exchange: one read, its messages
  // sent, then awaiting_answer (whole requests that await answers went out) or
  // needs_both. With `solo`, the server pump runs without the client pump: it
  // returns needs_both as soon as the client must be read (it spoke or left, the
  // answers are all in without a release, or the server wants COPY data).
  awaitable<RelayEnd> pump_client_tracked(bool one_request = false);
  awaitable<RelayEnd> pump_server_tracked(bool solo = false);
  // Rewrites one complete client message into `out`; false for Terminate.
  bool relay_client_message(char type, protocol::Bytes body, protocol::Bytes raw, std::string& out);
  // Appends a Parse for `statement` unless the server has it (closing the least
  // recently used statement first when the server's cache is full).
  void ensure_prepared(const pool::StatementPtr& statement, std::string& out);
  // Answers produced here for requests at the head of the queue.
  void append_local_answers(std::string& out);
  void forget_request_effects(const PendingRequest& request);
  // A CommandComplete that may have dropped prepared statements on the server.
  void note_statement_drop(protocol::Bytes command_complete);
  // Records a client message in the current batch (transaction mode).
  void record_batch(char type, protocol::Bytes raw);
  // Whether an ErrorResponse for the Bind at the head of the queue is PostgreSQL's
  // "cached plan must not change result type" and the batch can safely run again.
  bool stale_plan_retryable(protocol::Bytes error_body) const;
  // Gives the statement a new server-side name and sends the batch again; the
  // error and the ReadyForQuery of the failed attempt are hidden.
  awaitable<bool> retry_stale_plan(pool::StatementPtr stale);
  awaitable<bool> send_to_server(const std::uint8_t* data, std::size_t size);
  awaitable<bool> send_to_client(const std::uint8_t* data, std::size_t size);
  bool client_side_at_boundary() const;
  bool server_side_at_boundary() const;
  awaitable<void> return_server(bool client_said_goodbye);
  awaitable<bool> reset_server();
  awaitable<bool> drain_server();
  awaitable<bool> write_server(std::string_view bytes);

  // Login-phase reading of one typed client message into login_buffer_.
  awaitable<std::optional<protocol::Message>> read_client_message(std::size_t& consumed);
  awaitable<void> send_fatal(std::string_view sqlstate, std::string_view message, std::string_view detail = {});
  awaitable<bool> write_client(std::string_view bytes);
  void close_client();

  template <class Base> struct RecordingFrontend;
  template <class Base> struct RecordingBackend;
  // A statement on its way through Sluice, timed for the slow-query log.
  struct InFlightStatement {
    char kind = 'Q';  // 'Q' simple query, 'E' Execute
    std::chrono::steady_clock::time_point start;
    std::chrono::steady_clock::duration wait{};  // for a server connection
    std::shared_ptr<const std::string> text;   // when the shape was not known at the start
    std::shared_ptr<const QueryShape> shape;  // when it was
    std::string command;
    std::optional<std::int64_t> rows;
    std::string sqlstate;
  };
  // Statement timing (when a slow-query log is configured).
  void note_client_message(char type, protocol::Bytes body);
  void note_server_message(char type, protocol::Bytes body);
  void finish_statement(InFlightStatement& statement);

  pool::Stream client_;
  Context& context_;
  const std::uint64_t id_;
  std::string peer_;
  // IP only (peer_ without its port; "" when unknown), for [[hba]] and the
  // auth-failure throttle.
  std::string peer_address() const;
  // [tls.client] of the configuration this session began under (kept alive by the
  // Context): a RELOAD with new certificates applies to new connections only.
  const config::TlsSettings* client_tls_ = nullptr;
  // SCRAM pass-through: the keys this client proved, when Sluice knows the user's
  // password only as a SCRAM secret (handed to the pool, which logs in with them).
  // Held only from authentication until the pool has them.
  std::unique_ptr<protocol::auth::ScramKeys> proven_keys_;
  // A user found by [auth_query] (user_config_ points here).
  std::shared_ptr<const config::User> looked_up_user_;
  std::unique_ptr<asio::steady_timer> login_timer_;  // only while logging in

  // Login.
  protocol::ReadBuffer login_buffer_{1024};
  std::string database_;  // as the client asked
  std::string user_;
  pool::StartupParams startup_params_;
  const config::Database* database_config_ = nullptr;
  const config::User* user_config_ = nullptr;
  protocol::BackendKey client_key_{};
  // Where a cancel for this client goes, and the cancels on their way there.
  CancelSlot cancel_slot_;
  // The counter, shared by owning the session (no allocation of its own).
  CancelsInFlight cancel_counter() { return {shared_from_this(), &cancel_slot_.in_flight}; }

  // Relay.
  std::shared_ptr<pool::Pool> pool_;
  std::shared_ptr<pool::Pool::Waiter> waiter_;  // wait_without_coroutine's, made once
  // The reported parameters as the client knows them (told at login, then every
  // ParameterStatus relayed); shared with the pool's cache until one changes.
  std::shared_ptr<const pool::ParameterList> sent_parameters_;
  pool::Lease server_;
  // resume()'s wait for the session-mode handler chains, type-erased by hand:
  // asio::any_completion_handler of Boost 1.81 recurses without end when it
  // allocates.
  struct RelayWaiter {
    virtual ~RelayWaiter() = default;
    virtual void complete(RelayEnd end) = 0;
  };
  // What only an attached session needs, allocated on attach so that a parked
  // (idle, logged-in) client carries none of it.
  struct Relay {
    explicit Relay(std::uint32_t max_message_size) : client_scanner(max_message_size) {}
    // Makes a recycled relay as good as new, keeping its buffers' memory.
    void reset(std::uint32_t max_message_size);
    protocol::RelayState state;
    protocol::StreamScanner client_scanner;
    protocol::StreamScanner server_scanner{1u << 30};
    protocol::ByteBuffer client_buffer;
    protocol::ByteBuffer server_buffer;
    bool server_stream_broken = false;  // the server got part of a message: never reuse it
    bool forwarding = false;            // a write to the server was under way
    // Tracked mode (see pump_client_tracked).
    ReusedFifo<PendingRequest> requests;  // what each request sent (or answered here) still waits for
    protocol::ReadBuffer client_in{0};
    protocol::ReadBuffer server_in{0};
    std::string client_out;
    std::string server_out;
    std::uint64_t client_passing = 0;  // bytes of a large client message still to stream through
    std::uint64_t server_passing = 0;
    bool wake_requested = false;       // the server pump was woken to send local answers
    bool discard_on_release = false;   // the server's statement cache can no longer be trusted
    bool skipping_to_sync = false;     // an extended error came before the client's Sync was sent
    bool server_write_busy = false;    // a write to the server is under way (either pump)
    // The client's messages since its previous Sync, kept (up to kMaxReplayedBatch)
    // so that a batch that failed only because a shared statement's plan went
    // stale can be sent again (see retry_stale_plan).
    std::string batch;
    bool batch_complete = true;    // its Sync went out: the next message starts a new batch
    bool batch_replayable = false;  // began with nothing in flight, outside a transaction block
    bool batch_executed = false;    // an Execute of it completed
    bool batch_retried = false;
    std::int64_t batch_binds_answered = 0;  // its Binds the server completed (answers the client has)
    // Statistics not yet added to the pool's counters (see account_round_trip).
    std::uint64_t bytes_in = 0;
    std::uint64_t bytes_out = 0;
    std::uint64_t ready_flushed = 0;
    std::uint64_t ready_idle_flushed = 0;
    bool busy = false;            // a request is owed an answer
    bool in_transaction = false;  // a transaction began in this relay and has not ended
    std::chrono::steady_clock::time_point busy_since;
    std::chrono::steady_clock::time_point transaction_since;
    // Why the client's stream was refused (client_protocol_error), or what a
    // handler chain step threw (internal_error).
    std::string protocol_error;
    // Session mode over plain TCP: the directions as handler chains (see
    // relay_plain_session).
    std::unique_ptr<RelayWaiter> plain_waiter;  // resume(), until both chains stop
    std::optional<RelayEnd> plain_end;  // the first direction's end
    int plain_running = 0;              // directions not stopped yet
    bool plain_stopping = false;        // one ended: the other stops at its next read
    bool client_reading = false;        // a read of the client is pending (a stop cancels it)
    bool server_reading = false;
    bool server_on_session_executor = true;  // else server completions are bound to the session's
    std::size_t lone_wanted = 0;  // the lone exchange's chain: room for its next server read
  };
  std::unique_ptr<Relay> relay_;
  // [timeouts] idle_transaction and client_idle: armed when a reply leaves the
  // client with nothing owed (and when a client parks), cancelled by the client's
  // next bytes. Allocated only when one of them is configured.
  std::unique_ptr<asio::steady_timer> idle_timer_;
  void arm_idle_timer();
  void disarm_idle_timer() {
    // A completion already queued as expired must not act: it checks the generation.
    ++idle_timer_generation_;
    if (idle_timer_) idle_timer_->cancel();
  }
  std::uint64_t idle_timer_generation_ = 0;
  void idle_timer_expired();
  // [timeouts] query: armed when a request goes to the server with nothing owed
  // before, cancelled when nothing is owed any more; on expiry the running
  // statement is cancelled (CancelRequest), as a client's own cancel would.
  std::unique_ptr<asio::steady_timer> query_timer_;
  void arm_query_timer();
  void disarm_query_timer() {
    if (query_timer_armed_) {
      query_timer_armed_ = false;
      ++query_timer_generation_;
      query_timer_->cancel();
    }
  }
  std::uint64_t query_timer_generation_ = 0;
  void query_timer_expired();
  // Statistics: a request went out (starts the busy and transaction clocks) and
  // everything is answered (stops them, disarms the query timer and adds what the
  // relay counted to the pool's counters).
  void request_sent();
  void round_trip_done();
  void flush_counters();
  void close_if_idle();
  const std::chrono::system_clock::time_point connected_at_ = std::chrono::system_clock::now();
  std::chrono::steady_clock::time_point wait_started_{};
  std::chrono::steady_clock::time_point last_request_{};
  // Whether what the client has received so far ends on a message boundary (so
  // that an ErrorResponse of Sluice's own may follow).
  bool client_stream_at_boundary() const;
  std::chrono::nanoseconds slow_threshold_{};
  // What statement timing keeps between messages, allocated at the client's first
  // request, so that a client that has sent none (an idle pool of application
  // connections) carries none of it.
  struct StatementTiming {
    // A devector allocates nothing while empty (a std::deque allocates ~600 bytes
    // at construction).
    boost::container::devector<InFlightStatement> in_flight;
    // A prepared statement's text and, once known, its shape: executions of it need
    // no fingerprint lookup (literal-blanked key and hash) each.
    struct TimedText {
      std::shared_ptr<const std::string> text;
      std::shared_ptr<const QueryShape> shape;
    };
    // Named statements and portals (client name -> text). The unnamed ones, which
    // most drivers use for every execution, have fields of their own: they are
    // dropped after every transaction, and a map would free and allocate a node
    // for them each time.
    std::unordered_map<std::string, TimedText> statement_texts;
    std::unordered_map<std::string, TimedText> portal_texts;
    TimedText unnamed_statement;  // no text: none parsed (in this transaction)
    TimedText unnamed_portal;
    // The unnamed statement of an earlier transaction (maybe another client's: the
    // timing state is recycled), reused when a Parse brings the same text again,
    // as drivers do: no copy of the text, no shape lookup. A cache, not state: a
    // Bind without a Parse never sees it.
    TimedText previous_unnamed_statement;
    // The entry for `name`, created if need be (the unnamed one is always there).
    TimedText& statement_slot(std::string_view name);
    TimedText& portal_slot(std::string_view name);
    // The entry for `name`, or null: a statement never parsed, a portal never bound.
    TimedText* find_statement(std::string_view name);
    TimedText* find_portal(std::string_view name);
    // Set while a server is being attached for bytes the client already sent: the
    // first statement's wait.
    std::optional<std::chrono::steady_clock::time_point> attach_started;
    std::chrono::steady_clock::duration attach_wait{};
    QuerySlotHint stats_hint;  // where this thread's last statement was counted
  };
  std::unique_ptr<StatementTiming> timing_;
  StatementTiming& timing() {
    if (!timing_) timing_ = take_timing();
    return *timing_;
  }
  // Parking between transactions: the timing state goes back to a small per-thread
  // cache unless it still holds something (a named statement's text), so that a
  // client idling after its requests carries none of it either.
  void release_idle_timing();
  static std::unique_ptr<StatementTiming> take_timing();
  // Relays (and their buffers) are recycled through a small per-thread cache, so
  // transaction pooling does not allocate them per transaction while idle clients
  // still hold none.
  static std::unique_ptr<Relay> take_relay(std::uint32_t max_message_size);
  static void recycle_relay(std::unique_ptr<Relay> relay);
  std::size_t max_prepared_statements_ = 0;
  // The client's statement name -> shared statement (tracked mode), allocated at
  // its first named Parse.
  using ClientStatements = std::unordered_map<std::string, pool::StatementPtr>;
  std::unique_ptr<ClientStatements> client_statements_;
  ClientStatements& client_statements() {
    if (!client_statements_) client_statements_ = std::make_unique<ClientStatements>();
    return *client_statements_;
  }
  // The shared statement a client's statement name stands for; null for the
  // unnamed statement or a name it has not prepared (the map is not created).
  const pool::StatementPtr* known_statement(std::string_view name) const {
    if (!client_statements_ || name.empty()) return nullptr;
    auto it = client_statements_->find(std::string(name));
    return it == client_statements_->end() ? nullptr : &it->second;
  }
  void forget_client_statement(const std::string& name) {
    if (client_statements_) client_statements_->erase(name);
  }

  // Flags and small enums together, so that they pack.
  config::HbaMethod login_method_ = config::HbaMethod::scram_sha_256;  // how this client proves who it is
  config::PoolMode pool_mode_ = config::PoolMode::session;
  std::uint32_t max_message_size_;
  bool counted_ = false;
  bool key_registered_ = false;
  bool console_ = false;
  bool query_timer_armed_ = false;
  bool counted_in_pool_ = false;
  bool closing_gracefully_ = false;
  bool answered_once_ = false;      // a request of this client was answered
  bool client_write_busy_ = false;  // an async write to the client is under way
  bool logged_in_ = false;
  bool waiting_for_server_ = false;
  bool recording_ = false;  // statement timing for the slow-query log and query stats
  bool log_parameters_ = false;
  bool tracking_statements_ = false;
  bool client_said_goodbye_ = false;
  bool client_gone_ = false;  // a relay read of the client found EOF or an error
  bool parked_ = false;       // plain TCP: the client watch wakes resume() when it completes
  bool solo_server_read_ = false;  // a lone server pump is reading (the watch cancels it)
  bool watch_failed_ = false;      // the fired watch found EOF or an error
  ClientWatch client_watch_ = ClientWatch::none;
  std::uint32_t watch_generation_ = 0;  // completions of abandoned watches are ignored
  // What the client watch read (pool::StashBuffer): written by the reactor's perform
  // step, so touched here only once the watch has completed or been cancelled.
  protocol::ByteBuffer watched_bytes_;
};

}  // namespace sluice::proxy
