#pragma once

// The retention clock. Every sweep deletes the chunks whose records expired
// (found by the expiry index: the cost follows what expired), their outbox
// entries and dead letters, and the attachments Switchboard holds for them;
// then scrubs the store so no byte of the deleted values lingers. For each
// record it queues erase tasks: the source plugin's erase hook (delete the
// vendor's copy) and an erase notice to every destination that received it.
// Erase tasks retry with backoff until confirmed; each step is audited. A
// destination that confirms later (SB_PENDING: a department feed waiting for
// its client) does not hold the pass up: its task stays outstanding, listed
// by `switchboard retention --pending`, and is asked again every 30 s.

#include "pipeline/journal.hpp"

#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <thread>

namespace switchboard::pipeline {

class RetentionService {
public:
    RetentionService(Journal& journal, Clock clock, std::filesystem::path data_dir,
                     std::int64_t sweep_interval_ms, plugin::Metrics* metrics);
    ~RetentionService();

    // Instances that erase tasks are sent to (sources and destinations).
    void add_instance(plugin::Instance* instance);

    void start();
    void stop();

    // One sweep now (tests, `switchboard retention --sweep`): deletes what
    // expired at `now`; returns how many records were deleted.
    std::uint64_t sweep(std::int64_t now);
    // Runs the erase tasks due at `now`; returns how many items were settled.
    std::uint64_t run_erase_tasks(std::int64_t now);

    // Completion of an SB_PENDING erase (routed from host->complete).
    void complete(const std::string& instance, std::uint64_t id, sb_status status, const char* receipt);

private:
    void run();
    std::uint64_t sweep_chunk(const store::ChunkInfo& chunk, std::int64_t now,
                              std::vector<std::filesystem::path>& files);

    Journal& journal_;
    Clock clock_;
    std::filesystem::path data_dir_;
    std::int64_t interval_ms_;
    plugin::Metrics* metrics_;
    std::map<std::string, plugin::Instance*> instances_;

    std::mutex mutex_;
    std::condition_variable wake_;
    bool stopping_ = false;
    std::thread thread_;

    std::mutex pending_mutex_;
    std::condition_variable pending_cv_;
    std::set<std::pair<std::string, std::uint64_t>> awaited_; // erase requests of the running pass
    std::map<std::pair<std::string, std::uint64_t>, std::pair<sb_status, std::string>> completed_;
    std::uint64_t next_request_ = 1;
};

} // namespace switchboard::pipeline
