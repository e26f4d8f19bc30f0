// Switchboard department feed: the reference client of the ZeroMQ feed
// protocol, version 1 (docs/feed-protocol.md).
//
// A FeedClient connects a DEALER socket to a department's `zmq-feed`
// endpoint (CURVE unless told it is a plaintext test feed), says HELLO with
// the position it has durably processed, receives RECORD messages within its
// credit, hands them to a FeedSink, persists the new position and only then
// ACKs. ERASE notices are applied by the sink and answered ERASED with the
// sink's receipt. Connections that fail, go silent or misbehave are dropped
// and made again with backoff.
//
// Records are processed in batches: whatever the socket holds is read
// without waiting (up to the credit), written, made durable with one flush,
// the position persisted once, one cumulative ACK sent. So a disk sync costs
// once per batch, not once per record.
//
// Nothing here logs record contents: log lines carry sequence numbers,
// record ids, notice ids and counts.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace switchboard::feed {

// The version the client asks for first (docs/feed-protocol.md); it falls
// back to kProtocolOldest with a server that does not speak it.
inline constexpr int kProtocolVersion = 2;
inline constexpr int kProtocolOldest = 1;

enum class LogLevel { Debug, Info, Warn, Error };
using LogFn = std::function<void(LogLevel, std::string_view message)>;

// One RECORD from the server, checked: `body` is the message's JSON object
// exactly as received, on one line (insignificant line breaks removed).
struct FeedRecord {
    std::int64_t seq = 0;
    std::string id;
    std::string body;
};

// One ERASE notice from the server.
struct EraseNotice {
    std::string notice;
    std::string record_id;
    std::int64_t seq = 0; // 0 when the server did not say
    std::string reason;   // "retention" or "request" (others are passed on as they come)
};

struct EraseResult {
    bool ok = false;
    std::string receipt; // when ok: what was deleted, where, by which system
    std::string error;   // when not ok: why (no personal data)
};

// Where records go. Called from the client's thread only.
class FeedSink {
public:
    virtual ~FeedSink() = default;
    // Short description for logs ("directory /srv/feed", "standard output").
    virtual std::string describe() const = 0;
    // Takes one record. It need not be durable until flush(). false with
    // `error` set when the record cannot be taken; the batch is then cut
    // there (what was taken before it is still flushed).
    virtual bool write(const FeedRecord& record, std::string& error) = 0;
    // Makes every record taken since the last flush durable (or handed on).
    // On failure, none of them may be kept half-written: the sink rolls back
    // to the state of the last successful flush and returns false.
    virtual bool flush(std::string& error) = 0;
    // Deletes every copy of each notice's record; one result per notice, in
    // order. Notices for records it does not hold succeed (the notice may be
    // a resend of one already carried out).
    virtual std::vector<EraseResult> erase(const std::vector<EraseNotice>& notices) = 0;
};

// JSON lines in `dir`, one file per UTC day of receipt (YYYY-MM-DD.jsonl),
// each line one RECORD body. Erasure rewrites the files holding the record
// without its lines (temp file + fsync + rename + directory fsync); a file
// left empty is removed.
std::unique_ptr<FeedSink> make_directory_sink(const std::filesystem::path& dir, LogFn log);
// Each record body as one line on standard output, flushed per batch; an
// erase notice as one line {"erase": {...}} for the reader to act on.
std::unique_ptr<FeedSink> make_stdout_sink();
// One `/bin/sh -c COMMAND` per record, with the record body (one line) on
// its stdin; exit status 0 means handed on. An erase notice likewise, with
// {"erase": {...}} on stdin; the first line of its stdout, if any, becomes
// the receipt. The variables SB_FEED_EVENT (record|erase), SB_FEED_SEQ and
// SB_FEED_RECORD_ID are set. A command that runs longer than `timeout` is
// killed and counts as failed.
std::unique_ptr<FeedSink> make_command_sink(std::string command, std::chrono::milliseconds timeout,
                                            LogFn log);

// Z85 CURVE keys (40 characters each).
struct CurveKeys {
    std::string client_public;
    std::string client_secret;
    std::string server_public;
};

// Reads a key: `text` is either 40 characters of Z85 or the path of a file
// holding them (surrounding white space and '#' comment lines ignored).
// Throws std::runtime_error naming the file or argument.
std::string load_key(const std::string& text, const std::string& what);
// The public key for a Z85 secret key (zmq_curve_public). Throws if invalid.
std::string public_key_for(const std::string& secret_z85);
// A fresh key pair {public, secret}.
std::pair<std::string, std::string> generate_keypair();

struct ClientOptions {
    std::string endpoint;     // tcp://host:port
    bool insecure = false;    // plaintext: only for test feeds on loopback
    CurveKeys keys;           // required unless insecure
    std::filesystem::path state_dir;
    std::uint32_t credit = 1000;        // 1..10000
    std::chrono::milliseconds reconnect_min{200};
    std::chrono::milliseconds reconnect_max{30'000};
    std::chrono::milliseconds welcome_timeout{10'000}; // after the handshake
    std::chrono::milliseconds heartbeat_interval{5'000};
    std::chrono::milliseconds heartbeat_timeout{15'000};
    LogFn log;
};

// What has happened so far (for tests, metrics and the exit summary).
struct ClientStats {
    std::uint64_t sessions = 0;          // WELCOMEs received
    std::uint64_t records_written = 0;
    std::uint64_t resends_dropped = 0;   // RECORDs at or below the position
    std::uint64_t acks_sent = 0;
    std::uint64_t erase_notices = 0;     // ERASE messages acted on
    std::uint64_t erased_sent = 0;
    std::uint64_t malformed = 0;         // messages from the server not understood
    std::uint64_t server_errors = 0;     // ERROR messages
    std::uint64_t handshake_failures = 0;
    std::uint64_t sink_failures = 0;
    std::uint64_t rejected = 0;          // RECORDs answered REJECT (unreadable)
    std::uint64_t feed_resets = 0;       // WELCOMEs with another feed id than the position's
    std::int64_t acked = 0;              // the persisted position
};

class FeedClient {
public:
    // Checks the options, opens (creating if need be) and locks the state
    // directory and reads the position. Throws std::runtime_error with a
    // message naming the option or file at fault.
    FeedClient(ClientOptions options, std::unique_ptr<FeedSink> sink);
    ~FeedClient();
    FeedClient(const FeedClient&) = delete;
    FeedClient& operator=(const FeedClient&) = delete;

    // Runs sessions until stop(): connect, HELLO, records/erasures,
    // reconnect with backoff. Returns 0 after a clean stop.
    int run();
    // Thread- and signal-safe: ends run() after the batch in hand.
    void stop() noexcept;

    ClientStats stats() const;
    std::int64_t position() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// The position file in a state directory: the highest sequence number
// durably processed (0 when there is none), then the feed id of the
// server's numbering it belongs to, once a WELCOME has named one:
// "S FEED\n" ("S\n" as written before feed ids is still read). Exposed for
// tests and tools.
struct Position {
    std::int64_t acked = 0;
    std::string feed;
};
Position read_position_file(const std::filesystem::path& state_dir);
std::int64_t read_position(const std::filesystem::path& state_dir);
// Writes it atomically: temp file, fsync, rename, fsync of the directory.
void write_position(const std::filesystem::path& state_dir, std::int64_t acked, const std::string& feed = "");

} // namespace switchboard::feed
