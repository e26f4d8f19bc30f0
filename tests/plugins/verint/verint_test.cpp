// The verint source through its built .so and the SDK harness (fake clock),
// over a temporary copy of the fixture export tree (SB_FIXTURES/verint/export).
#include <catch2/catch.hpp>

#include <switchboard/testing.hpp>

#include <openssl/evp.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
using sb::testing::Harness;
using sb::testing::TestRecord;
using sb::testing::toml_string;

constexpr std::int64_t kMinute = 60'000, kHour = 60 * kMinute, kDay = 24 * kHour;

const std::string k01 = "202501060912000000000000000001";
const std::string k02 = "202501060944000000000000000002";
const std::string k03 = "202501060958000000000000000003";
const std::string k04 = "202501061003000000000000000004";
const std::string k05 = "202501061017000000000000000005";
const std::string k06 = "202501061030000000000000000006";
const std::string h09 = "2025/01/06/09", h10 = "2025/01/06/10";

std::string module() {
    const char* dir = std::getenv("SB_PLUGIN_DIR");
    if (!dir) FAIL("SB_PLUGIN_DIR is not set (run through meson test)");
    return std::string(dir) + "/sources/verint/verint.so";
}

fs::path fixtures() {
    const char* dir = std::getenv("SB_FIXTURES");
    if (!dir) FAIL("SB_FIXTURES is not set (run through meson test)");
    return fs::path(dir) / "verint" / "export";
}

struct TempDir {
    fs::path path;
    TempDir() {
        char tmpl[] = "/tmp/sb-verint-XXXXXX";
        REQUIRE(::mkdtemp(tmpl));
        path = tmpl;
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
};

std::string read_file(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_file(const fs::path& p, const std::string& content) {
    fs::create_directories(p.parent_path());
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out << content;
    REQUIRE(out.good());
}

void set_mtime(const fs::path& p, std::int64_t ms) {
    timespec ts[2];
    ts[0].tv_sec = ts[1].tv_sec = ms / 1000;
    ts[0].tv_nsec = ts[1].tv_nsec = (ms % 1000) * 1'000'000;
    REQUIRE(::utimensat(AT_FDCWD, p.c_str(), ts, 0) == 0);
}

// A writable copy of the fixture tree; every file's mtime set to `mtime`
// (nullopt: left as copied, i.e. the real now, in the fake clock's future).
fs::path copy_fixtures(const TempDir& tmp, std::optional<std::int64_t> mtime) {
    fs::path dst = tmp.path / "export";
    fs::copy(fixtures(), dst, fs::copy_options::recursive);
    for (auto& e : fs::recursive_directory_iterator(dst)) {
        fs::permissions(e.path(), fs::perms::owner_write, fs::perm_options::add);
        if (mtime && e.is_regular_file()) set_mtime(e.path(), *mtime);
    }
    return dst;
}

fs::path item(const fs::path& root, const std::string& hour, const std::string& name) {
    return root / hour / name;
}

std::string sha256_hex(const std::string& bytes) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    REQUIRE(EVP_Digest(bytes.data(), bytes.size(), md, &len, EVP_sha256(), nullptr) == 1);
    std::string out;
    static const char* hex = "0123456789abcdef";
    for (unsigned int k = 0; k < len; ++k) {
        out += hex[md[k] >> 4];
        out += hex[md[k] & 15];
    }
    return out;
}

const TestRecord* by_id(Harness& h, const std::string& external_id) {
    for (const auto& r : h.emitted())
        if (r.meta(SB_META_EXTERNAL_ID) == external_id) return &r;
    return nullptr;
}

const sb::testing::Quarantined* quarantined(Harness& h, const std::string& ref) {
    for (const auto& q : h.quarantined())
        if (q.ref == ref) return &q;
    return nullptr;
}

// Polls until SB_IDLE (bounded).
void drain(Harness& h) {
    for (int i = 0; i < 50; ++i) {
        sb::Status s = h.poll();
        if (s == SB_IDLE) return;
        REQUIRE(s == SB_OK);
    }
    FAIL("poll never went idle");
}

void configure(Harness& h, const fs::path& root) {
    h.config("export_dir", toml_string(root.string()));
}

// Files older than settle and orphan_grace, as an export left overnight.
const std::int64_t kOld = Harness::kEpochMs - 2 * kHour;

} // namespace

