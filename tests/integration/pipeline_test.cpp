// The pipeline with real parts: a real SQLite journal and audit trail in a
// temporary data directory, the real memory-source and memory-sink plugins
// loaded from the build, delivery workers and the retention service, and an
// injectable clock so that 28 days pass in a test.

#include "audit/audit_log.hpp"
#include "config/config.hpp"
#include "governance/sar.hpp"
#include "http/server.hpp"
#include "pipeline/delivery.hpp"
#include "pipeline/journal.hpp"
#include "pipeline/outbox_codec.hpp"
#include "pipeline/policy.hpp"
#include "pipeline/retention.hpp"
#include "plugin/instance.hpp"
#include "plugin/registry.hpp"
#include "node.hpp"
#include "process.hpp"
#include "sink_records.hpp"
#include "store/store.hpp"

#include <switchboard/detail/abi.hpp>
#include <switchboard/detail/json_record.hpp>
#include <switchboard/detail/path_pattern.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <fstream>
#include <future>
#include <random>
#include <set>
#include <cstring>
#include <sstream>
#include <thread>

using namespace switchboard;
using namespace std::chrono_literals;
using sbtest::TempDir;

namespace {


std::string slurp_tree(const std::filesystem::path& dir) {
    std::string all;
    for (auto& e : std::filesystem::recursive_directory_iterator(dir))
        if (e.is_regular_file()) all += sbtest::read_file(e.path());
    return all;
}

// A node assembled in-process, as the daemon assembles it.
// The whole node in this process, its clock starting on 2025-01-06T09:00:00Z.
struct Node : sbtest::Node {
    explicit Node(const std::string& toml, pipeline::Journal::Options options = {})
        : sbtest::Node(toml, 1'736'154'000'000, "sb-pipeline", "data", options) {}
};

std::unique_ptr<sb_record> make(const std::vector<std::tuple<std::string, std::string, std::string>>& fields,
                                const std::string& channel = "web_chat") {
    auto r = std::make_unique<sb_record>();
    for (const auto& [path, value, category] : fields) {
        sb_value v{SB_VALUE_STRING, value.data(), value.size(), 0, 0};
        REQUIRE(r->data.set(path, v, category.c_str()) == SB_OK);
    }
    REQUIRE(r->data.set_meta("channel", channel) == SB_OK);
    return r;
}

// One source ("hook") and one destination ("d") that gets field "a" of
// every record.
const char* const kHookToD = R"(
[sources.hook]
plugin = "memory-source"
[sources.hook.config]
count = 0
[destinations.d]
plugin = "memory-sink"
[destinations.d.config]
output = "d.jsonl"
[[route]]
category = "unclassified"
destination = "d"
purpose = "review"
profile = "p"
[profiles.p.fields]
"a" = "keep"
)";

// One source ("chat") and one destination ("everything") that gets every
// field of every record: whatever card data reaches it, the journal let by.
const char* const kChatToEverything = R"(
[sources.chat]
plugin = "memory-source"
[sources.chat.config]
count = 0
[destinations.everything]
plugin = "memory-sink"
[destinations.everything.config]
output = "everything.jsonl"
[[route]]
category = "*"
destination = "everything"
purpose = "test"
profile = "all"
lawful_basis = "test only: everything, to prove the journal strips cards itself"
[[classify.rule]]
category = "payments"
field = "content.text"
contains = " "
[profiles.all.fields]
"*" = "keep"
)";

std::vector<std::string> lines(const std::filesystem::path& file) {
    std::vector<std::string> out;
    std::ifstream in(file);
    for (std::string l; std::getline(in, l);)
        if (!l.empty()) out.push_back(l);
    return out;
}

} // namespace

TEST_CASE("record ids: R<chunk>-<index>, exact at every number of digits, and parsed back") {
    std::string reused = "a longer id left in the buffer, R123456789-987654";
    for (const std::int64_t chunk : {1LL, 9LL, 10LL, 99LL, 100LL, 123456789LL, 9223372036854775807LL})
        for (const std::uint32_t index : {0u, 9u, 10u, 99999u, 100000u}) {
            const std::string want = "R" + std::to_string(chunk) + "-" + std::to_string(index);
            CHECK(pipeline::record_id(chunk, index) == want);
            pipeline::assign_record_id(reused, chunk, index);
            CHECK(reused == want);
            std::int64_t c = 0;
            std::uint32_t i = 0;
            REQUIRE(pipeline::parse_record_id(want, c, i));
            CHECK(c == chunk);
            CHECK(i == index);
        }
}

TEST_CASE("default prepare helpers: one on a machine of more than two CPUs, none on two or fewer") {
    CHECK(pipeline::Journal::default_prepare_helpers(1) == 0);
    CHECK(pipeline::Journal::default_prepare_helpers(2) == 0);
    CHECK(pipeline::Journal::default_prepare_helpers(3) == 1);
    CHECK(pipeline::Journal::default_prepare_helpers(64) == 1);
    CHECK(pipeline::Journal::default_prepare_helpers(0) == 0); // hardware_concurrency() unknown
}

TEST_CASE("pipeline: thousands of random records; every payload is within its profile, unrouted "
          "destinations get nothing, and undeclared canaries appear nowhere") {
    const std::string config = R"(
[sources.src]
plugin = "memory-source"
[sources.src.config]
count = 0
[destinations.revenues]
plugin = "memory-sink"
[destinations.revenues.config]
output = "revenues.jsonl"
[destinations.waste]
plugin = "memory-sink"
[destinations.waste.config]
output = "waste.jsonl"
[destinations.housing]
plugin = "memory-sink"
[destinations.housing.config]
output = "housing.jsonl"
[[classify.rule]]
category = "council_tax"
field = "hints.queue"
equals = "ctax"
[[classify.rule]]
category = "bins"
field = "hints.queue"
equals = "bins"
[[route]]
category = "council_tax"
destination = "revenues"
purpose = "council tax"
profile = "revs"
[[route]]
category = "bins"
destination = "waste"
purpose = "missed bins"
profile = "waste"
[profiles.revs.fields]
"citizen.name" = "keep"
"citizen.address.*" = "keep"
"contact.phone" = "mask:4"
"content.turns[*].text" = "redact"
[profiles.waste.fields]
"citizen.address.postcode" = "generalise:postcode"
"content.turns[*].text" = "redact"
)";
    Node node(config);
    std::mt19937 rng(20261128);
    const char* queues[] = {"ctax", "bins", "other"};
    const std::vector<std::pair<std::string, std::string>> optional = {
        {"citizen.name", "identity.name"},       {"citizen.address.line1", "contact.address"},
        {"citizen.address.postcode", "contact.postcode"}, {"contact.phone", "contact.phone"},
        {"contact.email", "contact.email"},      {"identifiers.nino", "identifier.nino"},
        {"special.health", "special.health"},    {"citizen.dob", "identity.dob"},
        {"refs.account", "reference.account"},
    };
    // Fields no profile names: their canaries must appear in no payload.
    const std::set<std::string> undeclared = {"contact.email", "identifiers.nino", "special.health",
                                              "citizen.dob", "refs.account"};
    std::set<std::string> canaries;
    std::map<std::string, std::uint64_t> expected;
    constexpr int kRecords = 3000;
    std::vector<std::unique_ptr<sb_record>> batch;
    for (int i = 0; i < kRecords; ++i) {
        std::vector<std::tuple<std::string, std::string, std::string>> fields;
        std::string queue = queues[rng() % 3];
        fields.emplace_back("hints.queue", queue, "classification.hint");
        for (const auto& [path, category] : optional) {
            if (rng() % 2) continue;
            std::string value = "Canary-" + std::to_string(i) + "-" + std::to_string(rng() % 100000) + "-" + path;
            if (path == "citizen.address.postcode") value = "L8 0ZZ";
            if (undeclared.count(path)) canaries.insert(value);
            fields.emplace_back(path, value, category);
        }
        int turns = static_cast<int>(rng() % 4);
        for (int t = 0; t < turns; ++t)
            fields.emplace_back("content.turns[" + std::to_string(t) + "].text",
                                "turn text " + std::to_string(t), "content.free_text");
        batch.push_back(make(fields));
        if (queue == "ctax") ++expected["revenues"];
        if (queue == "bins") ++expected["waste"];
        if (batch.size() == 500) {
            for (auto s : node.emit("src", std::move(batch))) CHECK(s == SB_OK);
            batch.clear();
        }
    }
    for (auto s : node.emit("src", std::move(batch))) CHECK(s == SB_OK);

    node.wait_delivered("revenues", expected["revenues"]);
    node.wait_delivered("waste", expected["waste"]);
    std::map<std::string, std::vector<sb::detail::PathPattern>> allowed;
    for (const auto& [name, profile] : node.policy->profiles())
        for (const auto& rule : profile.rules()) allowed[name].push_back(rule.pattern);
    std::map<std::string, std::string> profile_of = {{"revenues", "revs"}, {"waste", "waste"}};
    for (const std::string dest : {"revenues", "waste", "housing"}) {
        // The output path is relative to the config file's directory.
        auto out = lines(node.dir.path / (dest + ".jsonl"));
        CHECK(out.size() == expected[dest]);
        std::set<std::string> ids;
        for (const auto& line : out) {
            std::size_t leaked = 0;
            for (const auto& c : canaries) leaked += line.find(c) != std::string::npos;
            REQUIRE(leaked == 0);
            auto at = line.find("\"record_id\":\"");
            REQUIRE(at != std::string::npos);
            const std::string id = line.substr(at + 13, line.find('"', at + 13) - at - 13);
            ids.insert(id);
            // Every field path in the payload is named by the profile.
            sb_record payload;
            sb::detail::JsonError error;
            sb::detail::RecordReadOptions o;
            o.envelope = true;
            auto rec_at = line.find("\"record\":");
            REQUIRE(sb::detail::read_record_json(line.substr(rec_at + 9, line.size() - rec_at - 10), payload,
                                                 error, o));
            // The copy carries its record id (set by the worker as it
            // hands the copy over).
            const char* own_id = payload.data.meta("id");
            REQUIRE(own_id);
            CHECK(own_id == id);
            for (const auto& leaf : payload.data.leaves()) {
                bool ok = false;
                for (const auto& p : allowed[profile_of[dest]]) ok = ok || p.matches(leaf.path());
                INFO(dest << ": " << leaf.path());
                CHECK(ok);
                CHECK(leaf.category().rfind("special.", 0) != 0);
            }
        }
        CHECK(ids.size() == out.size()); // no id twice
    }
    // Nothing routes to housing.
    CHECK(lines(node.dir.path / "housing.jsonl").empty());
    // Undeclared values are in the journal (it keeps the whole record) but
    // never left it.
    CHECK(node.metrics.value("src", "records_in") == kRecords);
}

