// Erasure on request, the paths a live feed test cannot reach on purpose:
// an entry still waiting in a destination's outbox (the destination is
// failing) is never delivered once erased, even though the worker already
// had it in memory; a dead letter of the record is deleted (a department
// that never received it gets no notice); the chunk keeps a tombstone in
// place (the other records' ids do not move) that retention later deletes
// without asking anyone to erase it twice; a held record is left alone; bad
// requests get clear answers. The pipeline is assembled in-process (real
// SQLite journal, audit trail, memory plugins, delivery workers).

#include "audit/audit_log.hpp"
#include "governance/erasure.hpp"
#include "governance/holds.hpp"
#include "node.hpp"
#include "pipeline/journal.hpp"
#include "pipeline/outbox_codec.hpp"
#include "pipeline/retention.hpp"
#include "store/codec.hpp"
#include "store/store.hpp"

#include <catch2/catch.hpp>

#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

using namespace switchboard;
using namespace std::chrono_literals;

namespace {

constexpr std::int64_t kDay = 86'400'000;

const char* kConfig = R"(
[sources.verint]
plugin = "memory-source"
[sources.verint.config]
count = 0
[destinations.up]
plugin = "memory-sink"
[destinations.up.config]
output = "up.jsonl"
[destinations.flaky]
plugin = "memory-sink"
backoff = "3s"
backoff_max = "3s"
[destinations.flaky.config]
fail_first = 1
output = "flaky.jsonl"
[destinations.broken]
plugin = "memory-sink"
max_attempts = 1
[destinations.broken.config]
mode = "permanent"
[[classify.rule]]
category = "council_tax"
field = "hints.topic"
equals = "ctax"
[[route]]
category = "council_tax"
destination = "up"
purpose = "council tax"
profile = "dept"
[[route]]
category = "council_tax"
destination = "flaky"
purpose = "council tax"
profile = "dept"
[[route]]
category = "council_tax"
destination = "broken"
purpose = "council tax"
profile = "dept"
[profiles.dept.fields]
"citizen.name" = "keep"
[retention]
default = "28d"
)";


// The store's files: the database, its WAL and the chunk segments.
std::string raw_store(const std::filesystem::path& data) {
    std::string raw = sbtest::read_file(data / "journal.db") + sbtest::read_file(data / "journal.db-wal");
    if (std::filesystem::exists(data / "journal.db-chunks"))
        for (const auto& e : std::filesystem::directory_iterator(data / "journal.db-chunks"))
            raw += sbtest::read_file(e.path());
    return raw;
}