TEST_CASE("verint: every fixture gives its record or its quarantine, mapped to records.md") {
    TempDir tmp;
    fs::path root = copy_fixtures(tmp, kOld);
    Harness h(module());
    configure(h, root);
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    CHECK(h.poll() == SB_OK);
    CHECK(h.poll() == SB_IDLE);

    REQUIRE(h.emitted().size() == 4);
    REQUIRE(h.quarantined().size() == 2);

    // 0001: inbound, with audio by reference.
    const TestRecord* r1 = by_id(h, k01);
    REQUIRE(r1);
    CHECK(r1->meta(SB_META_CHANNEL) == "phone");
    CHECK(r1->meta(SB_META_OCCURRED_AT) == "2025-01-06T09:12:44Z");
    CHECK(r1->meta(SB_META_SUBJECT_REF) == "9100000000000000417");
    CHECK(r1->value("call.ani") == "01514960417");
    CHECK(r1->category("call.ani") == "contact.phone");
    CHECK(r1->value("call.dnis") == "01514960100");
    CHECK(r1->category("call.dnis") == "operational.call");
    CHECK(r1->value("call.direction") == "inbound");
    CHECK(r1->value("call.duration_s") == "318");
    CHECK(r1->value("call.started_at") == "2025-01-06T09:12:44Z");
    CHECK(r1->value("call.ended_at") == "2025-01-06T09:18:02.000Z");
    CHECK(r1->value("call.status") == "success");
    CHECK(r1->category("call.started_at") == "operational.call");
    CHECK(r1->value("agent.id") == "E10442");
    CHECK(r1->category("agent.id") == "staff.id");
    CHECK(r1->value("agent.name") == "Bethan Q. Adeyemi");
    CHECK(r1->category("agent.name") == "staff.name");
    CHECK(r1->value("hints.queue") == "Council Tax"); // customData.QueueName first
    CHECK(r1->category("hints.queue") == "classification.hint");
    CHECK(r1->value("hints.organisation") == "CC-REVS");
    CHECK(r1->value("hints.ivr_option") == "2-1");
    CHECK(r1->value("vendor.media_id") == k01);
    CHECK(r1->category("vendor.media_id") == "vendor.id");
    CHECK(r1->value("vendor.contact_id") == "9100000000000000417");
    CHECK(r1->value("vendor.session_id") == "918273645500001");
    CHECK_FALSE(r1->has("vendor.transaction_id")); // the same as mediaId
    CHECK_FALSE(r1->has("defects[0]"));
    REQUIRE(r1->attachments().size() == 1);
    const auto& a = r1->attachments()[0];
    fs::path wav = item(root, h09, k01 + ".wav");
    CHECK(a.name == "recording");
    CHECK(a.uri == "file://" + wav.string());
    CHECK(a.media_type == "audio/wav");
    CHECK(a.size == 2044);
    CHECK(a.sha256 == sha256_hex(read_file(wav)));
    CHECK(a.category == "media.voice");
    CHECK(fs::exists(wav)); // by reference: nothing moved or copied

    // 0002: PCI pause and resume tags; queue from the organisation.
    const TestRecord* r2 = by_id(h, k02);
    REQUIRE(r2);
    CHECK(r2->value("call.pci[0].event") == "pause");
    CHECK(r2->value("call.pci[0].offset_s") == "211.4");
    CHECK(r2->value("call.pci[0].source") == "DPA");
    CHECK(r2->value("call.pci[1].event") == "resume");
    CHECK(r2->value("call.pci[1].offset_s") == "274.9");
    CHECK(r2->category("call.pci[0].event") == "operational.pci");
    CHECK(r2->category("call.pci[1].offset_s") == "operational.pci");
    CHECK_FALSE(r2->has("call.pci[2].event"));
    CHECK(r2->value("hints.queue") == "CC-REVS");
    CHECK(r2->value("agent.name") == "Tomasz Żuraw");
    CHECK(r2->attachments().size() == 1);

    // 0003: transcript only, no audio; "" values left out.
    const TestRecord* r3 = by_id(h, k03);
    REQUIRE(r3);
    CHECK(r3->attachments().empty());
    CHECK(r3->value("call.status") == "transcript only");
    CHECK(r3->value("call.direction") == "unknown");
    CHECK(r3->value("call.duration_s") == "31"); // length -1: from the local times
    CHECK(r3->value("call.dnis") == "01514960100");
    for (const char* absent : {"call.ani", "agent.id", "agent.name", "hints.queue",
                               "hints.organisation", "defects[0]"})
        CHECK_FALSE(r3->has(absent));

    // 0004: outbound: the dialled number is the citizen's.
    const TestRecord* r4 = by_id(h, k04);
    REQUIRE(r4);
    CHECK(r4->value("call.direction") == "outbound");
    CHECK(r4->value("call.dnis") == "07700900555");
    CHECK(r4->category("call.dnis") == "contact.phone");
    CHECK(r4->category("call.ani") == "contact.phone");
    CHECK(r4->value("hints.queue") == "OSS-CENTRAL");
    CHECK(r4->value("call.duration_s") == "95");

    // Never an empty value, never a field without a category.
    for (const auto& r : h.emitted())
        for (const auto& f : r.fields()) {
            INFO(f.path);
            CHECK(f.category != "unknown");
            CHECK(f.text() != "");
        }

    // 0005: truncated JSON, quarantined whole; 0006: orphan audio, a manifest.
    const auto* q5 = quarantined(h, h10 + "/" + k05 + ".json");
    REQUIRE(q5);
    CHECK(q5->bytes == read_file(item(root, h10, k05 + ".json")));
    CHECK(q5->reason.find("malformed sidecar JSON") != std::string::npos);
    CHECK(q5->reason.find("at byte") != std::string::npos);
    CHECK(fs::exists(item(root, h10, k05 + ".wav"))); // left for the vendor side
    const auto* q6 = quarantined(h, h10 + "/" + k06 + ".wav");
    REQUIRE(q6);
    CHECK(q6->reason.find("orphan audio") != std::string::npos);
    CHECK(q6->bytes.find(sha256_hex(read_file(item(root, h10, k06 + ".wav")))) != std::string::npos);
    CHECK(q6->bytes.find("\"size\":2044") != std::string::npos);

    // No payload value reaches the logs.
    for (const char* value : {"01514960417", "07700900312", "07700900555", "01514960100",
                              "Bethan", "Żuraw", "Rourke", "Council Tax", "E10442", "2-1",
                              "9100000000000000417", "918273645500001"}) {
        INFO(value);
        CHECK_FALSE(h.logged(value));
    }
    CHECK(h.counter("records_emitted") == 4);
    CHECK(h.counter("orphan_audio") == 1);
    CHECK(h.counter("json_malformed") == 1);

    // The state: one key per hour, listed in "open".
    CHECK(h.state().at("open") == h09 + "\n" + h10 + "\n");
    CHECK(h.state().at("hour:" + h09) == k01 + " E\n" + k02 + " E\n" + k03 + " E\n");
    CHECK(h.state().at("hour:" + h10) == k04 + " E\n" + k05 + " Q size=162\n" + k06 + " O\n");
}