TEST_CASE("pipeline: card numbers never reach the store, whatever the profiles say") {
    Node node(kChatToEverything);
    // The Landbot fixture's card, and the common written forms.
    std::vector<std::string> texts = {
        "also can i pay the £42.10 arrears now? card is 4111 1111 1111 1111 exp 09/27 cvv 123",
        "card 4111-1111-1111-1111 please",
        "number 4111111111111111 thanks",
        "amex 3782 822463 10005 exp 01/30",
        "mastercard 5555 5555 5555 4444, security code 987"};
    std::vector<std::unique_ptr<sb_record>> batch;
    for (const auto& t : texts) batch.push_back(make({{"content.text", t, "content.free_text"}}));
    for (auto s : node.emit("chat", std::move(batch))) CHECK(s == SB_OK);
    node.wait_delivered("everything", texts.size());
    node.store->scrub();
    std::string raw = slurp_tree(node.dir.path);
    for (const char* pan : {"4111111111111111", "4111 1111 1111 1111", "4111-1111-1111-1111",
                            "378282246310005", "3782 822463 10005", "5555555555554444",
                            "5555 5555 5555 4444"})
        CHECK(raw.find(pan) == std::string::npos);
    CHECK(raw.find("[CARD]") != std::string::npos);
    // The audit trail counts the redactions, and holds no text.
    node.journal->flush_audit();
    std::string audit = slurp_tree(node.data() / "audit");
    CHECK(audit.find("cards_redacted=1") != std::string::npos);
    CHECK(audit.find("arrears") == std::string::npos);
}

TEST_CASE("pipeline: card data a source sets by shape is redacted as it is set, and a field set after is "
          "looked at again at ingest") {
    Node node(kChatToEverything);
    // The host table the source's plugin is given.
    const plugin::Instance* chat = nullptr;
    for (const auto& inst : node.instances)
        if (inst->name() == "chat") chat = inst.get();
    REQUIRE(chat);
    const sb_host_api& api = *chat->api();
    const char* paths[] = {"content.text", "content.subject"};
    sb_shape* shape = api.shape_new(paths, nullptr, 2);
    REQUIRE(shape);
    auto shaped = [&](const std::string& text) {
        auto r = std::make_unique<sb_record>();
        const sb_value v[] = {{SB_VALUE_STRING, text.data(), text.size(), 0, 0},
                              {SB_VALUE_STRING, "payment", 7, 0, 0}};
        REQUIRE(api.record_set_shape(r.get(), shape, v) == SB_OK);
        REQUIRE(api.record_set_meta(r.get(), "channel", "web_chat") == SB_OK);
        return r;
    };
    std::vector<std::unique_ptr<sb_record>> batch;
    // Redacted as it is set: the value the source reads back has no card.
    batch.push_back(shaped("card is 4111 1111 1111 1111 exp 09/27"));
    const sb_record& first = *batch.back();
    CHECK(first.data.find("content.text")->str.find("4111") == std::string::npos);
    CHECK(first.data.cards_clean());
    CHECK(first.data.cards_redacted() == 1);
    // A field the source sets after the shape, with a card in it: the
    // journal looks at the record again, and counts both.
    batch.push_back(shaped("card is 5555 5555 5555 4444"));
    const std::string late = "the long number 378282246310005";
    const sb_value lv{SB_VALUE_STRING, late.data(), late.size(), 0, 0};
    REQUIRE(api.record_set(batch.back().get(), "content.late", &lv, "content.free_text") == SB_OK);
    CHECK_FALSE(batch.back()->data.cards_clean());
    CHECK(batch.back()->data.find("content.late")->str == late);
    // And one without card data.
    batch.push_back(shaped("no card here, just 12 apples"));
    for (auto st : node.emit("chat", std::move(batch))) CHECK(st == SB_OK);
    node.wait_delivered("everything", 3);
    node.store->scrub();
    const std::string raw = slurp_tree(node.dir.path);
    for (const char* pan : {"4111 1111 1111 1111", "5555 5555 5555 4444", "378282246310005"})
        CHECK(raw.find(pan) == std::string::npos);
    CHECK(raw.find("just 12 apples") != std::string::npos);
    node.journal->flush_audit();
    const std::string audit = slurp_tree(node.data() / "audit");
    CHECK(audit.find("cards_redacted=1") != std::string::npos);
    CHECK(audit.find("cards_redacted=2") != std::string::npos);
    api.shape_free(shape);
}

TEST_CASE("pipeline: after expiry, canaries are gone from every byte of the data directory; the "
          "vendor erase hook and department erase notices ran; all of it is audited") {
    Node node(R"(
[sources.chat]
plugin = "memory-source"
[sources.chat.config]
count = 0
[destinations.revenues]
plugin = "memory-sink"
[destinations.revenues.config]
output = "revenues.jsonl"
[[classify.rule]]
category = "council_tax"
field = "topic"
equals = "ctax"
[[route]]
category = "council_tax"
destination = "revenues"
purpose = "council tax"
profile = "revs"
[profiles.revs.fields]
"citizen.name" = "keep"
[retention]
default = "28d"
[[retention.policy]]
category = "unclassified"
retention = "7d"
)");
    std::vector<std::unique_ptr<sb_record>> batch;
    for (int i = 0; i < 50; ++i) {
        batch.push_back(make({{"citizen.name", "Canary-Name-" + std::to_string(i), "identity.name"},
                              {"citizen.secret", "Canary-Secret-" + std::to_string(i), "identity.other"},
                              {"topic", i % 5 ? "ctax" : "other", "classification.hint"}}));
        REQUIRE(batch.back()->data.set_meta("external_id", "ext-" + std::to_string(i)) == SB_OK);
    }
    for (auto s : node.emit("chat", std::move(batch))) CHECK(s == SB_OK);
    node.wait_delivered("revenues", 40);
    node.store->scrub();
    std::string before = slurp_tree(node.dir.path);
    REQUIRE(before.find("Canary-Name-1") != std::string::npos);
    REQUIRE(before.find("Canary-Secret-1") != std::string::npos);

    // Day 8: only the unclassified records (7 days) go.
    node.now += 8LL * 86'400'000;
    CHECK(node.retention->sweep(node.now) == 10);
    std::string day8 = slurp_tree(node.data());
    CHECK(day8.find("Canary-Secret-0") == std::string::npos); // i = 0 was unclassified
    CHECK(day8.find("Canary-Secret-1") != std::string::npos);

    // Day 29: everything.
    node.now += 21LL * 86'400'000;
    CHECK(node.retention->sweep(node.now) == 40);
    CHECK(node.retention->run_erase_tasks(node.now) == 50 + 40); // 50 vendor copies, 40 notices
    std::string after = slurp_tree(node.dir.path);
    CHECK(after.find("Canary-Name-") == std::string::npos);
    CHECK(after.find("Canary-Secret-") == std::string::npos);
    // The department was told and erased its copies; the vendor hook ran.
    CHECK(lines(node.dir.path / "revenues.jsonl").empty());
    CHECK(node.metrics.value("revenues", "erased") == 40);
    CHECK(node.metrics.value("chat", "erase_requests") == 50);
    CHECK(node.store->erase_tasks(INT64_MAX, 100).empty());
    // Audited: every expiry and every erase step, and the chain holds.
    node.journal->flush_audit();
    std::string audit = slurp_tree(node.data() / "audit");
    std::size_t expire = 0, erase = 0;
    for (std::size_t at = 0; (at = audit.find("\texpire\tR", at)) != std::string::npos; ++at) ++expire;
    for (std::size_t at = 0; (at = audit.find("\terase\tR", at)) != std::string::npos; ++at) ++erase;
    CHECK(expire == 50);
    CHECK(erase == 90);
    CHECK(audit.find("outcome=confirmed") != std::string::npos);
    CHECK(audit::AuditLog::verify(node.data() / "audit").ok);
    // The idempotency keys went with the records: the vendor may resend.
    CHECK(node.store->expired_chunks(INT64_MAX, 10).empty());
}

TEST_CASE("pipeline: disclosure entries of records of one shape name each route's purpose and the fields "
          "each record sent") {
    // The journal and the profiles memoise per record shape what is the
    // same for every record of it (the rules, the summary of the fields
    // sent, the disclosure's text per route): a record that lost a value or
    // has an attachment must still be audited as what it sent.
    Node node(R"(
[sources.hook]
plugin = "memory-source"
[sources.hook.config]
count = 0
[destinations.d]
plugin = "memory-sink"
[destinations.d.config]
output = "d.jsonl"
[destinations.e]
plugin = "memory-sink"
[destinations.e.config]
output = "e.jsonl"
[[route]]
category = "unclassified"
destination = "d"
purpose = "review"
profile = "p"
[[route]]
category = "unclassified"
destination = "e"
purpose = "another purpose"
profile = "p"
[profiles.p.fields]
"a" = "keep"
"when" = "generalise:month"
"attachments.scan" = "keep"
)");
    const char* paths[] = {"when", "other", "a"};
    sb_shape* shape = sb::detail::shape_new(paths, nullptr, 3);
    REQUIRE(shape);
    auto shaped = [&](const char* when, bool attachment) {
        auto r = std::make_unique<sb_record>();
        const sb_value v[] = {{SB_VALUE_STRING, when, std::strlen(when), 0, 0},
                              {SB_VALUE_STRING, "o", 1, 0, 0},
                              {SB_VALUE_STRING, "x", 1, 0, 0}};
        REQUIRE(sb::detail::record_set_shape(r.get(), shape, v) == SB_OK);
        REQUIRE(r->data.set_meta("channel", "web_chat") == SB_OK);
        if (attachment) {
            sb_attachment a{};
            a.struct_size = sizeof a;
            a.name = "scan";
            a.uri = "file:///scan.pdf";
            REQUIRE(r->data.add_attachment(a) == SB_OK);
        }
        return r;
    };
    const std::string full = "sent=a:keep,when:generalise:month";
    const std::vector<std::string> want = {full, "sent=a:keep", full + ",attachments.scan:keep", full};
    for (int round = 0; round < 2; ++round) {
        std::vector<std::unique_ptr<sb_record>> batch;
        batch.push_back(shaped("2025-01-06", false));
        batch.push_back(shaped("soon", false)); // not a date: not sent
        batch.push_back(shaped("2025-02-01", true));
        batch.push_back(shaped("2025-03-01", false));
        for (sb_status st : node.emit("hook", std::move(batch))) CHECK(st == SB_OK);
    }
    sb::detail::shape_free(shape);
    node.wait_delivered("d", 8);
    node.wait_delivered("e", 8);
    node.journal->flush_audit();
    // Read back with the shared attributes in place (read_range).
    std::vector<std::string> d, e;
    std::size_t ingests = 0;
    for (const auto& r : audit::AuditLog::read_range(node.data() / "audit", 1, UINT64_MAX)) {
        if (r.kind == "ingest") { // its expiry, then its set's attributes
            ++ingests;
            INFO(r.detail);
            CHECK(r.detail.rfind("expires=", 0) == 0);
            CHECK(r.detail.find(";source=hook;channel=") != std::string::npos);
            CHECK(r.detail.find(";category=unclassified;rule=none;fields=") != std::string::npos);
            CHECK(r.detail.find("set=") == std::string::npos);
        }
        if (r.kind != "disclose") continue;
        const std::string& line = r.detail;
        const bool to_d = line.find("destination=d;") != std::string::npos;
        CHECK(line.find(to_d ? "purpose=review;profile=p@1;route=route[0];"
                             : "purpose=another purpose;profile=p@1;route=route[1];") != std::string::npos);
        const std::size_t at = line.find("sent=");
        REQUIRE(at != std::string::npos);
        (to_d ? d : e).push_back(line.substr(at));
    }
    std::vector<std::string> twice = want;
    twice.insert(twice.end(), want.begin(), want.end());
    CHECK(ingests == 8);
    CHECK(d == twice);
    CHECK(e == twice);
    // As written, a disclose entry names its set; each of the 2 routes x 3
    // distinct field lists is written once (one day file), the copies with
    // an attachment (no shape) included. (The ingest entries' sets, by
    // counts of fields and attachments, are not counted here.)
    std::size_t sets = 0, disclosures = 0;
    std::istringstream in(slurp_tree(node.data() / "audit"));
    for (std::string line; std::getline(in, line);) {
        if (line.find("\tset\t-\tset=") != std::string::npos && line.find(";purpose=") != std::string::npos)
            ++sets;
        if (line.find("\tdisclose\t") == std::string::npos) continue;
        ++disclosures;
        CHECK(line.find("purpose=") == std::string::npos);
        CHECK(line.find(";set=") != std::string::npos);
    }
    CHECK(disclosures == 16);
    CHECK(sets == 6);
    CHECK(audit::AuditLog::verify(node.data() / "audit").ok);
}

