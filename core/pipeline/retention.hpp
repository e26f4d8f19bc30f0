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
// by `switchboard retention --pending`, and is asked again every 30 s. A task
// still unconfirmed `receipt_deadline` after it was made is overdue (a
// missing deletion receipt): marked by `--pending`, counted in the gauges
// retention/erase_tasks_overdue and <instance>/erase_tasks_overdue, and
// logged when the count grows.

#include "pipeline/journal.hpp"

#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <thread>

namespace switchboard::pipeline {

// Whether an erase task has waited for its confirmation longer than
// `deadline_ms` (retention.receipt_deadline) at `now`.
inline bool erase_overdue(const store::EraseTask& t, std::int64_t now, std::int64_t deadline_ms) {
    return now - t.created_at > deadline_ms;
}

class RetentionService {
public:
    static constexpr std::int64_t kDefaultReceiptDeadlineMs = 7LL * 86'400'000;

    RetentionService(Journal& journal, Clock clock, std::filesystem::path data_dir,
                     std::int64_t sweep_interval_ms, plugin::Metrics* metrics,
                     std::int64_t receipt_deadline_ms = kDefaultReceiptDeadlineMs);
    ~RetentionService();

    // Instances that erase tasks are sent to (sources and destinations).
    void add_instance(plugin::Instance* instance);

    void start();
    void stop();

    // One sweep now (tests, `switchboard retention --sweep`): deletes what
    // expired at `now`; returns how many records were deleted.
    std::uint64_t sweep(std::int64_t now);
    // Carries out the erasures on request placed in the store (by `switchboard
    // erase` or the admin API; see governance/erasure.hpp), through the same
    // path as retention: each record not held is replaced by a tombstone in
    // its chunk, its outbox entries not yet delivered are emptied, its dead
    // letters and the attachments Switchboard holds are deleted, the store is
    // scrubbed, and erase tasks (reason "request") go to its source and to
    // every destination that has an entry for it. A held record is left
    // alone (outcome "held"). Done by the service's thread each second;
    // returns the number of erasures carried out.
    std::uint64_t carry_out_erasures(std::int64_t now);

    // Runs the erase tasks due at `now`; returns how many items were settled.
    std::uint64_t run_erase_tasks(std::int64_t now);

    // Counts the erase tasks overdue at `now` and sets the gauges (done by
    // the service's thread once a minute, or every receipt_deadline / 4 if
    // that is sooner, at least 1 s apart); returns the total. Not to be
    // called concurrently with itself.
    std::uint64_t check_overdue(std::int64_t now);

    // Completion of an SB_PENDING erase (routed from host->complete).
    void complete(const std::string& instance, std::uint64_t id, sb_status status, const char* receipt);

private:
    void run();
    std::uint64_t sweep_chunk(const store::ChunkInfo& chunk, std::int64_t now,
                              std::vector<std::filesystem::path>& files);
    void carry_out(store::Erasure& erasure, std::int64_t now);
    // The files under the data directory that `r` holds as attachments.
    void attachment_files(const sb_record& r, std::vector<std::filesystem::path>& files) const;

    Journal& journal_;
    Clock clock_;
    std::filesystem::path data_dir_;
    std::int64_t interval_ms_;
    plugin::Metrics* metrics_;
    std::int64_t receipt_deadline_ms_;
    std::uint64_t overdue_ = 0;         // as of the last check_overdue
    std::set<std::string> overdue_at_;  // instances whose gauge is non-zero
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
    // Instances that answered after their pass stopped waiting: their tasks
    // are asked again at the next pass (the plugin answers at once then),
    // not after kAwaitRecheckMs.
    std::set<std::string> late_answers_;
};

} // namespace switchboard::pipeline