std::int64_t real_now() {
    using namespace std::chrono;
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

struct Node : sbtest::Node {
    Node() : sbtest::Node(kConfig, real_now(), "sb-erasure") {}

    // Emits `records` in one commit (one chunk); their ids, in order.
    std::vector<std::string> emit_in_one_chunk(std::vector<std::unique_ptr<sb_record>> records) {
        const std::size_t n = records.size();
        REQUIRE(sbtest::Node::emit("verint", std::move(records))[0] == SB_OK);
        std::int64_t newest = 0;
        for (const auto& c : store->chunks_expiring_before(INT64_MAX, 100000)) newest = std::max(newest, c.id);
        std::vector<std::string> ids;
        for (std::uint32_t i = 0; i < n; ++i) ids.push_back(pipeline::record_id(newest, i));
        return ids;
    }

    // One record per commit (its own chunk) or several in one; their ids.
    std::vector<std::string> emit_names(const std::vector<std::string>& names) {
        std::vector<std::unique_ptr<sb_record>> records;
        for (const auto& name : names) {
            auto r = std::make_unique<sb_record>();
            sb_value v{SB_VALUE_STRING, name.data(), name.size(), 0, 0};
            REQUIRE(r->data.set("citizen.name", v, "identity.name") == SB_OK);
            std::string topic = "ctax";
            sb_value t{SB_VALUE_STRING, topic.data(), topic.size(), 0, 0};
            REQUIRE(r->data.set("hints.topic", t, "classification.hint") == SB_OK);
            records.push_back(std::move(r));
        }
        return emit_in_one_chunk(std::move(records));
    }

    // The same, set as a source with a record shape sets them: written as
    // version 4 records in a chunk with a table of heads (format 2).
    std::vector<std::string> emit_shaped(const std::vector<std::string>& names) {
        const char* paths[] = {"citizen.name", "hints.topic"};
        const char* categories[] = {"identity.name", "classification.hint"};
        sb_shape* shape = sb::detail::shape_new(paths, categories, 2);
        REQUIRE(shape);
        std::vector<std::unique_ptr<sb_record>> records;
        for (const auto& name : names) {
            auto r = std::make_unique<sb_record>();
            const sb_value v[] = {{SB_VALUE_STRING, name.data(), name.size(), 0, 0},
                                  {SB_VALUE_STRING, "ctax", 4, 0, 0}};
            REQUIRE(sb::detail::record_set_shape(r.get(), shape, v) == SB_OK);
            records.push_back(std::move(r));
        }
        sb::detail::shape_free(shape);
        return emit_in_one_chunk(std::move(records));
    }

    std::vector<sb_record> chunk_records(const std::string& id) {
        std::int64_t chunk = 0;
        std::uint32_t index = 0;
        REQUIRE(pipeline::parse_record_id(id, chunk, index));
        auto body = store->chunk_body(chunk);
        REQUIRE(body);
        std::vector<sb_record> out;
        store::ChunkHeads table;
        REQUIRE(table.read(*body));
        std::size_t pos = table.first;
        while (pos < body->size()) {
            out.emplace_back();
            REQUIRE(store::decode(*body, pos, out.back(), nullptr, &table));
        }
        return out;
    }
};

std::string meta(const sb_record& r, const char* key) {
    const char* v = r.data.meta(key);
    return v ? v : "";
}

} // namespace