TEST_CASE("pipeline: a repeated external id is acknowledged as a duplicate and delivered once") {
    Node node(kHookToD);
    for (int round = 0; round < 3; ++round) {
        std::vector<std::unique_ptr<sb_record>> batch;
        batch.push_back(make({{"a", "x", "content.free_text"}}));
        batch.back()->data.set_meta("external_id", "landbot-msg-1");
        auto r = node.emit("hook", std::move(batch));
        CHECK(r[0] == (round == 0 ? SB_OK : SB_DUPLICATE));
    }
    node.wait_delivered("d", 1);
    std::this_thread::sleep_for(100ms);
    CHECK(lines(node.dir.path / "d.jsonl").size() == 1);
    // An empty record is refused, not stored.
    std::vector<std::unique_ptr<sb_record>> empty;
    empty.push_back(std::make_unique<sb_record>());
    CHECK(node.emit("hook", std::move(empty))[0] == SB_ERR_INVALID);
}

TEST_CASE("pipeline: audit entries written ahead of a commit that never happened are set aside at start") {
    Node node(kHookToD);
    auto committed_head = [&] { return pipeline::committed_audit_head(*node.store).value(); };
    std::vector<std::unique_ptr<sb_record>> batch;
    for (int i = 0; i < 3; ++i) batch.push_back(make({{"a", "x" + std::to_string(i), "content.free_text"}}));
    node.emit("hook", std::move(batch));
    node.wait_delivered("d", 3);
    node.journal->flush_audit();
    // Every entry is in the file before its transaction commits: the file
    // ends exactly at the head the store committed.
    // Entries by kind; deliveries counted by the seqs they cover (one entry
    // each, or one per run delivered together).
    auto trail = [&] {
        std::map<std::string, std::uint64_t> n;
        for (const auto& r : audit::AuditLog::read_range(node.data() / "audit", 1, UINT64_MAX)) {
            ++n[r.kind];
            if (r.kind != "deliver") continue;
            std::map<std::string, std::string> a;
            for (auto& [k, v] : audit::parse_detail(r.detail)) a[k] = v;
            std::uint64_t first = 0, last = 0;
            n["delivered"] += audit::parse_seq_run(a["seqs"], first, last) ? last - first + 1 : 1;
        }
        return n;
    };
    const audit::Head committed = committed_head();
    CHECK(node.audit->durable_head() == committed);
    auto n = trail();
    CHECK(n["ingest"] == 3);
    CHECK(n["disclose"] == 3);
    CHECK(n["set"] == 2); // the ingests' shared attributes, and the disclosures'
    CHECK(n["delivered"] == 3);
    CHECK(committed.seq == n["ingest"] + n["disclose"] + n["set"] + n["deliver"]);
    CHECK(node.store->pending_audit().empty()); // no spool in the store

    // The crash between the two: a group's entries written and synced, the
    // store transaction never committed.
    node.journal->stop();
    node.audit->append(node.now, audit::kind::ingest, "R99-0", "source=hook");
    node.audit->append(node.now, audit::kind::disclose, "R99-0", "destination=d;seq=4");
    REQUIRE(node.audit->sync().ok());
    CHECK_FALSE(audit::AuditLog::verify(node.data() / "audit").problems.size());

    node.journal->start();
    CHECK(node.audit->head() == committed);
    std::string aside;
    for (auto& e : std::filesystem::directory_iterator(node.data() / "audit"))
        if (e.path().extension() == ".uncommitted") aside += sbtest::read_file(e.path());
    CHECK(std::count(aside.begin(), aside.end(), '\n') == 2);
    CHECK(aside.find("R99-0") != std::string::npos);
    // Out of the trail itself: no reader of it sees them.
    CHECK(audit::AuditLog::read_records(node.data() / "audit", {"R99-0"}).empty());

    // The chain continues from the committed head; the trail verifies
    // against the store's head.
    std::vector<std::unique_ptr<sb_record>> more;
    more.push_back(make({{"a", "y", "content.free_text"}}));
    node.emit("hook", std::move(more));
    node.wait_delivered("d", 4);
    node.journal->flush_audit();
    const auto r = audit::AuditLog::verify(node.data() / "audit", committed_head());
    for (const auto& p : r.problems) UNSCOPED_INFO(p.file << ":" << p.line << " " << p.what);
    CHECK(r.ok);
    n = trail();
    CHECK(n["ingest"] == 4);
    CHECK(n["delivered"] == 4);
    CHECK(n["set"] == 4); // the two sets again after the entries were set aside
    CHECK(r.entries == n["ingest"] + n["disclose"] + n["set"] + n["deliver"]);
}

TEST_CASE("pipeline: a batch begun while an earlier one is in flight commits only if that one does") {
    Node node(kHookToD);
    auto batch = [](const std::string& tag, int n) {
        std::vector<std::unique_ptr<sb_record>> b;
        for (int i = 0; i < n; ++i) b.push_back(make({{"a", tag + std::to_string(i), "content.free_text"}}));
        return b;
    };
    auto wait = [&](plugin::Emission& e, std::size_t n, std::string& error) {
        std::vector<sb_status> results(n, SB_ERR_INTERNAL);
        std::vector<std::unique_ptr<sb_record>> back;
        sb_status s = node.journal->wait(e, results.data(), back, error);
        CHECK(back.size() == n); // given back for recycling
        return s;
    };
    std::string error;

    // Both commit: in the order begun, once each.
    auto b1 = batch("one-", 600), b2 = batch("two-", 600);
    auto first = node.journal->begin("hook", b1, "cursor", "1", nullptr);
    auto second = node.journal->begin("hook", b2, "cursor", "2", first);
    CHECK(b1.empty());
    CHECK(wait(*first, 600, error) == SB_OK);
    CHECK(wait(*second, 600, error) == SB_OK);
    CHECK(node.journal->state_get("hook", "cursor") == "2");
    node.wait_delivered("d", 1200);
    auto sent = lines(node.dir.path / "d.jsonl");
    REQUIRE(sent.size() == 1200);
    CHECK(sent[0].find("one-0") != std::string::npos);
    CHECK(sent[1199].find("two-599") != std::string::npos);

    // The first fails: hold the writer, queue the batch and a write that
    // throws (one group), let the group fail, then begin the second; it is
    // committed in a later group, and is not stored either.
    std::promise<void> release;
    std::shared_future<void> released = release.get_future().share();
    std::promise<void> holding;
    node.journal->submit({[&, released](store::Txn&, audit::AuditLog&) {
                              holding.set_value();
                              released.wait();
                          },
                          {}});
    holding.get_future().wait();
    auto b3 = batch("three-", 10);
    auto third = node.journal->begin("hook", b3, "cursor", "3", nullptr);
    node.journal->submit({[](store::Txn&, audit::AuditLog&) { throw store::StoreError("injected"); }, {}});
    // Queued with them before the writer is let go, so that it is in the
    // same group: when it is done, that group has failed.
    std::promise<bool> group;
    node.journal->submit({[](store::Txn&, audit::AuditLog&) {}, [&](bool ok) { group.set_value(ok); }});
    release.set_value();
    CHECK_FALSE(group.get_future().get()); // (the failed group)
    const std::uint64_t before = node.journal->committed_records();
    auto b4 = batch("four-", 10);
    auto fourth = node.journal->begin("hook", b4, "cursor", "4", third);
    CHECK(wait(*third, 10, error) == SB_ERR_UNAVAILABLE);
    CHECK_THAT(error, Catch::Contains("injected"));
    CHECK(wait(*fourth, 10, error) == SB_ERR_UNAVAILABLE);
    CHECK_THAT(error, Catch::Contains("began before it was not"));
    CHECK(node.journal->committed_records() == before);
    CHECK(node.journal->state_get("hook", "cursor") == "2");

    // Read again, from the first that failed: committed once, in order.
    auto again3 = batch("three-", 10), again4 = batch("four-", 10);
    auto fifth = node.journal->begin("hook", again3, "cursor", "3", nullptr);
    auto sixth = node.journal->begin("hook", again4, "cursor", "4", fifth);
    CHECK(wait(*fifth, 10, error) == SB_OK);
    CHECK(wait(*sixth, 10, error) == SB_OK);
    node.wait_delivered("d", 1220);
    sent = lines(node.dir.path / "d.jsonl");
    REQUIRE(sent.size() == 1220);
    CHECK(sent[1200].find("three-0") != std::string::npos);
    CHECK(sent[1219].find("four-9") != std::string::npos);
    CHECK(node.journal->state_get("hook", "cursor") == "4");
}