TEST_CASE("verint: the descriptor declares its categories, capabilities and config") {
    Harness h(module());
    const auto& d = h.descriptor();
    CHECK(std::string(d.name) == "verint");
    CHECK(d.kind == SB_KIND_SOURCE);
    CHECK((d.capabilities & SB_CAP_POLL));
    CHECK((d.capabilities & SB_CAP_ERASE));
    CHECK((d.capabilities & SB_CAP_TIMERS));
    CHECK((d.capabilities & SB_CAP_ATTACHMENTS));
    std::vector<std::string> cats;
    for (auto c = d.data_categories; *c; ++c) cats.emplace_back(*c);
    for (const char* want : {"contact.phone", "staff.id", "staff.name", "classification.hint",
                             "operational.call", "operational.pci", "content.free_text", "vendor.id",
                             "operational.defect", "media.voice"})
        CHECK(std::find(cats.begin(), cats.end(), want) != cats.end());
    // export_dir is required; queue_from must be field paths.
    CHECK_THROWS_WITH(h.create(), Catch::Contains("export_dir"));
    TempDir tmp;
    configure(h, tmp.path);
    h.config("queue_from", "[\"metadata.customData.QueueName\", \"not a path!\"]");
    CHECK(h.create() == SB_ERR_INVALID);
    CHECK(h.last_error().find("queue_from") != std::string::npos);
}