TEST_CASE("erasure: an entry waiting for a failing destination is never delivered once erased; its dead "
          "letter goes; the tombstone keeps the other ids; retention later asks no one twice") {
    Node n;
    // Two people in one commit (one chunk), then a third on her own.
    auto first = n.emit_names({"Canary-Erase-Jane", "Canary-Keep-Bob"});
    auto third = n.emit_names({"Canary-Keep-Ann"});
    const std::string jane = first[0], bob = first[1], ann = third[0];
    n.wait_delivered("up", 3);
    REQUIRE(sbtest::wait_until([&] { return n.store->dead_letters("broken").size() == 3; }, 10s));
    // "flaky" failed its first delivery of Jane's record and is backing off.
    CHECK(n.store->acked("flaky") == 0);

    std::string error;
    CHECK_FALSE(governance::request_erasure(*n.store, {{}, "DPO"}, n.now, error));
    CHECK(error == "no records to erase");
    CHECK_FALSE(governance::request_erasure(*n.store, {{jane}, ""}, n.now, error));
    CHECK(error == "an erasure needs the name of who asks for it");
    CHECK_FALSE(governance::request_erasure(*n.store, {{jane, "R999-0", "nonsense"}, "DPO"}, n.now, error));
    CHECK(error == "no record R999-0, nonsense in the journal (malformed, or already deleted)");

    auto id = governance::request_erasure(*n.store, {{jane}, "DPO"}, n.now, error);
    INFO(error);
    REQUIRE(id);
    CHECK(n.retention->carry_out_erasures(n.now) == 1);
    CHECK(n.retention->carry_out_erasures(n.now) == 0); // done once
    auto e = n.store->erasure(*id);
    REQUIRE(e);
    CHECK(e->done_at == n.now);
    REQUIRE(e->records.size() == 1);
    CHECK(e->records[0].outcome == "erased");
    // Asked: her source, and every destination with an entry not dead-lettered
    // ("broken" never received her record: no notice there).
    CHECK(e->records[0].detail == "flaky,up,verint");

    // The outbox row of a destination still to deliver ("flaky"): Bob's
    // entry repeated Jane's ("the same as the one before"); with hers now a
    // tombstone, his is written out in full and still reads as his route's.
    {
        std::int64_t chunk = 0;
        std::uint32_t index = 0;
        REQUIRE(pipeline::parse_record_id(jane, chunk, index));
        bool seen = false;
        for (const auto& row : n.store->outbox_for_chunk(chunk)) {
            if (row.destination != "flaky" || row.payloads.empty()) continue;
            seen = true;
            REQUIRE(row.count == 2);
            std::size_t pos = 0;
            pipeline::EntryContext context;
            pipeline::EntryRef ref;
            pipeline::OutboxEntry her, his;
            CHECK(pipeline::decode_entry(row.payloads, pos, her, ref, &context) == pipeline::EntryForm::Record);
            CHECK(std::string(her.profile.c_str()) == pipeline::kErasedProfile);
            CHECK(pipeline::decode_entry(row.payloads, pos, his, ref, &context) == pipeline::EntryForm::Reference);
            CHECK(std::string(his.purpose.c_str()) == "council tax");
            CHECK(std::string(his.profile.c_str()) == "dept");
            CHECK(pos == row.payloads.size());
        }
        CHECK(seen);
    }

    // The chunk: a tombstone where she was, Bob untouched at his index.
    auto records = n.chunk_records(jane);
    REQUIRE(records.size() == 2);
    CHECK(pipeline::is_tombstone(records[0]));
    CHECK(meta(records[0], "id") == jane);
    CHECK_FALSE(pipeline::is_tombstone(records[1]));
    CHECK(meta(records[1], "id") == bob);
    // Her dead letter is gone, the others' are there.
    auto dead = n.store->dead_letters("broken");
    CHECK(dead.size() == 2);
    for (const auto& d : dead) CHECK(d.record_id != jane);

    // "flaky" recovers: it gets Bob and Ann, never Jane.
    n.wait_delivered("flaky", 3);
    std::string flaky = sbtest::read_file(n.dir.path / "flaky.jsonl");
    CHECK(flaky.find("Canary-Keep-Bob") != std::string::npos);
    CHECK(flaky.find("Canary-Keep-Ann") != std::string::npos);
    CHECK(flaky.find("Canary-Erase-Jane") == std::string::npos);

    // The erase tasks: the source and both destinations confirm.
    REQUIRE(sbtest::wait_until([&] {
        n.retention->run_erase_tasks(n.now);
        auto s = governance::erasure_status(*n.store, n.data() / "audit", *id, n.now, 7 * kDay);
        n.journal->flush_audit();
        return s && s->complete();
    }, 20s));
    auto status = governance::erasure_status(*n.store, n.data() / "audit", *id, n.now, 7 * kDay);
    REQUIRE(status);
    CHECK(status->settled == 3);
    // "up" had it: the memory sink erased it from its file.
    CHECK(sbtest::read_file(n.dir.path / "up.jsonl").find("Canary-Erase-Jane") == std::string::npos);
    CHECK(sbtest::read_file(n.dir.path / "up.jsonl").find("Canary-Keep-Bob") != std::string::npos);

    // No byte of her name is left in the store files; Bob's and Ann's are.
    n.store->scrub();
    std::string raw = raw_store(n.data());
    CHECK(raw.find("Canary-Erase-Jane") == std::string::npos);
    CHECK(raw.find("Canary-Keep-Bob") != std::string::npos);

    // Asking again: "gone" (erased before), nothing asked twice.
    auto again = governance::request_erasure(*n.store, {{jane}, "DPO"}, n.now, error);
    REQUIRE(again);
    n.retention->carry_out_erasures(n.now);
    auto e2 = n.store->erasure(*again);
    REQUIRE(e2);
    CHECK(e2->records[0].outcome == "gone");
    CHECK(e2->records[0].detail == "erased before");

    // Expiry: the chunk goes; Bob's erase goes to everyone that had him,
    // and Jane's tombstone asks no one again.
    n.journal->flush_audit();
    auto before = audit::AuditLog::read_records(n.data() / "audit", {jane}).size();
    n.now += 29 * kDay;
    CHECK(n.retention->sweep(n.now) == 2); // Bob and Ann; the tombstone is not a record
    n.journal->flush_audit();
    auto jane_entries = audit::AuditLog::read_records(n.data() / "audit", {jane});
    CHECK(jane_entries.size() == before);
    CHECK(n.store->erasure(*id).has_value()); // kept for its account until purged
}