TEST_CASE("pipeline: a batch larger than a slice is prepared by several threads, stored while it is "
          "prepared, and commits as one, in order") {
    // Slices are taken by the emitting thread and the helpers in whatever
    // order they get to them; the outcome must not depend on it.
    const unsigned helpers = GENERATE(0u, 1u, 3u);
    INFO("prepare helpers: " << helpers);
    pipeline::Journal::Options options;
    options.prepare_helpers = helpers;
    Node node(kHookToD, options);
    // 2,000 records: four slices. Two repeat an external id of an earlier
    // slice: duplicates across slices. Three are refused, in three slices:
    // two empty, one already past its retention period. All but the first
    // 100 were collected five minutes earlier, so they expire in another
    // bucket: two chunks, one filled across the four slices, the other
    // (which expires later) in the first slice only.
    constexpr int kRecords = 2000;
    auto refused = [](int i) { return i == 600 || i == 1100 || i == 1600; };
    auto duplicate = [](int i) { return i == 1500 || i == 1999; };
    std::vector<std::unique_ptr<sb_record>> batch;
    for (int i = 0; i < kRecords; ++i) {
        if (i == 600 || i == 1600) {
            batch.push_back(std::make_unique<sb_record>()); // no fields: refused
            continue;
        }
        batch.push_back(make({{"a", "v" + std::to_string(i), "content.free_text"}}));
        int ext = i == 1500 ? 100 : i == 1999 ? 700 : i;
        batch.back()->data.set_meta("external_id", "msg-" + std::to_string(ext));
        if (i >= 100) batch.back()->data.set_meta("occurred_at", "2025-01-06T08:55:00Z");
        if (i == 1100) batch.back()->data.set_meta("occurred_at", "2024-01-06T08:55:00Z"); // expired
    }
    auto results = node.emit("hook", std::move(batch));
    for (int i = 0; i < kRecords; ++i) {
        INFO(i);
        CHECK(results[static_cast<std::size_t>(i)] ==
              (duplicate(i) ? SB_DUPLICATE : refused(i) ? SB_ERR_INVALID : SB_OK));
    }
    constexpr int kSent = kRecords - 2 - 3;
    node.wait_delivered("d", kSent);
    auto sent = sbtest::sink_records(node.dir.path / "d.jsonl");
    REQUIRE(sent.size() == kSent);
    // Delivered in the order emitted within each chunk (the journal numbers
    // a batch's copies chunk by chunk), whichever thread prepared each
    // slice.
    std::vector<std::string> expected_early, expected_late, sent_early, sent_late;
    for (int i = 0; i < kRecords; ++i)
        if (!duplicate(i) && !refused(i)) (i < 100 ? expected_late : expected_early).push_back("v" + std::to_string(i));
    std::set<std::string> values, ids;
    for (auto& r : sent) {
        ids.insert(r["id"]);
        values.insert(r["fields.a"]);
        (std::stoi(r["fields.a"].substr(1)) < 100 ? sent_late : sent_early).push_back(r["fields.a"]);
    }
    CHECK(sent_early == expected_early);
    CHECK(sent_late == expected_late);
    CHECK(ids.size() == kSent);
    CHECK(values.size() == kSent);
    std::map<std::int64_t, std::set<std::uint32_t>> chunks; // chunk: record indexes
    for (const auto& id : ids) {
        std::int64_t chunk = 0;
        std::uint32_t index = 0;
        REQUIRE(pipeline::parse_record_id(id, chunk, index));
        chunks[chunk].insert(index);
    }
    REQUIRE(chunks.size() == 2);
    // The destination's last seq as the store keeps it is the highest.
    CHECK(node.store->last_seq("d") == kSent);
    // One outbox row per chunk: the early chunk's entries, from four
    // slices, are consecutive.
    auto rows = node.store->outbox_after("d", 0, 100);
    REQUIRE(rows.size() == 2);
    CHECK(rows[0].count + rows[1].count == kSent);
    CHECK(rows[0].chunk != rows[1].chunk);
    CHECK(node.store->meta("last_seq.d") == std::to_string(kSent));
    CHECK(chunks.rbegin()->second.size() == 100); // the later bucket's, made by the first slice only
    for (const auto& [chunk, indexes] : chunks) CHECK(*indexes.rbegin() == indexes.size() - 1); // 0, 1, 2, ...
    CHECK(values.count("v1500") == 0);
    CHECK(node.metrics.value("hook", "records_in") == kSent);
    CHECK(node.metrics.value("hook", "duplicates") == 2);
    CHECK(node.metrics.value("hook", "refused") == 3);
    node.journal->flush_audit();
    CHECK(audit::AuditLog::verify(node.data() / "audit", pipeline::committed_audit_head(*node.store)).ok);
}

TEST_CASE("pipeline: a batch whose records expire in many minutes, interleaved, takes one outbox row per "
          "chunk and destination; each is delivered once, in order within its chunk") {
    // A batch import: contacts of the last 20 minutes, in no order of time.
    // Each minute of expiry is a chunk; a destination's copies of one chunk
    // are numbered together, whatever slice their records were in.
    Node node(kHookToD);
    constexpr int kRecords = 1500, kMinutes = 20; // three slices
    std::vector<std::unique_ptr<sb_record>> batch;
    for (int i = 0; i < kRecords; ++i) {
        batch.push_back(make({{"a", "v" + std::to_string(i), "content.free_text"}}));
        const int minute = (i * 7) % kMinutes; // interleaved
        char occurred[32];
        std::snprintf(occurred, sizeof occurred, "2025-01-06T08:%02d:30Z", 30 + minute);
        batch.back()->data.set_meta("occurred_at", occurred);
    }
    auto results = node.emit("hook", std::move(batch));
    CHECK(std::count(results.begin(), results.end(), SB_OK) == kRecords);
    node.wait_delivered("d", kRecords);
    auto rows = node.store->outbox_after("d", 0, 1000);
    CHECK(rows.size() == kMinutes); // not one per minute and slice (60), nor per record
    std::set<std::int64_t> row_chunks;
    std::uint64_t next = 1;
    for (const auto& row : rows) {
        row_chunks.insert(row.chunk);
        CHECK(row.first_seq == next); // consecutive, each row after the last
        next = row.first_seq + row.count;
    }
    CHECK(row_chunks.size() == kMinutes);
    CHECK(next == kRecords + 1);
    // Each record once; within a chunk in the order emitted.
    auto sent = sbtest::sink_records(node.dir.path / "d.jsonl");
    REQUIRE(sent.size() == kRecords);
    std::map<std::int64_t, std::vector<int>> by_chunk;
    std::set<std::string> ids;
    for (auto& r : sent) {
        ids.insert(r["id"]);
        std::int64_t chunk = 0;
        std::uint32_t index = 0;
        REQUIRE(pipeline::parse_record_id(r["id"], chunk, index));
        by_chunk[chunk].push_back(std::stoi(r["fields.a"].substr(1)));
    }
    CHECK(ids.size() == kRecords);
    REQUIRE(by_chunk.size() == kMinutes);
    for (const auto& [chunk, values] : by_chunk) {
        CHECK(values.size() == kRecords / kMinutes);
        CHECK(std::is_sorted(values.begin(), values.end()));
    }
    node.journal->flush_audit();
    CHECK(audit::AuditLog::verify(node.data() / "audit", pipeline::committed_audit_head(*node.store)).ok);
}

TEST_CASE("outbox rows: an entry the same as the one before is two bytes, read with its row's context") {
    using namespace pipeline;
    auto full = [](std::string& out, const char* purpose, const char* fingerprint, std::int64_t at) {
        encode_entry_head(purpose, "p", 3, out);
        EntryRef ref;
        ref.fingerprint = fingerprint;
        ref.lawful_basis = true;
        ref.routed_at = at;
        encode_reference(ref, out);
    };
    std::string row;
    full(row, "review", "f1", 100);
    encode_repeat(row);
    encode_repeat(row);
    full(row, "another purpose", "f2", 200);
    const std::size_t before_last = row.size();
    encode_repeat(row);
    CHECK(row.size() - before_last == 2);
    // Read in order, each entry gets what it repeats.
    const std::vector<std::pair<std::string, std::string>> want = {
        {"review", "f1"}, {"review", "f1"}, {"review", "f1"}, {"another purpose", "f2"}, {"another purpose", "f2"}};
    std::size_t pos = 0, skipped = 0;
    EntryContext context;
    EntryRef ref;
    for (const auto& [purpose, fingerprint] : want) {
        OutboxEntry e;
        REQUIRE(decode_entry(row, pos, e, ref, &context) == EntryForm::Reference);
        CHECK(std::string(e.purpose.c_str()) == purpose);
        CHECK(std::string(e.profile.c_str()) == "p");
        CHECK(e.profile_version == 3);
        CHECK(ref.fingerprint == fingerprint);
        CHECK(ref.lawful_basis);
        CHECK(ref.routed_at == (fingerprint == "f1" ? 100 : 200));
        REQUIRE(skip_entry(row, skipped));
        CHECK(skipped == pos);
    }
    CHECK(pos == row.size());
    // A repeat with nothing before it, or read without a context: unreadable.
    std::size_t at = 0;
    OutboxEntry e;
    std::string lone;
    encode_repeat(lone);
    EntryContext fresh;
    CHECK(decode_entry(lone, at, e, ref, &fresh) == EntryForm::Bad);
    std::string pair;
    full(pair, "x", "f", 1);
    encode_repeat(pair);
    at = 0;
    CHECK(decode_entry(pair, at, e, ref) == EntryForm::Reference);
    CHECK(decode_entry(pair, at, e, ref) == EntryForm::Bad); // no context given
    // After an entry with a record (a tombstone), a repeat is unreadable too.
    std::string after_record;
    OutboxEntry gone;
    gone.profile = kErasedProfile;
    gone.record = std::make_shared<sb_record>();
    encode_entry(gone, after_record);
    encode_repeat(after_record);
    at = 0;
    EntryContext c2;
    CHECK(decode_entry(after_record, at, e, ref, &c2) == EntryForm::Record);
    CHECK(decode_entry(after_record, at, e, ref, &c2) == EntryForm::Bad);
}

