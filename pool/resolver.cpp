#include "pool/resolver.h"

#include <fcntl.h>
#include <netdb.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>

namespace sluice::pool {
namespace {

struct Lookup {
  std::string host;
  std::uint16_t port = 0;
  int wake_fd = -1;  // an eventfd the helper writes once the result is in
  // Written by the helper before `done` is set; read by the waiter only after.
  std::vector<tcp::endpoint> endpoints;
  std::string error;
  std::atomic<bool> done{false};
  // The waiter gave up (cancelled, or its coroutine destroyed): a lookup still
  // queued is skipped, so lookups given up during a DNS outage do not pile up
  // ahead of fresh ones.
  std::atomic<bool> abandoned{false};

  Lookup() = default;
  Lookup(const Lookup&) = delete;
  Lookup& operator=(const Lookup&) = delete;
  ~Lookup() {
    if (wake_fd >= 0) ::close(wake_fd);
  }
};

void look_up(Lookup& lookup) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;  // no AI_ADDRCONFIG: neither libpq nor Asio's resolver sets it
  addrinfo* found = nullptr;
  const std::string service = std::to_string(lookup.port);
  const int rc = ::getaddrinfo(lookup.host.c_str(), service.c_str(), &hints, &found);
  if (rc != 0) {
    lookup.error = rc == EAI_SYSTEM ? std::system_category().message(errno) : ::gai_strerror(rc);
    return;
  }
  for (const addrinfo* info = found; info != nullptr; info = info->ai_next) {
    if (info->ai_family != AF_INET && info->ai_family != AF_INET6) continue;
    tcp::endpoint endpoint;
    std::memcpy(endpoint.data(), info->ai_addr, info->ai_addrlen);
    endpoint.resize(info->ai_addrlen);
    lookup.endpoints.push_back(endpoint);
  }
  ::freeaddrinfo(found);
  if (lookup.endpoints.empty()) lookup.error = "no IPv4 or IPv6 address";
}

// One helper thread, started at the first lookup, that runs lookups one at a time
// (as Asio's resolver thread does). It is never joined or destroyed: a lookup may
// still be waiting for DNS when the process exits.
class LookupThread {
 public:
  static LookupThread& instance() {
    static auto* const thread = new LookupThread;
    return *thread;
  }

  // False (nothing queued) when the thread cannot be started.
  bool push(std::shared_ptr<Lookup> lookup) {
    {
      std::lock_guard lock(mutex_);
      if (!started_) {
        try {
          std::thread([this] { run(); }).detach();
        } catch (const std::system_error&) {
          return false;
        }
        started_ = true;
      }
      queue_.push_back(std::move(lookup));
    }
    wake_.notify_one();
    return true;
  }

 private:
  void run() {
    for (;;) {
      std::shared_ptr<Lookup> lookup;
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [this] { return !queue_.empty(); });
        lookup = std::move(queue_.front());
        queue_.pop_front();
      }
      if (lookup->abandoned.load(std::memory_order_relaxed)) continue;
      look_up(*lookup);
      lookup->done.store(true, std::memory_order_release);
      const std::uint64_t one = 1;
      // Cannot fail short of a closed descriptor, which the Lookup keeps open.
      [[maybe_unused]] const auto written = ::write(lookup->wake_fd, &one, sizeof one);
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Lookup>> queue_;
  bool started_ = false;
};

std::string errno_text(const char* what) { return std::string(what) + ": " + std::system_category().message(errno); }

}  // namespace

awaitable<Resolved> resolve_host(std::string host, std::uint16_t port) {
  Resolved out;
  error_code literal_error;
  const auto address = asio::ip::make_address(host, literal_error);
  if (!literal_error) {
    out.endpoints.emplace_back(address, port);
    co_return out;
  }
  auto lookup = std::make_shared<Lookup>();
  lookup->host = std::move(host);
  lookup->port = port;
  lookup->wake_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (lookup->wake_fd < 0) {
    out.error = errno_text("eventfd");
    co_return out;
  }
  // The reactor watches a descriptor of its own: if this coroutine is cancelled or
  // destroyed first, closing it leaves the helper's descriptor (the Lookup's) valid.
  const int watched_fd = ::fcntl(lookup->wake_fd, F_DUPFD_CLOEXEC, 0);
  if (watched_fd < 0) {
    out.error = errno_text("dup");
    co_return out;
  }
  asio::posix::stream_descriptor wake(co_await asio::this_coro::executor);
  error_code ec;
  wake.assign(watched_fd, ec);
  if (ec) {
    ::close(watched_fd);
    out.error = "cannot watch the lookup: " + ec.message();
    co_return out;
  }
  if (!LookupThread::instance().push(lookup)) {
    out.error = "cannot start the host lookup thread";
    co_return out;
  }
  // However this coroutine ends (cancelled, or destroyed while it waits), a lookup
  // not yet started is dropped.
  struct AbandonUnlessDone {
    Lookup& lookup;
    ~AbandonUnlessDone() {
      if (!lookup.done.load(std::memory_order_acquire)) lookup.abandoned.store(true, std::memory_order_relaxed);
    }
  } abandon_unless_done{*lookup};
  for (;;) {
    auto [wait_error] = co_await wake.async_wait(asio::posix::descriptor_base::wait_read, use_nothrow);
    if (lookup->done.load(std::memory_order_acquire)) break;
    if (wait_error) {
      out.cancelled = wait_error == asio::error::operation_aborted;
      out.error = out.cancelled ? "lookup cancelled" : wait_error.message();
      co_return out;
    }
  }
  out.endpoints = std::move(lookup->endpoints);
  out.error = std::move(lookup->error);
  co_return out;
}

}  // namespace sluice::pool
