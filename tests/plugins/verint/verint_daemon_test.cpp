// The verint source end to end: the real daemon (`switchboard run`) as a
// subprocess watching a real export directory (a copy of the fixture tree),
// a memory-sink destination taking everything, the audit trail for the
// quarantine, and a restart that must emit nothing twice.
#include "process.hpp"

#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <catch2/catch.hpp>

#include <openssl/evp.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using sbtest::Process;
using sbtest::TempDir;
namespace fs = std::filesystem;

namespace {

using sbtest::wait_until;

const std::string k01 = "202501060912000000000000000001";
const std::string k02 = "202501060944000000000000000002";
const std::string k03 = "202501060958000000000000000003";
const std::string k04 = "202501061003000000000000000004";
const std::string k05 = "202501061017000000000000000005";
const std::string k06 = "202501061030000000000000000006";

std::string read_file(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::vector<std::string> read_lines(const fs::path& p) {
    std::vector<std::string> out;
    std::ifstream in(p);
    for (std::string l; std::getline(in, l);)
        if (!l.empty()) out.push_back(l);
    return out;
}

std::string sha256_hex(const std::string& bytes) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_Digest(bytes.data(), bytes.size(), md, &len, EVP_sha256(), nullptr);
    std::string out;
    static const char* hex = "0123456789abcdef";
    for (unsigned int k = 0; k < len; ++k) {
        out += hex[md[k] >> 4];
        out += hex[md[k] & 15];
    }
    return out;
}

// Audit lines of kind quarantine for the instance "calls".
std::vector<std::string> quarantine_entries(const fs::path& data) {
    std::vector<std::string> out;
    std::error_code ec;
    for (auto it = fs::directory_iterator(data / "audit", ec); !ec && it != fs::directory_iterator(); ++it)
        for (const auto& l : read_lines(it->path()))
            if (l.find("quarantine") != std::string::npos && l.find("instance=calls") != std::string::npos)
                out.push_back(l);
    return out;
}

// The records the sink received, by external id.
std::map<std::string, Poco::JSON::Object::Ptr> delivered(const fs::path& sink) {
    std::map<std::string, Poco::JSON::Object::Ptr> out;
    for (const auto& l : read_lines(sink)) {
        Poco::JSON::Parser parser;
        auto line = parser.parse(l).extract<Poco::JSON::Object::Ptr>();
        auto rec = line->getObject("record");
        // external_id never leaves the core: find the record by vendor.media_id.
        auto fields = rec->getObject("fields");
        std::string id = fields->getObject("vendor")->getValue<std::string>("media_id");
        out[id] = rec;
    }
    return out;
}

} // namespace