TEST_CASE("delivery ids: handed out in order, settled at the back or anywhere, each once") {
    pipeline::DeliveryIds ids;
    for (std::uint64_t id = 1; id <= 10; ++id) ids.insert(id);
    CHECK(ids.erase(10) == 1); // a plugin that returned at once: the back
    CHECK(ids.erase(10) == 0); // not twice
    CHECK(ids.erase(4) == 1);  // a completion out of order
    CHECK(ids.erase(4) == 0);
    CHECK(ids.erase(42) == 0); // never handed out
    ids.insert(4);             // handed out again after a timeout
    ids.insert(4);             // (once)
    CHECK(ids.erase(4) == 1);
    CHECK(ids.erase(4) == 0);
    for (std::uint64_t id : {1, 2, 3, 5, 6, 7, 8, 9}) CHECK(ids.erase(id) == 1);
    CHECK(ids.erase(1) == 0);
}

TEST_CASE("audit: deliveries in a run of consecutive seqs are one entry; alone or with a receipt, one each") {
    TempDir dir("sb-deliver-runs");
    {
        audit::AuditLog log(dir.path);
        std::vector<pipeline::Delivered> delivered = {
            {1, "R1-0", 1, ""}, {2, "R1-1", 1, ""}, {3, "R1-2", 1, ""}, // a run
            {5, "R1-4", 1, ""},                                         // after a gap: alone
            {6, "R1-5", 1, "CASE-6"},                                   // a receipt: its own
            {7, "R1-6", 1, ""},  {8, "R1-7", 2, ""}, {9, "R1-8", 2, ""}, // attempts differ
        };
        std::string scratch;
        pipeline::audit_deliveries(log, 1'700'000'000'000, "d", delivered, scratch);
        REQUIRE(log.sync().ok());
    }
    std::vector<std::pair<std::string, std::string>> got; // record, detail
    for (const auto& r : audit::AuditLog::read_range(dir.path, 1, UINT64_MAX)) {
        CHECK(r.kind == "deliver");
        got.emplace_back(r.record_id, r.detail);
    }
    const std::vector<std::pair<std::string, std::string>> want = {
        {"", "destination=d;seqs=1-3;attempt=1"},
        {"R1-4", "destination=d;seq=5;attempt=1"},
        {"R1-5", "destination=d;seq=6;attempt=1;receipt=CASE-6"},
        {"R1-6", "destination=d;seq=7;attempt=1"},
        {"", "destination=d;seqs=8-9;attempt=2"},
    };
    CHECK(got == want);
    CHECK(audit::AuditLog::verify(dir.path).ok);
}

TEST_CASE("audit: every seq disclosed is delivered once in the trail, and a subject access report finds each") {
    Node node(kHookToD);
    constexpr int kBatches = 3, kPerBatch = 700;
    for (int b = 0; b < kBatches; ++b) {
        std::vector<std::unique_ptr<sb_record>> batch;
        for (int i = 0; i < kPerBatch; ++i) {
            auto r = std::make_unique<sb_record>();
            std::string v = "v" + std::to_string(b) + "-" + std::to_string(i);
            sb_value value{SB_VALUE_STRING, v.data(), v.size(), 0, 0};
            r->data.set("a", value, "content.free_text");
            batch.push_back(std::move(r));
        }
        for (sb_status st : node.emit("hook", std::move(batch))) CHECK(st == SB_OK);
    }
    constexpr int kAll = kBatches * kPerBatch;
    node.wait_delivered("d", kAll);
    node.journal->flush_audit();
    std::map<std::uint64_t, std::string> disclosed; // seq -> record
    std::map<std::uint64_t, int> delivered;         // seq -> entries covering it
    std::set<std::uint64_t> in_run;                 // seqs delivered in a run
    std::size_t deliver_entries = 0;
    for (const auto& r : audit::AuditLog::read_range(node.data() / "audit", 1, UINT64_MAX)) {
        std::map<std::string, std::string> a;
        for (auto& [k, v] : audit::parse_detail(r.detail)) a[k] = v;
        if (r.kind == "disclose") disclosed[std::stoull(a["seq"])] = r.record_id;
        if (r.kind != "deliver") continue;
        ++deliver_entries;
        CHECK(a["destination"] == "d");
        if (a.count("seqs")) {
            CHECK(r.record_id.empty());
            std::uint64_t first = 0, last = 0;
            REQUIRE(audit::parse_seq_run(a["seqs"], first, last));
            for (std::uint64_t q = first; q <= last; ++q) {
                ++delivered[q];
                in_run.insert(q);
            }
        } else {
            const std::uint64_t q = std::stoull(a["seq"]);
            CHECK(r.record_id == disclosed[q]);
            ++delivered[q];
        }
    }
    REQUIRE(disclosed.size() == static_cast<std::size_t>(kAll));
    REQUIRE(delivered.size() == disclosed.size());
    for (const auto& [seq, n] : delivered) {
        INFO(seq);
        CHECK(disclosed.count(seq) == 1);
        CHECK(n == 1);
    }
    // Delivered in batches: far fewer entries than deliveries.
    CHECK(deliver_entries * 10 < static_cast<std::size_t>(kAll));
    CHECK(audit::AuditLog::verify(node.data() / "audit", pipeline::committed_audit_head(*node.store)).ok);

    // What a subject access report does with them: each of a few records
    // (one at each end and the middle) has its disclosure and its delivery.
    std::vector<governance::FoundRecord> found;
    std::set<std::string, std::less<>> ids;
    for (std::uint64_t seq : {std::uint64_t{1}, std::uint64_t{kAll / 2}, std::uint64_t{kAll}}) {
        found.emplace_back().id = disclosed[seq];
        ids.insert(disclosed[seq]);
    }
    governance::apply_audit(found, audit::AuditLog::read_records(node.data() / "audit", ids, true));
    for (const auto& f : found) {
        INFO(f.id);
        REQUIRE(f.disclosures.size() == 1);
        CHECK(f.disclosures[0].destination == "d");
        CHECK(f.disclosures[0].delivered_at >= f.disclosures[0].disclosed_at);
        CHECK(f.disclosures[0].delivered_at > 0);
    }
    // Without the runs, only what has an entry of its own is found delivered.
    std::vector<governance::FoundRecord> alone(1);
    alone[0].id = disclosed[kAll / 2];
    governance::apply_audit(alone, audit::AuditLog::read_records(node.data() / "audit", {alone[0].id}));
    REQUIRE(alone[0].disclosures.size() == 1);
    CHECK((alone[0].disclosures[0].delivered_at != 0) == (in_run.count(kAll / 2) == 0));
}

TEST_CASE("pipeline: several sources emit large batches at once while helpers prepare them") {
    // Two emitting threads, one helper: the helper joins one batch at a
    // time; every record of every batch is committed and delivered once.
    pipeline::Journal::Options options;
    options.prepare_helpers = 1;
    Node node(kHookToD, options);
    constexpr int kThreads = 2, kBatches = 5, kPerBatch = 1300;
    std::vector<std::thread> threads;
    std::atomic<int> failures{0};
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
            for (int b = 0; b < kBatches; ++b) {
                std::vector<std::unique_ptr<sb_record>> batch;
                for (int i = 0; i < kPerBatch; ++i) {
                    auto r = std::make_unique<sb_record>();
                    std::string v = "t" + std::to_string(t) + "-" + std::to_string(b) + "-" + std::to_string(i);
                    sb_value value{SB_VALUE_STRING, v.data(), v.size(), 0, 0};
                    r->data.set("a", value, "content.free_text");
                    batch.push_back(std::move(r));
                }
                std::vector<sb_status> results(batch.size());
                std::string error;
                if (node.journal->emit("hook", batch, nullptr, nullptr, results.data(), error) != SB_OK ||
                    std::count(results.begin(), results.end(), SB_OK) != kPerBatch)
                    ++failures;
            }
        });
    }
    for (auto& th : threads) th.join();
    CHECK(failures == 0);
    constexpr int kAll = kThreads * kBatches * kPerBatch;
    node.wait_delivered("d", kAll);
    auto sent = sbtest::sink_records(node.dir.path / "d.jsonl");
    REQUIRE(sent.size() == kAll);
    // Each thread's records arrive in the order it emitted them.
    std::map<std::string, std::vector<std::string>> by_thread;
    std::set<std::string> values;
    for (auto& r : sent) {
        const std::string& v = r["fields.a"];
        values.insert(v);
        by_thread[v.substr(0, v.find('-'))].push_back(v);
    }
    CHECK(values.size() == kAll);
    for (int t = 0; t < kThreads; ++t) {
        const auto& got = by_thread["t" + std::to_string(t)];
        REQUIRE(got.size() == kBatches * kPerBatch);
        std::size_t k = 0;
        for (int b = 0; b < kBatches; ++b)
            for (int i = 0; i < kPerBatch; ++i, ++k)
                CHECK(got[k] == "t" + std::to_string(t) + "-" + std::to_string(b) + "-" + std::to_string(i));
    }
    node.journal->flush_audit();
    CHECK(audit::AuditLog::verify(node.data() / "audit", pipeline::committed_audit_head(*node.store)).ok);
}

TEST_CASE("pipeline: a lazy write waits for a commit to share, at most lazy_ms; stop commits it") {
    pipeline::Journal::Options options;
    options.lazy_ms = 400;
    Node node(kHookToD, options);
    auto lazy_set = [&](const std::string& key) {
        node.journal->submit_lazy({[key](store::Txn& t, audit::AuditLog&) { t.set_state("lazy-test", key, "v"); }, {}});
    };
    auto committed = [&](const std::string& key) { return node.store->state("lazy-test", key).has_value(); };

    // Alone: committed once lazy_ms has passed, not before.
    const auto start = std::chrono::steady_clock::now();
    lazy_set("alone");
    std::this_thread::sleep_for(100ms);
    CHECK_FALSE(committed("alone"));
    REQUIRE(sbtest::wait_until([&] { return committed("alone"); }, 10s));
    CHECK(std::chrono::steady_clock::now() - start >= 350ms);

    // With a write that does not wait: both in the same commit, at once.
    lazy_set("shared");
    REQUIRE(node.journal->submit_and_wait([](store::Txn& t, audit::AuditLog&) { t.set_state("lazy-test", "urgent", "v"); }));
    CHECK(committed("shared"));
    CHECK(committed("urgent"));

    // With an ingest: likewise.
    lazy_set("with-ingest");
    node.emit("hook", [] {
        std::vector<std::unique_ptr<sb_record>> batch;
        batch.push_back(make({{"a", "x", "content.free_text"}}));
        return batch;
    }());
    CHECK(committed("with-ingest"));

    // Stopping commits what waits.
    lazy_set("at-stop");
    node.journal->stop();
    CHECK(committed("at-stop"));
}