TEST_CASE("verint: files are taken only once settled; future mtimes settle by observation") {
    TempDir tmp;
    // As copied: mtimes are the real now, far in the fake clock's future.
    fs::path root = copy_fixtures(tmp, std::nullopt);
    Harness h(module());
    configure(h, root);
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    CHECK(h.poll() == SB_IDLE);
    CHECK(h.emitted().empty());
    CHECK(h.quarantined().empty());
    h.advance(20'000);
    // 0004's audio is still being written.
    {
        std::ofstream out(item(root, h10, k04 + ".wav"), std::ios::binary | std::ios::app);
        out << std::string(100, '\x80');
    }
    CHECK(h.poll() == SB_IDLE);
    h.advance(11'000); // 31 s after the first sight
    CHECK(h.poll() == SB_OK);
    CHECK(h.emitted().size() == 3); // 0001..0003; 0004 changed 11 s ago
    CHECK(h.quarantined().size() == 1); // 0005; 0006 waits for orphan_grace
    CHECK_FALSE(by_id(h, k04));
    h.advance(20'000);
    CHECK(h.poll() == SB_OK);
    REQUIRE(by_id(h, k04));
    CHECK(by_id(h, k04)->attachments().at(0).size == 2144);
    h.advance(kHour);
    CHECK(h.poll() == SB_OK);
    CHECK(quarantined(h, h10 + "/" + k06 + ".wav"));
    CHECK(h.poll() == SB_IDLE);
}

TEST_CASE("verint: orphan audio waits for orphan_grace; a late sidecar is still taken; a sidecar "
          "without its audio is emitted after the grace, with a defect") {
    TempDir tmp;
    fs::path root = copy_fixtures(tmp, kOld);
    set_mtime(item(root, h10, k06 + ".wav"), Harness::kEpochMs); // just written
    Harness h(module());
    configure(h, root);
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    drain(h);
    CHECK(h.emitted().size() == 4);
    CHECK(h.quarantined().size() == 1);
    h.advance(59 * kMinute);
    drain(h);
    CHECK(h.quarantined().size() == 1);
    h.advance(2 * kMinute);
    drain(h);
    REQUIRE(h.quarantined().size() == 2);
    CHECK(quarantined(h, h10 + "/" + k06 + ".wav"));

    // The sidecar turns up late: the pair is taken after all.
    std::string json = read_file(item(root, h10, k04 + ".json"));
    for (std::size_t at; (at = json.find(k04)) != std::string::npos;) json.replace(at, k04.size(), k06);
    write_file(item(root, h10, k06 + ".json"), json);
    set_mtime(item(root, h10, k06 + ".json"), kOld);
    drain(h);
    const TestRecord* r6 = by_id(h, k06);
    REQUIRE(r6);
    CHECK(r6->attachments().size() == 1);

    // A sidecar whose audio never comes.
    const std::string k07 = "202501061040000000000000000007";
    json.clear();
    json = read_file(item(root, h10, k04 + ".json"));
    for (std::size_t at; (at = json.find(k04)) != std::string::npos;) json.replace(at, k04.size(), k07);
    write_file(item(root, h10, k07 + ".json"), json);
    set_mtime(item(root, h10, k07 + ".json"), h.now_ms());
    h.advance(kMinute);
    drain(h);
    CHECK_FALSE(by_id(h, k07));
    h.advance(kHour);
    drain(h);
    const TestRecord* r7 = by_id(h, k07);
    REQUIRE(r7);
    CHECK(r7->attachments().empty());
    CHECK(r7->value("defects[0]") == "recording missing from the export");
    CHECK(r7->category("defects[0]") == "operational.defect");
    CHECK(h.counter("audio_missing") == 1);
}

TEST_CASE("verint: a restart takes nothing twice; closed hours are never listed again") {
    TempDir tmp;
    fs::path root = copy_fixtures(tmp, kOld);
    Harness h(module());
    configure(h, root);
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    drain(h);
    REQUIRE(h.emitted().size() == 4);
    REQUIRE(h.quarantined().size() == 2);

    h.destroy();
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    CHECK(h.poll() == SB_IDLE);
    CHECK(h.emitted().size() == 4);
    CHECK(h.quarantined().size() == 2);
    CHECK(h.counter("records_duplicate") == 0); // not even offered again

    // Two days after the hours ended, they close: the cursor moves and the
    // hour keys keep only what Switchboard holds (for erase).
    CHECK_FALSE(h.state().count("cursor"));
    h.advance(2 * kDay + 2 * kHour);
    CHECK(h.poll() == SB_IDLE);
    CHECK(h.state().at("cursor") == "1 " + h10);
    CHECK(h.state().at("hour:" + h10) == k04 + " E\n");
    CHECK(h.state().at("hour:" + h09) == k01 + " E\n" + k02 + " E\n" + k03 + " E\n");

    // A late file in a closed hour is not read; a new hour after it is.
    const std::string k08 = "202501061105000000000000000008";
    std::string json = read_file(item(root, h10, k04 + ".json"));
    for (std::size_t at; (at = json.find(k04)) != std::string::npos;) json.replace(at, k04.size(), k08);
    write_file(item(root, h10, k08 + ".json"), json);
    set_mtime(item(root, h10, k08 + ".json"), kOld);
    fs::copy_file(item(root, h10, k04 + ".wav"), item(root, h10, k08 + ".wav"));
    set_mtime(item(root, h10, k08 + ".wav"), kOld);
    CHECK(h.poll() == SB_IDLE);
    fs::create_directories(root / "2025/01/06/11");
    fs::rename(item(root, h10, k08 + ".json"), item(root, "2025/01/06/11", k08 + ".json"));
    fs::rename(item(root, h10, k08 + ".wav"), item(root, "2025/01/06/11", k08 + ".wav"));
    CHECK(h.poll() == SB_OK);
    CHECK(by_id(h, k08));
    h.advance(2 * kHour);
    CHECK(h.poll() == SB_IDLE);
    CHECK(h.state().at("cursor") == "1 2025/01/06/11");

    h.destroy();
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    CHECK(h.logged("hours up to 2025/01/06/11 closed"));
    CHECK(h.poll() == SB_IDLE);
    CHECK(h.emitted().size() == 5);
}

TEST_CASE("verint: erase deletes the exported pair and its state line; SB_OK when already gone") {
    TempDir tmp;
    fs::path root = copy_fixtures(tmp, kOld);
    Harness h(module());
    configure(h, root);
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    drain(h);
    const TestRecord r1 = *by_id(h, k01);
    write_file(item(root, h09, k01 + "_screen_1.scn"), "screen");

    CHECK(h.erase(r1) == SB_OK);
    for (const char* ext : {".json", ".wav", "_screen_1.scn"}) CHECK_FALSE(fs::exists(item(root, h09, k01 + ext)));
    CHECK(fs::exists(item(root, h09, k02 + ".json")));
    CHECK(h.counter("exported_files_deleted") == 3);
    CHECK(h.logged("deleted by the council's Verint retention rule"));
    // The hour is still open: a tombstone, so that nothing is taken again.
    CHECK(h.state().at("hour:" + h09).find(k01 + " X\n") != std::string::npos);
    CHECK(h.erase(r1) == SB_OK); // already gone
    CHECK(h.poll() == SB_IDLE);

    // As the daemon asks: the envelope's external id only.
    CHECK(h.erase("R9-1", k02) == SB_OK);
    CHECK_FALSE(fs::exists(item(root, h09, k02 + ".json")));
    CHECK_FALSE(fs::exists(item(root, h09, k02 + ".wav")));

    // Once the hour is closed, an erase removes the line; the key goes with
    // the last one.
    h.advance(3 * kDay);
    CHECK(h.poll() == SB_IDLE);
    CHECK(h.state().at("hour:" + h09) == k03 + " E\n");
    CHECK(h.erase(*by_id(h, k03)) == SB_OK);
    CHECK_FALSE(h.state().count("hour:" + h09));
    CHECK_FALSE(fs::exists(root / h09)); // closed and empty: removed
    CHECK(fs::exists(root / "2025/01/06"));
    CHECK(h.state().at("open") == h10 + "\n");
    CHECK(h.erase(*by_id(h, k04)) == SB_OK);
    CHECK_FALSE(h.state().count("hour:" + h10));
    CHECK_FALSE(h.state().count("open"));
    CHECK(h.counter("erase_vendor_retention_rule") == 5);
    // What is left: the quarantined items, for the vendor's purge.
    CHECK(fs::exists(item(root, h10, k05 + ".wav")));
    CHECK(fs::exists(item(root, h10, k06 + ".wav")));
    for (const char* value : {"01514960417", "Bethan"}) CHECK_FALSE(h.logged(value));
}

TEST_CASE("verint: delete_exported = false leaves the export files to the vendor") {
    TempDir tmp;
    fs::path root = copy_fixtures(tmp, kOld);
    Harness h(module());
    configure(h, root);
    h.config("delete_exported", "false");
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    drain(h);
    CHECK(h.erase(*by_id(h, k01)) == SB_OK);
    CHECK(fs::exists(item(root, h09, k01 + ".json")));
    CHECK(fs::exists(item(root, h09, k01 + ".wav")));
    CHECK(h.logged("delete_exported is off"));
    CHECK(h.poll() == SB_IDLE); // not taken again
}

TEST_CASE("verint: copy_audio references a copy in the data directory; erase deletes it") {
    TempDir tmp;
    fs::path root = copy_fixtures(tmp, kOld);
    Harness h(module());
    configure(h, root);
    h.config("copy_audio", "true");
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    drain(h);
    const TestRecord r1 = *by_id(h, k01);
    const auto& a = r1.attachments().at(0);
    fs::path copy = fs::absolute(h.data_dir()).lexically_normal() / "audio" / (k01 + ".wav");
    CHECK(a.uri == "file://" + copy.string());
    REQUIRE(fs::exists(copy));
    CHECK(a.sha256 == sha256_hex(read_file(copy)));
    CHECK(read_file(copy) == read_file(item(root, h09, k01 + ".wav")));
    CHECK(h.counter("audio_copied") == 3);
    CHECK(h.state().at("hour:" + h09).find(k01 + " C\n") != std::string::npos);
    CHECK(h.erase(r1) == SB_OK);
    CHECK_FALSE(fs::exists(copy));
    CHECK_FALSE(fs::exists(item(root, h09, k01 + ".wav")));
    CHECK(h.counter("copies_deleted") == 1);
}

TEST_CASE("verint: an oversized sidecar is quarantined as a bounded prefix") {
    TempDir tmp;
    fs::path root = tmp.path / "export";
    const std::string big = "202501061100000000000000000009";
    std::string json = "{\"mediaId\":\"" + big + "\",\"pad\":\"" + std::string(2 << 20, 'x') + "\"}";
    write_file(item(root, "2025/01/06/11", big + ".json"), json);
    write_file(item(root, "2025/01/06/11", big + ".wav"), "RIFF");
    for (const char* f : {".json", ".wav"}) set_mtime(item(root, "2025/01/06/11", big + f), kOld);
    Harness h(module());
    configure(h, root);
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    drain(h);
    CHECK(h.emitted().empty());
    const auto* q = quarantined(h, "2025/01/06/11/" + big + ".json");
    REQUIRE(q);
    CHECK(q->bytes.size() == 64 * 1024);
    CHECK(q->bytes == json.substr(0, 64 * 1024));
    CHECK(q->reason.find("larger than max_json (" + std::to_string(json.size()) + " bytes") !=
          std::string::npos);
    CHECK(h.counter("json_oversized") == 1);

    // A small max_json: the fixture sidecars become oversized, cut at max_json.
    TempDir tmp2;
    fs::path root2 = copy_fixtures(tmp2, kOld);
    Harness h2(module());
    configure(h2, root2);
    h2.config("max_json", "\"256\"");
    REQUIRE(h2.create() == SB_OK);
    REQUIRE(h2.start() == SB_OK);
    drain(h2);
    CHECK(h2.emitted().empty());
    const auto* q1 = quarantined(h2, h09 + "/" + k01 + ".json");
    REQUIRE(q1);
    CHECK(q1->bytes.size() == 256);
}

TEST_CASE("verint: a transcript export becomes content.text; a broken one is quarantined") {
    TempDir tmp;
    fs::path root = copy_fixtures(tmp, kOld);
    write_file(item(root, h09, k03 + "_text.json"),
               R"({"mediaId":")" + k03 + R"(","transcript":[{"speaker":"agent","text":"Council, how can I help?"},)"
               R"({"speaker":"customer","text":"My bin was not collected."}]})");
    write_file(item(root, h09, k01 + "_text.json"), "{\"transcript\":[{\"text\":\"cut");
    for (const auto& id : {k01, k03}) set_mtime(item(root, h09, id + "_text.json"), kOld);
    Harness h(module());
    configure(h, root);
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    drain(h);
    const TestRecord* r3 = by_id(h, k03);
    REQUIRE(r3);
    CHECK(r3->value("content.text") == "Council, how can I help?\nMy bin was not collected.");
    CHECK(r3->category("content.text") == "content.free_text");
    const TestRecord* r1 = by_id(h, k01);
    REQUIRE(r1);
    CHECK_FALSE(r1->has("content.text"));
    CHECK(r1->value("defects[0]") == "transcript export unreadable (quarantined)");
    CHECK(quarantined(h, h09 + "/" + k01 + "_text.json"));
    CHECK_FALSE(h.logged("bin was not"));
}

TEST_CASE("verint: stale exports older than vendor_retention are reported, ids only") {
    TempDir tmp;
    fs::path root = copy_fixtures(tmp, kOld);
    Harness h(module());
    configure(h, root);
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    drain(h);
    h.advance(2 * kMinute); // the first check, a minute after start
    CHECK(h.gauges().at("stale_exports") == 0);
    h.advance(29 * kDay);   // daily checks; the last one 29 days on
    CHECK(h.gauges().at("stale_exports") == 6);
    CHECK(h.logged("stale exports: 6 interaction(s) older than vendor_retention still in export_dir; "
                   "oldest " + k01 + " (hour " + h09 + ")"));
    // Once erased (exported files deleted), they are no longer stale.
    for (const auto& id : {k01, k02, k03, k04}) CHECK(h.erase("R-x", id) == SB_OK);
    h.advance(kDay);
    CHECK(h.gauges().at("stale_exports") == 2); // the quarantined 0005 and 0006
}

TEST_CASE("verint: a journal that does not commit leaves everything to be taken again") {
    TempDir tmp;
    fs::path root = copy_fixtures(tmp, kOld);
    Harness h(module());
    configure(h, root);
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    h.journal_available(false);
    CHECK(h.poll() == SB_ERR_UNAVAILABLE);
    CHECK(h.emitted().empty());
    CHECK_FALSE(h.state().count("hour:" + h09));
    h.journal_available(true);
    drain(h);
    CHECK(h.emitted().size() == 4);
    CHECK(h.counter("emit_unavailable") == 1);
}

TEST_CASE("verint: batch bounds the work of one poll") {
    TempDir tmp;
    fs::path root = copy_fixtures(tmp, kOld);
    Harness h(module());
    configure(h, root);
    h.config("batch", "1");
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    for (int i = 1; i <= 6; ++i) {
        CHECK(h.poll() == SB_OK);
        CHECK(h.emitted().size() + h.quarantined().size() == static_cast<std::size_t>(i));
    }
    CHECK(h.poll() == SB_IDLE);
}

TEST_CASE("verint: hour directories older than max_age are not read") {
    TempDir tmp;
    fs::path root = copy_fixtures(tmp, kOld);
    Harness h(module());
    configure(h, root);
    h.config("max_age", "\"2h\"");
    h.advance(5 * kHour); // both hours ended more than 2 h ago
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    CHECK(h.poll() == SB_IDLE);
    CHECK(h.emitted().empty());
    CHECK(h.quarantined().empty());
    CHECK(h.counter("hours_skipped_old") == 2);
}

TEST_CASE("verint: format = vfc (MODELLED) takes VFC metadata XML beside its audio; broken XML is "
          "quarantined") {
    TempDir tmp;
    const fs::path vfc = fs::path(std::getenv("SB_FIXTURES")) / "verint" / "vfc";
    const std::string a01 = "4f1c2a00-0000-4000-8000-000000000a01";
    const std::string a02 = "4f1c2a00-0000-4000-8000-000000000a02";
    const std::string a03 = "4f1c2a00-0000-4000-8000-000000000a03";
    const std::string a04 = "4f1c2a00-0000-4000-8000-000000000a04";
    const std::string hour = "2025/01/07/14";
    fs::path root = tmp.path / "export";
    write_file(item(root, hour, a01 + ".xml"), read_file(vfc / (a01 + ".xml")));
    write_file(item(root, hour, a01 + ".wav"), read_file(fixtures() / h09 / (k01 + ".wav")));
    write_file(item(root, hour, a02 + ".xml"), read_file(vfc / (a02 + ".xml")));
    // Entities, CDATA, a comment; no media file (no audio expected).
    write_file(item(root, hour, a03 + ".xml"),
               "<?xml version=\"1.0\"?>\n<!-- test -->\n<conversation version=\"2\">\n  <id>" + a03 +
                   "</id>\n  <user_name>Anne &amp; Co &#x263A;</user_name>\n"
                   "  <destination_name><![CDATA[Housing <Repairs>]]></destination_name>\n"
                   "  <source_caller_id>anonymous</source_caller_id><direction>out</direction>\n"
                   "  <destination_caller_id>07700900777</destination_caller_id>\n"
                   "  <start_time>2025-01-07 14:30:00.000</start_time><end_time/>\n</conversation>\n");
    write_file(item(root, hour, a04 + ".xml"),
               "<!DOCTYPE x [<!ENTITY e \"boom\">]><conversation><id>&e;</id></conversation>");
    for (auto& e : fs::recursive_directory_iterator(root))
        if (e.is_regular_file()) set_mtime(e.path(), kOld);
    Harness h(module());
    configure(h, root);
    h.config("format", "\"vfc\"");
    REQUIRE(h.create() == SB_OK);
    REQUIRE(h.start() == SB_OK);
    drain(h);
    REQUIRE(h.emitted().size() == 2);
    REQUIRE(h.quarantined().size() == 2);

    const TestRecord* r = by_id(h, a01);
    REQUIRE(r);
    CHECK(r->meta(SB_META_OCCURRED_AT) == "2025-01-07T14:02:11.480Z");
    CHECK(r->meta(SB_META_SUBJECT_REF) == "b7e3000000000000000000000000a001");
    CHECK(r->value("call.ani") == "+447700900246");
    CHECK(r->category("call.ani") == "contact.phone");
    CHECK(r->value("call.dnis") == "+441514960100");
    CHECK(r->category("call.dnis") == "operational.call");
    CHECK(r->value("call.direction") == "inbound");
    CHECK(r->value("call.duration_s") == "466");
    CHECK(r->value("call.ended_at") == "2025-01-07T14:09:57.020Z");
    CHECK(r->value("call.modality") == "voice");
    CHECK(r->value("agent.name") == "Núria Fernández-O'Hara");
    CHECK(r->value("hints.queue") == "Contact Centre - Benefits Queue");
    CHECK(r->value("vendor.call_id") == "b7e3000000000000000000000000a001");
    CHECK_FALSE(r->has("defects[0]"));
    REQUIRE(r->attachments().size() == 1);
    CHECK(r->attachments()[0].media_type == "audio/wav");
    CHECK(r->attachments()[0].uri == "file://" + item(root, hour, a01 + ".wav").string());

    const TestRecord* r3 = by_id(h, a03);
    REQUIRE(r3);
    CHECK(r3->value("agent.name") == "Anne & Co \u263A");
    CHECK(r3->value("hints.queue") == "Housing <Repairs>");
    CHECK_FALSE(r3->has("call.ani"));
    CHECK(r3->value("call.ani_withheld") == "true");
    CHECK(r3->value("call.direction") == "outbound");
    CHECK(r3->category("call.dnis") == "contact.phone");
    CHECK_FALSE(r3->has("call.ended_at"));
    CHECK(r3->attachments().empty());

    const auto* q2 = quarantined(h, hour + "/" + a02 + ".xml");
    REQUIRE(q2);
    CHECK(q2->bytes == read_file(vfc / (a02 + ".xml")));
    CHECK(q2->reason.find("malformed sidecar XML (mismatched end tag at byte") != std::string::npos);
    const auto* q4 = quarantined(h, hour + "/" + a04 + ".xml");
    REQUIRE(q4);
    CHECK(q4->reason.find("DOCTYPE") != std::string::npos);
    for (const char* value : {"+447700900246", "Núria", "Benefits Queue", "07700900777", "boom"})
        CHECK_FALSE(h.logged(value));

    CHECK(h.erase(*r) == SB_OK);
    CHECK_FALSE(fs::exists(item(root, hour, a01 + ".xml")));
    CHECK_FALSE(fs::exists(item(root, hour, a01 + ".wav")));
}