TEST_CASE("verint end to end: each fixture gives its record or quarantine; a restart emits nothing "
          "twice") {
    TempDir dir;
    const fs::path exports = dir.path / "export";
    fs::copy(fs::path(sbtest::env_or_fail("SB_FIXTURES")) / "verint" / "export", exports,
             fs::copy_options::recursive);
    for (auto& e : fs::recursive_directory_iterator(exports))
        fs::permissions(e.path(), fs::perms::owner_write, fs::perm_options::add);
    // The fixtures are from 2025: retention and max_age long enough that
    // the journal keeps them. Short settle and grace so that the test is quick.
    auto config = dir.write("verint.toml", R"(
[node]
data_dir = "data"
[retention]
default = "3650d"
[sources.calls]
plugin = "verint"
poll_interval = "100ms"
[sources.calls.config]
export_dir = "export"
settle = "300ms"
orphan_grace = "2s"
max_age = "3650d"
reconcile_interval = "1s"
[destinations.sink]
plugin = "memory-sink"
[destinations.sink.config]
output = "sink.jsonl"
[[route]]
category = ["*", "unclassified"]
destination = "sink"
purpose = "verint end-to-end test"
profile = "all"
lawful_basis = "test"
[profiles.all.fields]
"*" = "keep"
)");
    const fs::path data = dir.path / "data", sink = dir.path / "sink.jsonl";
    const std::vector<std::string> argv = {sbtest::switchboard_binary(), "run", "-c", config.string(),
                                           "--plugin-dir", sbtest::plugin_dir(),
                                           "--set", "http.listen=127.0.0.1:0"};
    std::string logs;
    {
        Process daemon(argv);
        REQUIRE(daemon.wait_for_log("core: ready", 20s));
        bool all = wait_until([&] { return read_lines(sink).size() >= 4 && quarantine_entries(data).size() >= 2; },
                              30s);
        // The fixtures are far older than vendor_retention: the check says so.
        CHECK(daemon.wait_for_log("stale exports: 6 interaction\\(s\\) older than vendor_retention still in "
                                  "export_dir; oldest " + k01,
                                  10s));
        daemon.signal(SIGTERM);
        CHECK(daemon.wait(20s) == 0);
        logs += daemon.err();
        INFO(daemon.err());
        REQUIRE(all);
    }

    auto got = delivered(sink);
    REQUIRE(got.size() == 4);
    for (const auto& id : {k01, k02, k03, k04}) REQUIRE(got.count(id));

    // 0001: normal, with the recording by reference.
    auto r1 = got[k01];
    CHECK(r1->getObject("meta")->getValue<std::string>("channel") == "phone");
    CHECK(r1->getObject("meta")->getValue<std::string>("occurred_at") == "2025-01-06T09:12:44Z");
    auto call1 = r1->getObject("fields")->getObject("call");
    CHECK(call1->getValue<std::string>("ani") == "01514960417");
    CHECK(call1->getValue<std::string>("direction") == "inbound");
    CHECK(call1->getValue<int>("duration_s") == 318);
    CHECK(r1->getObject("fields")->getObject("agent")->getValue<std::string>("id") == "E10442");
    CHECK(r1->getObject("fields")->getObject("hints")->getValue<std::string>("queue") == "Council Tax");
    auto atts = r1->getArray("attachments");
    REQUIRE(atts->size() == 1);
    auto a = atts->getObject(0);
    const fs::path wav1 = fs::absolute(exports / "2025/01/06/09" / (k01 + ".wav")).lexically_normal();
    CHECK(a->getValue<std::string>("uri") == "file://" + wav1.string());
    CHECK(a->getValue<std::string>("media_type") == "audio/wav");
    CHECK(a->getValue<int>("size") == 2044);
    CHECK(a->getValue<std::string>("sha256") == sha256_hex(read_file(wav1)));
    CHECK(a->getValue<std::string>("category") == "media.voice");

    // 0002: PCI tags.
    auto pci = got[k02]->getObject("fields")->getObject("call")->getArray("pci");
    REQUIRE(pci->size() == 2);
    CHECK(pci->getObject(0)->getValue<std::string>("event") == "pause");
    CHECK(pci->getObject(0)->getValue<double>("offset_s") == Approx(211.4));
    CHECK(pci->getObject(1)->getValue<std::string>("event") == "resume");

    // 0003: transcript only, no audio, nothing emitted for "" values.
    auto r3 = got[k03];
    CHECK(r3->getArray("attachments")->size() == 0);
    auto call3 = r3->getObject("fields")->getObject("call");
    CHECK(call3->getValue<std::string>("status") == "transcript only");
    CHECK_FALSE(call3->has("ani"));
    CHECK_FALSE(r3->getObject("fields")->has("agent"));

    // 0004: outbound.
    auto call4 = got[k04]->getObject("fields")->getObject("call");
    CHECK(call4->getValue<std::string>("direction") == "outbound");
    CHECK(call4->getValue<std::string>("dnis") == "07700900555");
    CHECK(got[k04]->getArray("attachments")->size() == 1);

    // 0005 (truncated JSON) and 0006 (orphan audio): quarantined, audited by reference.
    auto q = quarantine_entries(data);
    CHECK(q.size() == 2);
    auto audited = [&](const std::string& id) {
        for (const auto& l : q)
            if (l.find(id) != std::string::npos) return true;
        return false;
    };
    CHECK(audited(k05 + ".json"));
    CHECK(audited(k06 + ".wav"));

    // Restart: nothing is emitted or quarantined again.
    {
        Process daemon(argv);
        REQUIRE(daemon.wait_for_log("core: ready", 20s));
        CHECK(daemon.wait_for_log("plugin\\[calls\\]: watching .* hours up to 2025/01/06/10 closed", 10s));
        // Many polls (100 ms) and a reconcile later.
        CHECK(daemon.wait_for_log("stale exports: 6 interaction", 10s));
        std::this_thread::sleep_for(1s);
        daemon.signal(SIGTERM);
        CHECK(daemon.wait(20s) == 0);
        logs += daemon.err();
    }
    CHECK(read_lines(sink).size() == 4);
    CHECK(quarantine_entries(data).size() == 2);

    // No payload value in the daemon's log.
    for (const char* value : {"01514960417", "07700900312", "07700900555", "01514960100", "Bethan",
                              "Żuraw", "Rourke", "Council Tax", "E10442", "9100000000000000417"}) {
        INFO(value);
        CHECK(logs.find(value) == std::string::npos);
    }
}