TEST_CASE("pipeline: a worker busy with one group takes the next as offered; past its bound it reads "
          "entries back from the store, in order, once each") {
    // The destination fails its first delivery: the worker holds the first
    // batch through a backoff while the next are committed and offered.
    const char* const toml = R"(
[sources.hook]
plugin = "memory-source"
[sources.hook.config]
count = 0
[destinations.d]
plugin = "memory-sink"
backoff = "5s"
[destinations.d.config]
output = "d.jsonl"
fail_first = 1
mode = "ok"
[[route]]
category = "unclassified"
destination = "d"
purpose = "review"
profile = "p"
[profiles.p.fields]
"a" = "keep"
)";
    // Two batches fit in memory (kMaxQueued); a third does not.
    const int batches = GENERATE(2, 3);
    INFO(batches << " batches");
    Node node(toml);
    constexpr int kPerBatch = 6000;
    static_assert(2 * kPerBatch <= static_cast<int>(pipeline::DeliveryWorker::kMaxQueued) &&
                  3 * kPerBatch > static_cast<int>(pipeline::DeliveryWorker::kMaxQueued));
    // A worker starts behind, until its filler has found the store empty:
    // the first batch waits for that, or (on a busy machine) it could be
    // declined and read back too.
    REQUIRE(node.workers.size() == 1);
    REQUIRE(sbtest::wait_until([&] { return node.workers[0]->wants_copies(); }, 10s));
    int n = 0;
    for (int b = 0; b < batches; ++b) {
        std::vector<std::unique_ptr<sb_record>> batch;
        for (int i = 0; i < kPerBatch; ++i, ++n) batch.push_back(make({{"a", "v" + std::to_string(n), "content.free_text"}}));
        node.emit("hook", std::move(batch));
    }
    node.wait_delivered("d", static_cast<std::uint64_t>(n));
    auto sent = sbtest::sink_records(node.dir.path / "d.jsonl");
    REQUIRE(sent.size() == static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) CHECK(sent[static_cast<std::size_t>(i)]["fields.a"] == "v" + std::to_string(i));
    if (batches == 2)
        CHECK(node.metrics.value("d", "read_back") == 0);
    else
        CHECK(node.metrics.value("d", "read_back") >= kPerBatch);
}

TEST_CASE("pipeline: a worker behind reads ahead of its deliveries, a bounded number of entries, "
          "while it cannot deliver; then delivers the whole backlog in order, once each") {
    // A backlog left in the store by a first run in which "d" never took
    // anything; a second run starts with its first delivery failing, which
    // holds the worker in a backoff of 4 to 8 s (with its jitter).
    TempDir data("sb-read-ahead");
    const std::int64_t start = 1'736'154'000'000;
    const auto config = [](const char* sink) {
        return std::string(R"(
[sources.hook]
plugin = "memory-source"
[sources.hook.config]
count = 0
[destinations.d]
plugin = "memory-sink"
backoff = "8s"
backoff_max = "8s"
max_attempts = 1000
[destinations.d.config]
output = "d.jsonl"
)") + sink + R"(
[[route]]
category = "unclassified"
destination = "d"
purpose = "review"
profile = "p"
[profiles.p.fields]
"a" = "keep"
)";
    };
    constexpr int kRecords = 20000;
    static_assert(kRecords > static_cast<int>(pipeline::DeliveryWorker::kFillAhead + pipeline::DeliveryWorker::kFillBatch));
    {
        sbtest::Node first(config("mode = \"transient\""), start, "sb-read-ahead-1", data.path / "data");
        for (int n = 0; n < kRecords;) {
            std::vector<std::unique_ptr<sb_record>> batch;
            for (int i = 0; i < 4000; ++i, ++n) batch.push_back(make({{"a", "v" + std::to_string(n), "content.free_text"}}));
            first.emit("hook", std::move(batch));
        }
        REQUIRE(first.store->acked("d") == 0);
    }
    sbtest::Node node(config("fail_first = 1"), start, "sb-read-ahead-2", data.path / "data");
    // The filler reads kFillBatch at a time until kFillAhead are queued,
    // though nothing is delivered meanwhile; then it waits.
    constexpr auto ahead = static_cast<std::int64_t>(pipeline::DeliveryWorker::kFillAhead);
    REQUIRE(sbtest::wait_until([&] { return node.metrics.value("d", "read_back") >= ahead; }, 3s));
    std::this_thread::sleep_for(300ms);
    CHECK(node.metrics.value("d", "read_back") == ahead);
    CHECK(node.store->acked("d") == 0);
    CHECK(node.metrics.value("d", "records_out") == 0);
    // After the backoff: everything, in order, once each.
    node.wait_delivered("d", kRecords);
    auto sent = sbtest::sink_records(node.dir.path / "d.jsonl");
    REQUIRE(sent.size() == static_cast<std::size_t>(kRecords));
    for (int i = 0; i < kRecords; ++i) CHECK(sent[static_cast<std::size_t>(i)]["fields.a"] == "v" + std::to_string(i));
    CHECK(node.metrics.value("d", "read_back") == kRecords);
}

TEST_CASE("pipeline: while a destination's worker is behind, its copies are not made at ingest; the "
          "disclosures say what was sent all the same, and the copies made from the store are delivered") {
    // The first delivery fails, holding the worker in a 4-8 s backoff with
    // two batches queued; the third does not fit (the worker is behind from
    // then on) and the fourth comes while it is.
    Node node(R"(
[sources.hook]
plugin = "memory-source"
[sources.hook.config]
count = 0
[destinations.d]
plugin = "memory-sink"
backoff = "8s"
backoff_max = "8s"
max_attempts = 1000
[destinations.d.config]
output = "d.jsonl"
fail_first = 1
[[route]]
category = "unclassified"
destination = "d"
purpose = "review"
profile = "p"
[profiles.p.fields]
"a" = "keep"
"when" = "generalise:month"
"phone" = "mask:4"
"text" = "redact"
"attachments.scan" = "keep"
)");
    const char* paths[] = {"when", "other", "a", "phone", "text"};
    sb_shape* shape = sb::detail::shape_new(paths, nullptr, 5);
    REQUIRE(shape);
    // Four kinds of record, over and over: one whose date cannot be
    // generalised (not sent) and one with an attachment among them.
    auto kind = [&](int n) {
        const int k = n % 4;
        const char* when = k == 1 ? "soon" : "2025-01-06";
        const std::string a = "v" + std::to_string(n);
        const sb_value v[] = {{SB_VALUE_STRING, when, std::strlen(when), 0, 0},
                              {SB_VALUE_STRING, "o", 1, 0, 0},
                              {SB_VALUE_STRING, a.data(), a.size(), 0, 0},
                              {SB_VALUE_STRING, "07700900312", 11, 0, 0},
                              {SB_VALUE_STRING, "call 07700 900312", 17, 0, 0}};
        auto r = std::make_unique<sb_record>();
        REQUIRE(sb::detail::record_set_shape(r.get(), shape, v) == SB_OK);
        REQUIRE(r->data.set_meta("channel", "web_chat") == SB_OK);
        if (k == 2) {
            sb_attachment at{};
            at.struct_size = sizeof at;
            at.name = "scan";
            at.uri = "file:///scan.pdf";
            REQUIRE(r->data.add_attachment(at) == SB_OK);
        }
        return r;
    };
    constexpr int kPerBatch = 6000, kBatches = 4;
    // A worker starts behind, until its filler has found the store empty:
    // the first batch waits for that, or (on a busy machine) its copies
    // could be declined too.
    REQUIRE(node.workers.size() == 1);
    REQUIRE(sbtest::wait_until([&] { return node.workers[0]->wants_copies(); }, 10s));
    static_assert(2 * kPerBatch <= static_cast<int>(pipeline::DeliveryWorker::kMaxQueued) &&
                  3 * kPerBatch > static_cast<int>(pipeline::DeliveryWorker::kMaxQueued) &&
                  2 * kPerBatch >= static_cast<int>(pipeline::DeliveryWorker::kFillAhead));
    int n = 0;
    for (int b = 0; b < kBatches; ++b) {
        std::vector<std::unique_ptr<sb_record>> batch;
        for (int i = 0; i < kPerBatch; ++i) batch.push_back(kind(n++));
        for (sb_status st : node.emit("hook", std::move(batch))) CHECK(st == SB_OK);
        // Only the fourth batch found the worker behind.
        CHECK(node.metrics.value("d", "copies_deferred") == (b == 3 ? kPerBatch : 0));
    }
    sb::detail::shape_free(shape);
    node.wait_delivered("d", static_cast<std::uint64_t>(n));
    CHECK(node.metrics.value("d", "read_back") >= 2 * kPerBatch);

    // Delivered: every record once, in order, each as its kind is minimised.
    auto sent = sbtest::sink_records(node.dir.path / "d.jsonl");
    REQUIRE(sent.size() == static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) {
        auto& r = sent[static_cast<std::size_t>(i)];
        INFO("record " << i);
        CHECK(r["fields.a"] == "v" + std::to_string(i));
        CHECK(r["fields.phone"] == "*******0312");
        CHECK(r["fields.text"] == "call [PHONE]");
        if (i % 4 == 1)
            CHECK(r.count("fields.when") == 0);
        else
            CHECK(r["fields.when"] == "2025-01");
        CHECK(r.count("fields.other") == 0);
    }
    // Audited: the same disclosures whether the copy was made at ingest or not.
    node.journal->flush_audit();
    const std::string full = "sent=a:keep,phone:mask:4,text:redact,when:generalise:month";
    const std::string want[] = {full, "sent=a:keep,phone:mask:4,text:redact", full + ",attachments.scan:keep", full};
    int disclosures = 0;
    for (const auto& r : audit::AuditLog::read_range(node.data() / "audit", 1, UINT64_MAX)) {
        if (r.kind != "disclose") continue;
        const std::size_t at = r.detail.find("sent=");
        REQUIRE(at != std::string::npos);
        INFO("disclosure " << disclosures);
        CHECK(r.detail.substr(at) == want[disclosures % 4]);
        ++disclosures;
    }
    CHECK(disclosures == n);
    CHECK(audit::AuditLog::verify(node.data() / "audit").ok);
}