TEST_CASE("erasure: in a chunk whose records share a table of field heads, the record goes and the others read") {
    Node n;
    auto ids = n.emit_shaped({"Canary-Keep-Eve", "Canary-Erase-Fay", "Canary-Keep-Gus"});
    n.wait_delivered("up", 3);
    std::int64_t chunk = 0;
    std::uint32_t index = 0;
    REQUIRE(pipeline::parse_record_id(ids[0], chunk, index));
    auto before = n.store->chunk_body(chunk);
    REQUIRE(before);
    store::ChunkHeads table;
    REQUIRE(table.read(*before));
    CHECK(table.heads.size() == 1); // the shape's heads, once for the three

    std::string error;
    auto id = governance::request_erasure(*n.store, {{ids[1]}, "DPO"}, n.now, error);
    INFO(error);
    REQUIRE(id);
    CHECK(n.retention->carry_out_erasures(n.now) == 1);
    auto records = n.chunk_records(ids[0]);
    REQUIRE(records.size() == 3);
    CHECK_FALSE(pipeline::is_tombstone(records[0]));
    CHECK(pipeline::is_tombstone(records[1]));
    CHECK(meta(records[1], "id") == ids[1]);
    CHECK_FALSE(pipeline::is_tombstone(records[2]));
    CHECK(records[0].data.find("citizen.name")->str == "Canary-Keep-Eve");
    CHECK(records[2].data.find("citizen.name")->str == "Canary-Keep-Gus");
    CHECK(records[2].data.find("citizen.name")->category() == "identity.name");

    // No byte of her name is left in the store's files; theirs are.
    n.store->scrub();
    std::string raw = raw_store(n.data());
    CHECK(raw.find("Canary-Erase-Fay") == std::string::npos);
    CHECK(raw.find("Canary-Keep-Eve") != std::string::npos);
    CHECK(raw.find("Canary-Keep-Gus") != std::string::npos);
}

TEST_CASE("erasure: a held record is not erased; the others in the request are") {
    Node n;
    auto ids = n.emit_names({"Canary-Held-Jane", "Canary-Erase-Jane2"});
    n.wait_delivered("up", 2);
    std::string error;
    governance::HoldRequest h;
    h.records = {ids[0]};
    h.reason = "tribunal";
    h.by = "Legal";
    REQUIRE(governance::place_hold(*n.store, h, n.now, error));
    auto id = governance::request_erasure(*n.store, {ids, "DPO"}, n.now, error);
    REQUIRE(id);
    n.retention->carry_out_erasures(n.now);
    auto e = n.store->erasure(*id);
    REQUIRE(e);
    REQUIRE(e->records.size() == 2);
    CHECK(e->records[0].record_id == ids[0]);
    CHECK(e->records[0].outcome == "held");
    CHECK(e->records[0].detail == "1");
    CHECK(e->records[1].outcome == "erased");
    auto records = n.chunk_records(ids[0]);
    CHECK_FALSE(pipeline::is_tombstone(records[0]));
    CHECK(pipeline::is_tombstone(records[1]));
    n.journal->flush_audit();
    auto status = governance::erasure_status(*n.store, n.data() / "audit", *id, n.now, 7 * kDay);
    REQUIRE(status);
    std::string text = governance::erasure_text(*status);
    CHECK(text.find(ids[0] + "  held: kept by hold(s) 1") != std::string::npos);
    std::string json = governance::erasure_json(*status);
    CHECK(json.find("\"outcome\": \"held\", \"holds\": [1]") != std::string::npos);
    // The audit: the held record's erasure entry says so.
    std::string audit;
    for (const auto& a : audit::AuditLog::read_records(n.data() / "audit", {ids[0]}))
        if (a.kind == "erasure") audit += a.detail;
    CHECK(audit.find("outcome=held") != std::string::npos);
    CHECK(audit.find("by=DPO") != std::string::npos);
}