TEST_CASE("pipeline: a destination that keeps failing holds its backlog on disk while another "
          "keeps flowing; dead letters are listed and retried") {
    Node node(R"(
[sources.src]
plugin = "memory-source"
[sources.src.config]
count = 0
[destinations.down]
plugin = "memory-sink"
backoff = "10ms"
backoff_max = "50ms"
max_attempts = 1000
[destinations.down.config]
mode = "transient"
[destinations.flaky]
plugin = "memory-sink"
backoff = "10ms"
backoff_max = "20ms"
max_attempts = 2
[destinations.flaky.config]
fail_first = 2
output = "flaky.jsonl"
[destinations.up]
plugin = "memory-sink"
[destinations.up.config]
output = "up.jsonl"
[[route]]
category = "unclassified"
destination = "down"
purpose = "p"
profile = "p"
[[route]]
category = "unclassified"
destination = "up"
purpose = "p"
profile = "p"
[[route]]
category = "unclassified"
destination = "flaky"
purpose = "p"
profile = "p"
[profiles.p.fields]
"a" = "keep"
)");
    constexpr int kRecords = 10000;
    for (int b = 0; b < kRecords / 1000; ++b) {
        std::vector<std::unique_ptr<sb_record>> batch;
        for (int i = 0; i < 1000; ++i) batch.push_back(make({{"a", "v" + std::to_string(b * 1000 + i), "x"}}));
        node.emit("src", std::move(batch));
    }
    node.wait_delivered("up", kRecords);
    CHECK(lines(node.dir.path / "up.jsonl").size() == kRecords);
    // The backlog of the destination that is down is in the store.
    CHECK(node.store->acked("down") == 0);
    CHECK(node.store->count_outbox_pending("down") == kRecords);
    CHECK(node.metrics.value("down", "retries") > 0);
    // The flaky one: its first record failed twice (max_attempts = 2) and
    // was dead-lettered; the rest flowed.
    node.wait_delivered("flaky", kRecords);
    auto dead = node.store->dead_letters("flaky");
    REQUIRE(dead.size() == 1);
    CHECK(dead[0].seq == 1);
    CHECK(dead[0].attempts == 2);
    CHECK(dead[0].error.rfind("transient", 0) == 0);
    CHECK(lines(node.dir.path / "flaky.jsonl").size() == kRecords - 1);
    // Retried on request: now it goes through.
    node.store->write([&](store::Txn& t) { REQUIRE(t.request_retry(dead[0].id)); });
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!node.store->dead_letters("flaky").empty() && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(20ms);
    CHECK(node.store->dead_letters("flaky").empty());
    CHECK(lines(node.dir.path / "flaky.jsonl").size() == kRecords);
}

TEST_CASE("pipeline: a destination that reads records as JSON only is handed each copy rendered, the JSON "
          "its tree gives with its id; one that reads fields all the same has each delivery dead-lettered, "
          "saying why") {
    // memory-sink declares SB_CAP_JSON_RECORDS; mode "read-fields" breaks
    // that promise.
    Node node(R"(
[sources.src]
plugin = "memory-source"
[sources.src.config]
count = 0
[destinations.json]
plugin = "memory-sink"
[destinations.json.config]
output = "json.jsonl"
[destinations.liar]
plugin = "memory-sink"
max_attempts = 3
[destinations.liar.config]
mode = "read-fields"
[[route]]
category = "unclassified"
destination = "json"
purpose = "p"
profile = "p"
[[route]]
category = "few"
destination = "json"
purpose = "p"
profile = "p"
[[route]]
category = "few"
destination = "liar"
purpose = "p"
profile = "p"
[[classify.rule]]
category = "few"
field = "k"
equals = "liar"
[profiles.p.fields]
"a" = "keep"
"n.*" = "keep"
)");
    // A worker starts behind, until its filler has found the store empty:
    // a batch that came before would have no copies made for it (each
    // made later from the store, as a tree).
    for (auto& w : node.workers) REQUIRE(sbtest::wait_until([&] { return w->wants_copies(); }, 10s));
    // All go to "json"; the first kLiar also to "liar", whose failures are
    // settled one at a time (order kept), each with its own commit.
    constexpr int kRecords = 1000, kLiar = 60;
    std::vector<std::unique_ptr<sb_record>> batch;
    for (int i = 0; i < kRecords; ++i)
        batch.push_back(make({{"a", "v\"" + std::to_string(i), "x"},
                              {"n.m", "w" + std::to_string(i), "y"},
                              {"k", i < kLiar ? "liar" : "json", "z"},
                              {"secret", "canary-" + std::to_string(i), "z"}}));
    node.emit("src", std::move(batch));
    node.wait_delivered("json", kRecords);

    const auto out = lines(node.dir.path / "json.jsonl");
    REQUIRE(out.size() == kRecords);
    std::set<std::string> ids;
    for (const auto& line : out) {
        // {"seq":…,"record_id":"…",…,"record":<record_json>}
        const auto rid_at = line.find(R"("record_id":")") + 13;
        const std::string rid = line.substr(rid_at, line.find('"', rid_at) - rid_at);
        const auto rec_at = line.find(R"(,"record":)") + 10;
        const std::string json = line.substr(rec_at, line.size() - 1 - rec_at);
        // Read back as a tree and written again: the same bytes.
        sb_record tree;
        sb::detail::JsonError err;
        sb::detail::RecordReadOptions opts;
        opts.envelope = true;
        REQUIRE(sb::detail::read_record_json(json, tree, err, opts));
        CHECK(tree.data.json() == json);
        const char* id = tree.data.meta("id");
        REQUIRE(id != nullptr);
        CHECK(id == rid);
        CHECK(tree.data.leaves().size() == 2); // a and n.m: "secret" is not in the profile
        CHECK(json.find("canary-") == std::string::npos);
        ids.insert(rid);
    }
    CHECK(ids.size() == kRecords);

    // The liar: every delivery failed for good at its first attempt, with
    // the reason.
    REQUIRE(sbtest::wait_until([&] { return node.store->dead_letters("liar").size() == kLiar; }, 60s));
    // A rendered copy has no tree to keep: each dead letter holds the
    // reference its outbox row holds, and a retry makes the copy again
    // from the chunk (a tree, which the plugin may read). Twenty retried.
    constexpr std::size_t kRetried = 20;
    std::size_t asked = 0;
    for (const auto& d : node.store->dead_letters("liar")) {
        CHECK(d.attempts == 1);
        CHECK(d.error.find("declares json-records (SB_CAP_JSON_RECORDS) but read the record's fields") !=
              std::string::npos);
        pipeline::OutboxEntry e;
        pipeline::EntryRef ref;
        std::size_t pos = 0;
        REQUIRE(pipeline::decode_entry(d.payload, pos, e, ref) == pipeline::EntryForm::Reference);
        CHECK_FALSE(ref.fingerprint.empty());
        CHECK(ref.routed_at == 1'736'154'000'000); // the node's clock at ingest
        CHECK(d.payload.find("canary-") == std::string::npos);
        if (asked++ < kRetried) node.store->write([&](store::Txn& t) { REQUIRE(t.request_retry(d.id)); });
    }
    REQUIRE(sbtest::wait_until([&] { return node.store->dead_letters("liar").size() == kLiar - kRetried; }, 60s));
}

namespace {

// Two destinations with one profile: "live" takes deliveries, "down"
// refuses them (transient) so that its entries wait in the outbox.
// `profile` is the [profiles.p] section; `down_mode` the down one's mode.
std::string two_destinations(const std::string& profile, const std::string& down_mode) {
    return R"(
[sources.hook]
plugin = "memory-source"
[sources.hook.config]
count = 0
[destinations.live]
plugin = "memory-sink"
[destinations.live.config]
output = "live.jsonl"
[destinations.down]
plugin = "memory-sink"
backoff = "50ms"
backoff_max = "50ms"
max_attempts = 1000
[destinations.down.config]
output = "down.jsonl"
mode = ")" + down_mode + R"("
[[route]]
category = "unclassified"
destination = "live"
purpose = "review"
profile = "p"
[[route]]
category = "unclassified"
destination = "down"
purpose = "review"
profile = "p"
)" + profile;
}

// Profile p as first configured: b masked, c hashed, the date of birth as an age band.
const char* const kProfileV1 = R"(
[profiles.p]
version = 1
hash_key = "env:SB_TEST_OUTBOX_KEY_A"
[profiles.p.fields]
"a" = "keep"
"b" = "mask:2"
"c" = "hash"
"dob" = "generalise:age_band"
)";

constexpr std::int64_t kDay = 86'400'000;

void node_emit_ok(sbtest::Node& node, std::vector<std::unique_ptr<sb_record>> batch) {
    for (auto s : node.emit("hook", std::move(batch))) REQUIRE(s == SB_OK);
}

// Emits `n` records on `node` (fields a, b, c, dob, and an undeclared canary).
void emit_outbox_records(sbtest::Node& node, int n, const std::string& tag) {
    std::vector<std::unique_ptr<sb_record>> batch;
    for (int i = 0; i < n; ++i)
        batch.push_back(make({{"a", tag + std::to_string(i), "content.free_text"},
                              {"b", "0123456789-" + std::to_string(i), "identifier.reference"},
                              {"c", "QQ12345" + std::to_string(i) + "C", "identifier.nino"},
                              {"dob", "1990-01-15", "identity.dob"},
                              {"canary", "canary-" + tag, "identity.name"}}));
    node_emit_ok(node, std::move(batch));
}

std::map<std::string, sbtest::Leaves> by_id(const std::vector<sbtest::Leaves>& records) {
    std::map<std::string, sbtest::Leaves> out;
    for (const auto& r : records) out.emplace(r.at("id"), r);
    return out;
}

} // namespace

TEST_CASE("pipeline: an outbox entry keeps a reference, and a destination that was down receives after a "
          "restart the copy its profile made when the record was routed, though the profile changed since") {
    ::setenv("SB_TEST_OUTBOX_KEY_A", "outbox-test-key-a", 1);
    TempDir data("sb-outbox-ref");
    constexpr int kOld = 300, kNew = 20;
    const std::int64_t start = 1'736'154'000'000; // 2025-01-06T09:00:00Z: born 1990-01-15, 34
    std::map<std::string, sbtest::Leaves> live;
    {
        sbtest::Node a(two_destinations(kProfileV1, "transient"), start, "sb-outbox-a", data.path / "data");
        emit_outbox_records(a, kOld, "old");
        a.wait_delivered("live", kOld);
        live = by_id(sbtest::sink_records(a.dir.path / "live.jsonl"));
        REQUIRE(live.size() == kOld);
        REQUIRE(sbtest::wait_until([&] { return a.metrics.value("down", "retries") > 0; }, 10s));
        CHECK(a.store->count_outbox_pending("down") == kOld);
        // The copies are not in the store: the record is, once.
        a.journal->flush_audit();
        std::string bytes = slurp_tree(a.data());
        CHECK(bytes.find(live.begin()->second.at("fields.c")) == std::string::npos); // the pseudonym
    }
    // Two weeks later (35 now), with a profile that sends b and the age as they are.
    const char* v2 = R"(
[profiles.p]
version = 2
hash_key = "env:SB_TEST_OUTBOX_KEY_A"
[profiles.p.fields]
"a" = "keep"
"b" = "keep"
"c" = "hash"
"dob" = "keep"
)";
    sbtest::Node b(two_destinations(v2, "ok"), start + 14 * kDay, "sb-outbox-b", data.path / "data");
    emit_outbox_records(b, kNew, "new");
    b.wait_delivered("down", kOld + kNew);
    auto down = sbtest::sink_records(b.dir.path / "down.jsonl");
    REQUIRE(down.size() == kOld + kNew);
    int old_seen = 0, new_seen = 0;
    for (const auto& r : down) {
        INFO(r.at("id"));
        CHECK(r.count("fields.canary") == 0);
        if (r.at("fields.a").rfind("old", 0) == 0) {
            // Made again from the stored record: exactly the copy the live
            // destination received at the time.
            ++old_seen;
            auto it = live.find(r.at("id"));
            REQUIRE(it != live.end());
            CHECK(r == it->second);
            CHECK(r.at("fields.dob") == "25-34");
            CHECK(r.at("fields.b").find("0123456789") == std::string::npos);
        } else {
            ++new_seen;
            CHECK(r.at("fields.dob") == "1990-01-15");
            CHECK(r.at("fields.b").rfind("0123456789-", 0) == 0);
        }
    }
    CHECK(old_seen == kOld);
    CHECK(new_seen == kNew);
    CHECK(b.store->dead_letters("down").empty());
    b.journal->flush_audit();
    CHECK(audit::AuditLog::verify(b.data() / "audit", pipeline::committed_audit_head(*b.store)).ok);
}

TEST_CASE("pipeline: an entry whose earlier profile hashed with a key no longer configured is dead-lettered "
          "with the reason, never sent another way; with the key back, its retry sends the original copy") {
    ::setenv("SB_TEST_OUTBOX_KEY_A", "outbox-test-key-a", 1);
    ::setenv("SB_TEST_OUTBOX_KEY_B", "outbox-test-key-b", 1);
    TempDir data("sb-outbox-key");
    constexpr int kOld = 5;
    const std::int64_t start = 1'736'154'000'000;
    std::map<std::string, sbtest::Leaves> live;
    {
        sbtest::Node a(two_destinations(kProfileV1, "transient"), start, "sb-outbox-a", data.path / "data");
        emit_outbox_records(a, kOld, "old");
        a.wait_delivered("live", kOld);
        live = by_id(sbtest::sink_records(a.dir.path / "live.jsonl"));
    }
    auto with_key = [](const char* env, int version) {
        return "\n[profiles.p]\nversion = " + std::to_string(version) + "\nhash_key = \"env:" + env +
               "\"\n[profiles.p.fields]\n\"a\" = \"keep\"\n\"c\" = \"hash\"\n";
    };
    {
        sbtest::Node b(two_destinations(with_key("SB_TEST_OUTBOX_KEY_B", 2), "ok"), start + kDay, "sb-outbox-b",
                       data.path / "data");
        REQUIRE(sbtest::wait_until([&] { return b.store->dead_letters("down").size() == kOld; }, 10s));
        for (const auto& d : b.store->dead_letters("down")) {
            INFO(d.error);
            CHECK(d.error.find("hash key it had is no longer configured") != std::string::npos);
        }
        CHECK(sbtest::sink_records(b.dir.path / "down.jsonl").empty());
    }
    // The key is configured again (the rules are still the new ones): the
    // kept definition compiles as it was, and a retry sends the original copy.
    sbtest::Node c(two_destinations(with_key("SB_TEST_OUTBOX_KEY_A", 3), "ok"), start + 2 * kDay, "sb-outbox-c",
                   data.path / "data");
    auto dead = c.store->dead_letters("down");
    REQUIRE(dead.size() == kOld);
    c.store->write([&](store::Txn& t) {
        for (const auto& d : dead) REQUIRE(t.request_retry(d.id));
    });
    REQUIRE(sbtest::wait_until([&] { return c.store->dead_letters("down").empty(); }, 10s));
    auto down = sbtest::sink_records(c.dir.path / "down.jsonl");
    REQUIRE(down.size() == kOld);
    for (const auto& r : down) {
        auto it = live.find(r.at("id"));
        REQUIRE(it != live.end());
        CHECK(r == it->second);
    }
}

TEST_CASE("pipeline: destinations draining one backlog together make every copy again from chunks they "
          "share, whatever the cache keeps") {
    TempDir data("sb-outbox-drain");
    constexpr int kDestinations = 4, kBatches = 30, kPerBatch = 100;
    auto config = [&](const char* mode) {
        std::string toml = "[sources.hook]\nplugin = \"memory-source\"\n[sources.hook.config]\ncount = 0\n";
        for (int d = 0; d < kDestinations; ++d) {
            std::string name = "d" + std::to_string(d);
            toml += "[destinations." + name + "]\nplugin = \"memory-sink\"\nbackoff = \"1s\"\nbackoff_max = \"1s\"\n"
                    "max_attempts = 1000\n[destinations." + name + ".config]\noutput = \"" + name +
                    ".jsonl\"\nmode = \"" + mode + "\"\n[[route]]\ncategory = \"unclassified\"\ndestination = \"" +
                    name + "\"\npurpose = \"review\"\nprofile = \"p\"\n";
        }
        return toml + "[profiles.p.fields]\n\"a\" = \"keep\"\n";
    };
    const std::int64_t start = 1'736'154'000'000;
    {
        sbtest::Node a(config("transient"), start, "sb-outbox-a", data.path / "data");
        for (int b = 0; b < kBatches; ++b) {
            std::vector<std::unique_ptr<sb_record>> batch;
            for (int i = 0; i < kPerBatch; ++i) {
                batch.push_back(make({{"a", "v" + std::to_string(b * kPerBatch + i), "x"}}));
                // Collected over the last hour: chunks of a minute's expiry each.
                batch.back()->data.set_meta("occurred_at",
                                            sb::detail::format_time(start - (i % 60) * 60'000 - 1000));
            }
            node_emit_ok(a, std::move(batch));
        }
        for (int d = 0; d < kDestinations; ++d)
            CHECK(a.store->count_outbox_pending("d" + std::to_string(d)) == kBatches * kPerBatch);
    }
    // A cache smaller than one chunk: every worker reads, and drops, chunks
    // the others read at the same time.
    pipeline::Journal::Options options;
    options.chunk_cache_bytes = 1;
    sbtest::Node b(config("ok"), start + 60'000, "sb-outbox-b", data.path / "data", options);
    // And threads making the copies of one destination's entries in step.
    auto rows = b.store->outbox_after("d0", 0, 100000, 100000);
    std::vector<std::thread> threads;
    std::atomic<int> made{0}, wrong{0};
    for (int t = 0; t < 4; ++t)
        threads.emplace_back([&] {
            pipeline::Journal::ChunkCache cache;
            for (const auto& row : rows) {
                std::size_t pos = 0;
                pipeline::EntryContext context; // a row's entries may repeat the one before
                pipeline::EntryRef ref;
                for (std::uint32_t k = 0; k < row.count; ++k) {
                    pipeline::OutboxEntry e;
                    e.chunk = row.chunk;
                    e.index = pipeline::outbox_index(row.indexes, k);
                    e.record_id = pipeline::record_id(row.chunk, e.index);
                    if (pipeline::decode_entry(row.payloads, pos, e, ref, &context) != pipeline::EntryForm::Reference) {
                        ++wrong;
                        break;
                    }
                    b.journal->rebuild(e, ref, cache);
                    const char* id = e.record ? e.record->data.meta("id") : nullptr;
                    if (!id || id != e.record_id || !e.record->data.find("a")) ++wrong;
                    ++made;
                }
            }
        });
    for (auto& t : threads) t.join();
    CHECK(wrong == 0);
    CHECK(made == 4 * kBatches * kPerBatch);
    for (int d = 0; d < kDestinations; ++d) {
        const std::string name = "d" + std::to_string(d);
        b.wait_delivered(name, kBatches * kPerBatch);
        std::set<std::string> values;
        for (const auto& r : sbtest::sink_records(b.dir.path / (name + ".jsonl"))) values.insert(r.at("fields.a"));
        CHECK(values.size() == kBatches * kPerBatch);
        CHECK(b.store->dead_letters(name).empty());
    }
}

TEST_CASE("pipeline: outbox entries that an earlier version stored as copies are still delivered as they are") {
    TempDir data("sb-outbox-old");
    const std::int64_t start = 1'736'154'000'000;
    std::filesystem::create_directories(data.path / "data");
    {
        // What a journal of the previous version held: a chunk with the
        // record, and an outbox row with the minimised copy itself.
        auto st = store::open_sqlite((data.path / "data" / "journal.db").string());
        // The chunk's record differs from the copy: what is delivered is the
        // copy as stored, not one made again.
        auto record = make({{"a", "value-in-the-chunk", "x"}, {"b", "never-sent", "x"}});
        record->data.set_meta_at(sb::detail::meta_index("id"), pipeline::record_id(1, 0));
        record->data.set_meta("occurred_at", "2025-01-06T08:59:00Z");
        pipeline::OutboxEntry e;
        e.purpose = "review";
        e.profile = "p";
        e.record = std::make_shared<sb_record>();
        e.record->data.set_meta_at(sb::detail::meta_index("id"), pipeline::record_id(1, 0));
        sb_value v{SB_VALUE_STRING, "kept-by-the-old-copy", 20, 0, 0};
        REQUIRE(e.record->data.set("a", v, "x") == SB_OK);
        store::OutboxRow row;
        row.destination = "d";
        row.first_seq = 1;
        row.count = 1;
        row.chunk = 1;
        row.expires_at = start + 27 * kDay;
        row.indexes.assign("\0\0\0\0", 4);
        pipeline::encode_entry(e, row.payloads);
        std::string body;
        store::encode(*record, body);
        st->write([&](store::Txn& t) {
            store::ChunkInfo info{t.next_chunk_id(), start - 60'000, start + 27 * kDay, 1};
            REQUIRE(info.id == 1);
            t.put_chunk(info, body);
            t.put_outbox(row);
        });
    }
    sbtest::Node node(kHookToD, start, "sb-outbox-old-node", data.path / "data");
    node.wait_delivered("d", 1);
    auto sent = sbtest::sink_records(node.dir.path / "d.jsonl");
    REQUIRE(sent.size() == 1);
    CHECK(sent[0].at("id") == "R1-0");
    CHECK(sent[0].at("fields.a") == "kept-by-the-old-copy");
    CHECK(sent[0].count("fields.b") == 0);
}
