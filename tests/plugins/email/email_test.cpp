// The email source through its built .so and the SDK harness: each fixture
// to its record over a real maildir, attachments by reference, threading,
// redelivery, erasure, limits and quarantine, a journal that is down, and a
// restart between commit and move.
#include <catch2/catch.hpp>

#include <switchboard/testing.hpp>

#include <openssl/evp.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
using sb::testing::Harness;
using sb::testing::TestRecord;
using sb::testing::toml_string;

std::string module() {
    const char* dir = std::getenv("SB_PLUGIN_DIR");
    if (!dir) FAIL("SB_PLUGIN_DIR is not set (run through meson test)");
    return std::string(dir) + "/sources/email/email.so";
}

std::string fixture(const std::string& name) {
    const char* dir = std::getenv("SB_FIXTURES");
    if (!dir) FAIL("SB_FIXTURES is not set (run through meson test)");
    std::ifstream in(std::string(dir) + "/email/" + name, std::ios::binary);
    REQUIRE(in);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

std::string slurp(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

std::string sha256_hex(std::string_view data) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    REQUIRE(EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr) == 1);
    std::string out;
    char buf[3];
    for (unsigned int i = 0; i < len; ++i) {
        std::snprintf(buf, sizeof buf, "%02x", md[i]);
        out += buf;
    }
    return out;
}

// CRLF line ends for a message written with "\n" in the test.
std::string crlf(const std::string& s) {
    std::string out;
    for (char c : s) {
        if (c == '\n') out += '\r';
        out += c;
    }
    return out;
}

const char* const kFixtures[] = {"01_plain_council_tax_move.eml", "02_multipart_evidence_reply.eml",
                                 "03_unicode_headers_pii_html.eml",
                                 "04_malformed_lf_only_no_date.eml"};

// Values of the fixtures that must never reach a log line.
const char* const kSecrets[] = {"Rhiannon", "rhiannon.bw", "Change of address", "council tax",
                                "Fakeley",  "9000123456",  "07700",             "FAKE0001",
                                "Marek",    "hb-request",  "0151 496",          "tenancy",
                                "Siobh",    "siobhan",     "Bin collection",    "4111",
                                "QQ 12",    "Madeup",      "someone@example",   "flytipping",
                                "Mattresses"};

// A maildir in a temporary directory, delivered to as a mail system does:
// written into tmp/, renamed into new/.
struct Maildir {
    fs::path root;
    Maildir() {
        char tmpl[] = "/tmp/sb-email-test-XXXXXX";
        REQUIRE(::mkdtemp(tmpl));
        root = tmpl;
        for (const char* sub : {"tmp", "new", "cur"}) fs::create_directories(root / sub);
    }
    ~Maildir() {
        std::error_code ec;
        fs::remove_all(root, ec);
    }
    void deliver(const std::string& name, const std::string& bytes) const {
        {
            std::ofstream out(root / "tmp" / name, std::ios::binary);
            out << bytes;
            REQUIRE(out.good());
        }
        fs::rename(root / "tmp" / name, root / "new" / name);
    }
    std::set<std::string> names(const char* sub) const {
        std::set<std::string> out;
        for (const auto& e : fs::directory_iterator(root / sub)) out.insert(e.path().filename().string());
        return out;
    }
};

using Config = std::map<std::string, std::string>;

struct Plugin {
    Maildir maildir;
    Harness h{module()};
    explicit Plugin(const Config& config = {}) {
        h.config("maildir", toml_string(maildir.root.string()));
        for (const auto& [k, v] : config) h.config(k, v);
        REQUIRE(h.create() == SB_OK);
        REQUIRE(h.start() == SB_OK);
    }
    // Polls until the plugin says it is idle (bounded).
    void drain() {
        for (int i = 0; i < 100; ++i)
            if (h.poll() != SB_OK) return;
        FAIL("poll never became idle");
    }
    const TestRecord* by_external_id(const std::string& id) {
        for (const auto& r : h.emitted())
            if (r.meta(SB_META_EXTERNAL_ID) == id) return &r;
        return nullptr;
    }
    fs::path attachments() { return h.data_dir() / "attachments"; }
    std::size_t files_under(const fs::path& dir) {
        std::size_t n = 0;
        std::error_code ec;
        if (!fs::exists(dir, ec)) return 0;
        for (const auto& e : fs::recursive_directory_iterator(dir))
            if (e.is_regular_file()) ++n;
        return n;
    }
    void no_secrets_logged() {
        for (const char* s : kSecrets) {
            INFO(s);
            CHECK_FALSE(h.logged(s));
        }
    }
};

std::string key_hash(const std::string& external_id) { return sha256_hex(external_id).substr(0, 32); }

} // namespace

TEST_CASE("email: each fixture becomes its record, and the message moves to cur/") {
    Plugin p;
    int n = 0;
    for (const char* f : kFixtures) p.maildir.deliver("17361" + std::to_string(n++) + ".M1P1.mx", fixture(f));
    p.drain();
    REQUIRE(p.h.emitted().size() == 4);
    CHECK(p.maildir.names("new").empty());
    CHECK(p.maildir.names("cur") == std::set<std::string>{"173610.M1P1.mx:2,", "173611.M1P1.mx:2,",
                                                         "173612.M1P1.mx:2,", "173613.M1P1.mx:2,"});
    CHECK(p.h.counter("records_emitted") == 4);
    for (const auto& r : p.h.emitted()) {
        CHECK(r.meta(SB_META_CHANNEL) == "email");
        for (const auto& f : r.fields()) CHECK(f.category != "unknown");
    }

    SECTION("01: a plain quoted-printable e-mail about council tax") {
        const TestRecord* r = p.by_external_id("20250106081457.FAKE0001@example.org");
        REQUIRE(r);
        CHECK(r->meta(SB_META_SUBJECT_REF) == "173610.M1P1.mx");
        CHECK(r->meta(SB_META_OCCURRED_AT) == "2025-01-06T08:14:57.000Z");
        CHECK(r->value("citizen.name") == "Rhiannon Baptiste-Walsh");
        CHECK(r->category("citizen.name") == "identity.name");
        CHECK(r->value("contact.email") == "rhiannon.bw@example.org");
        CHECK(r->category("contact.email") == "contact.email");
        CHECK(r->value("content.subject") == "Change of address - council tax");
        CHECK(r->category("content.subject") == "content.free_text");
        CHECK(r->value("hints.subject") == "Change of address - council tax");
        CHECK(r->category("hints.subject") == "classification.hint");
        CHECK(r->category("content.text") == "content.free_text");
        CHECK(r->value("content.text").find("account number is 9000123456. Please close the old "
                                            "account \xE2\x80\x94 I'm the only adult at the new "
                                            "address.") != std::string::npos);
        CHECK(r->value("content.message_id") == "20250106081457.FAKE0001@example.org");
        CHECK(r->value("content.thread_id") == "20250106081457.FAKE0001@example.org");
        CHECK(r->category("content.thread_id") == "content.meta");
        CHECK_FALSE(r->has("content.in_reply_to"));
        CHECK_FALSE(r->has("defects[0]"));
        CHECK(r->attachments().empty());
    }
    SECTION("02: a threaded reply whose attachment is written under data_dir, by reference") {
        const TestRecord* r = p.by_external_id("CAFAKE0002@mail.example.com");
        REQUIRE(r);
        CHECK(r->value("content.thread_id") == "hb-request-0000-8812@council.example");
        CHECK(r->value("content.in_reply_to") == "hb-request-0000-8812@council.example");
        CHECK(r->value("content.text").find("My phone is 0151 496 0588.") != std::string::npos);
        REQUIRE(r->attachments().size() == 1);
        const auto& a = r->attachments()[0];
        CHECK(a.name == "attachment-1");
        CHECK(a.media_type == "text/plain");
        CHECK(a.category == "media.document");
        CHECK(a.size == 173);
        fs::path expected = fs::absolute(p.attachments()).lexically_normal() /
                            key_hash("CAFAKE0002@mail.example.com") / "1-tenancy-agreement.txt";
        CHECK(a.uri == "file://" + expected.string());
        std::string bytes = slurp(expected);
        CHECK(bytes.rfind("TENANCY AGREEMENT (FICTIONAL TEST DOCUMENT)\n", 0) == 0);
        CHECK(bytes.size() == 173);
        CHECK(a.sha256 == sha256_hex(bytes));
        CHECK(r->value("content.attachments[0].filename") == "tenancy-agreement.txt");
        CHECK(r->value("content.attachments[0].name") == "attachment-1");
        CHECK(p.h.counter("attachments_written") == 1);
    }
    SECTION("03: decoded UTF-8 subject and name, text from the plain alternative") {
        const TestRecord* r = p.by_external_id("FAKE0003.siobhan@example.org");
        REQUIRE(r);
        CHECK(r->value("citizen.name") == "Siobh\xC3\xA1n N\xC3\xAD Bhriain");
        CHECK(r->value("content.subject") ==
              "Bin collection \xF0\x9F\x97\x91\xEF\xB8\x8F missed \xE2\x80\x93 \xC4\x8Ctvrtek");
        std::string text = r->value("content.text");
        CHECK(text.find("NI number QQ 12 34 56 C") != std::string::npos);
        CHECK(text.find("<p>") == std::string::npos);
        CHECK(r->meta(SB_META_OCCURRED_AT) == "2025-01-09T19:03:44.000Z");
        CHECK_FALSE(r->has("defects[0]"));
    }
    SECTION("04: malformed, recorded with its defects and a hash-based id") {
        std::string raw = fixture("04_malformed_lf_only_no_date.eml");
        std::string id = "sha256:" + sha256_hex(raw);
        const TestRecord* r = p.by_external_id(id);
        REQUIRE(r);
        CHECK_FALSE(r->meta(SB_META_OCCURRED_AT));
        CHECK(r->value("content.thread_id") == id);
        CHECK_FALSE(r->has("content.message_id"));
        CHECK(r->value("contact.email") == "someone@example.net");
        CHECK_FALSE(r->has("citizen.name"));
        CHECK(r->value("content.text").find("Caf\xC3\xA9 owner") != std::string::npos);
        std::set<std::string> defects;
        for (int i = 0; r->has("defects[" + std::to_string(i) + "]"); ++i) {
            CHECK(r->category("defects[" + std::to_string(i) + "]") == "operational.defect");
            defects.insert(r->value("defects[" + std::to_string(i) + "]"));
        }
        CHECK(defects == std::set<std::string>{
                             "bare LF line endings", "no Date header", "no Message-ID header",
                             "multipart boundary never closed",
                             "part 1: undeclared 8-bit bytes (charset not given), read as UTF-8",
                             "part 1: invalid bytes for charset us-ascii replaced by U+FFFD"});
        CHECK(p.h.counter("defects") == 6);
    }
    p.no_secrets_logged();
}

TEST_CASE("email: a reply is threaded to the message it answers") {
    Plugin p;
    p.maildir.deliver("1.a.mx", fixture("01_plain_council_tax_move.eml"));
    p.maildir.deliver("2.b.mx", crlf("From: Rhiannon Baptiste-Walsh <rhiannon.bw@example.org>\n"
                                     "Subject: Re: Change of address - council tax\n"
                                     "Date: Tue, 07 Jan 2025 09:00:00 +0000\n"
                                     "Message-ID: <reply-1@example.org>\n"
                                     "In-Reply-To: <20250106081457.FAKE0001@example.org>\n"
                                     "References: <20250106081457.FAKE0001@example.org>\n"
                                     "\n"
                                     "Any news?\n"));
    p.drain();
    const TestRecord* first = p.by_external_id("20250106081457.FAKE0001@example.org");
    const TestRecord* reply = p.by_external_id("reply-1@example.org");
    REQUIRE(first);
    REQUIRE(reply);
    CHECK(reply->value("content.thread_id") == first->value("content.thread_id"));
    CHECK(reply->value("content.in_reply_to") == "20250106081457.FAKE0001@example.org");
}

TEST_CASE("email: a redelivered message is a duplicate, moved to cur/, and erased with the first") {
    Plugin p;
    const std::string raw = fixture("01_plain_council_tax_move.eml");
    p.maildir.deliver("100.A.mx", raw);
    p.drain();
    REQUIRE(p.h.emitted().size() == 1);
    // The mail system delivers it again: under a new name, and under the same one.
    p.maildir.deliver("200.B.mx", raw);
    p.maildir.deliver("100.A.mx", raw);
    p.drain();
    CHECK(p.h.emitted().size() == 1); // not emitted twice
    CHECK(p.h.counter("records_duplicate") == 2);
    CHECK(p.maildir.names("new").empty());
    CHECK(p.maildir.names("cur") ==
          std::set<std::string>{"100.A.mx:2,", "200.B.mx:2,", "100.A.mx_1:2,"});

    // A mail client marks one as read (flags change the name); erase finds it anyway.
    fs::rename(p.maildir.root / "cur" / "200.B.mx:2,", p.maildir.root / "cur" / "200.B.mx:2,S");
    const TestRecord rec = p.h.emitted().front();
    CHECK(p.h.erase(rec) == SB_OK);
    CHECK(p.maildir.names("cur").empty());
    CHECK(p.h.state().count("m." + key_hash("20250106081457.FAKE0001@example.org")) == 0);
    CHECK(p.h.counter("files_erased") == 3);
    CHECK(p.h.erase(rec) == SB_OK); // already gone
    p.no_secrets_logged();
}

TEST_CASE("email: erase removes the message from the drop and its attachment files") {
    Plugin p;
    p.maildir.deliver("300.C.mx", fixture("02_multipart_evidence_reply.eml"));
    p.maildir.deliver("301.D.mx", fixture("01_plain_council_tax_move.eml"));
    p.drain();
    REQUIRE(p.h.emitted().size() == 2);
    const TestRecord* r = p.by_external_id("CAFAKE0002@mail.example.com");
    REQUIRE(r);
    fs::path dir = p.attachments() / key_hash("CAFAKE0002@mail.example.com");
    REQUIRE(p.files_under(dir) == 1);
    CHECK(p.h.erase(*r) == SB_OK);
    CHECK_FALSE(fs::exists(dir));
    CHECK(p.maildir.names("cur") == std::set<std::string>{"301.D.mx:2,"}); // the other one stays
    CHECK(p.h.erase(*r) == SB_OK);
    // A request that names nothing to find is refused, permanently.
    CHECK(p.h.erase("R-unknown") == SB_ERR_PERMANENT);
    CHECK(p.h.last_error().find("neither external_id nor subject_ref") != std::string::npos);
}

TEST_CASE("email: a redelivery after the record was erased is removed from the drop, not kept") {
    Plugin p;
    const std::string raw = fixture("02_multipart_evidence_reply.eml");
    p.maildir.deliver("400.E.mx", raw);
    p.drain();
    REQUIRE(p.h.emitted().size() == 1);
    CHECK(p.h.erase(p.h.emitted().front()) == SB_OK);
    // The journal still remembers the id (SB_DUPLICATE), the drop must not keep a copy.
    p.maildir.deliver("401.F.mx", raw);
    p.drain();
    CHECK(p.h.emitted().size() == 1);
    CHECK(p.h.counter("duplicates_of_erased") == 1);
    CHECK(p.maildir.names("new").empty());
    CHECK(p.maildir.names("cur").empty());
    CHECK(p.files_under(p.attachments()) == 0);
    CHECK(p.h.state().empty());
}

TEST_CASE("email: messages over the limits are quarantined with a reason and removed from the drop") {
    SECTION("max_message") {
        Plugin p(Config{{"max_message", "\"2KiB\""}});
        std::string big = crlf("From: a@example.org\nSubject: big\n\n") + std::string(3000, 'x');
        p.maildir.deliver("500.G.mx", big);
        p.maildir.deliver("501.H.mx", fixture("01_plain_council_tax_move.eml"));
        p.drain();
        CHECK(p.h.emitted().size() == 1);
        REQUIRE(p.h.quarantined().size() == 1);
        const auto& q = p.h.quarantined().front();
        CHECK(q.ref == "500.G.mx");
        CHECK(q.reason.find("exceeds max_message (2048 bytes)") != std::string::npos);
        CHECK(q.bytes == big); // smaller than the 64 KiB head kept
        CHECK(p.h.counter("messages_oversized") == 1);
        CHECK(p.maildir.names("new").empty());
        CHECK(p.maildir.names("cur") == std::set<std::string>{"501.H.mx:2,"});
    }
    SECTION("max_parts") {
        Plugin p(Config{{"max_parts", "5"}});
        std::string many = "From: a@example.org\nContent-Type: multipart/mixed; boundary=b\n\n";
        for (int i = 0; i < 6; ++i) many += "--b\nContent-Type: text/plain\n\npart\n";
        many += "--b--\n";
        p.maildir.deliver("502.I.mx", crlf(many));
        p.drain();
        CHECK(p.h.emitted().empty());
        REQUIRE(p.h.quarantined().size() == 1);
        CHECK(p.h.quarantined()[0].reason == "message refused: more than 5 MIME parts");
        CHECK(p.h.counter("messages_over_limits") == 1);
        CHECK(p.maildir.names("new").empty());
        CHECK(p.maildir.names("cur").empty());
    }
    SECTION("nothing usable: an empty file") {
        Plugin p;
        p.maildir.deliver("504.K.mx", "");
        p.maildir.deliver("505.L.mx", "X-Junk: 1\r\n\r\n");
        p.drain();
        CHECK(p.h.emitted().empty());
        REQUIRE(p.h.quarantined().size() == 2);
        CHECK(p.h.quarantined()[0].reason == "no sender, subject, text or attachment");
        CHECK(p.maildir.names("new").empty());
    }
    SECTION("max_depth") {
        Plugin p(Config{{"max_depth", "2"}});
        std::string deep = "From: a@example.org\nContent-Type: multipart/mixed; boundary=b0\n\n";
        for (int i = 1; i <= 3; ++i)
            deep += "--b" + std::to_string(i - 1) + "\nContent-Type: multipart/mixed; boundary=b" +
                    std::to_string(i) + "\n\n";
        deep += "--b3\nContent-Type: text/plain\n\ntext\n";
        p.maildir.deliver("503.J.mx", crlf(deep));
        p.drain();
        CHECK(p.h.emitted().empty());
        REQUIRE(p.h.quarantined().size() == 1);
        CHECK(p.h.quarantined()[0].reason == "message refused: MIME nesting deeper than 2 levels");
    }
}

TEST_CASE("email: with the journal down nothing moves and nothing is left behind; the next poll "
          "takes it") {
    Plugin p;
    p.maildir.deliver("600.K.mx", fixture("02_multipart_evidence_reply.eml"));
    p.h.journal_available(false);
    CHECK(p.h.poll() == SB_ERR_UNAVAILABLE);
    CHECK(p.h.emitted().empty());
    CHECK(p.maildir.names("new") == std::set<std::string>{"600.K.mx"});
    CHECK(p.files_under(p.attachments()) == 0);
    CHECK(p.h.state().empty());
    p.h.journal_available(true);
    p.drain();
    REQUIRE(p.h.emitted().size() == 1);
    CHECK(p.maildir.names("cur") == std::set<std::string>{"600.K.mx:2,"});
    CHECK(p.files_under(p.attachments()) == 1);
}

TEST_CASE("email: committed but not moved (a crash): after a restart it is moved, not emitted again") {
    Plugin p;
    p.maildir.deliver("700.L.mx", fixture("01_plain_council_tax_move.eml"));
    p.drain();
    REQUIRE(p.h.emitted().size() == 1);
    // As if the process died between the commit and the rename.
    fs::rename(p.maildir.root / "cur" / "700.L.mx:2,", p.maildir.root / "new" / "700.L.mx");
    p.h.destroy();
    REQUIRE(p.h.create() == SB_OK);
    REQUIRE(p.h.start() == SB_OK);
    p.drain();
    CHECK(p.h.emitted().size() == 1);
    CHECK(p.maildir.names("new").empty());
    CHECK(p.maildir.names("cur") == std::set<std::string>{"700.L.mx:2,"});
}

TEST_CASE("email: tmp/ and dot files are never read; symlinks are not followed") {
    Plugin p;
    {
        std::ofstream(p.maildir.root / "tmp" / "800.M.mx") << fixture("01_plain_council_tax_move.eml");
        std::ofstream(p.maildir.root / "new" / ".800.N.mx") << fixture("01_plain_council_tax_move.eml");
        std::ofstream(p.maildir.root / "outside.eml") << fixture("03_unicode_headers_pii_html.eml");
    }
    fs::create_symlink(p.maildir.root / "outside.eml", p.maildir.root / "new" / "801.O.mx");
    CHECK(p.h.poll() == SB_IDLE);
    CHECK(p.h.emitted().empty());
    CHECK(p.h.counter("read_errors") == 1);
    CHECK(p.h.poll() == SB_IDLE);
    int logged = 0;
    for (const auto& l : p.h.logs())
        if (l.message.find("cannot read message 801.O.mx") != std::string::npos) ++logged;
    CHECK(logged == 1); // once, not every poll
}

TEST_CASE("email: attachment file names cannot escape the attachment directory") {
    Plugin p;
    p.maildir.deliver("900.P.mx",
                      crlf("From: a@example.org\nMessage-ID: <evil@example.org>\n"
                           "Content-Type: multipart/mixed; boundary=b\n\n"
                           "--b\nContent-Type: text/plain\n\nsee attached\n"
                           "--b\nContent-Type: application/octet-stream\n"
                           "Content-Disposition: attachment; filename=\"../../../../tmp/evil.sh\"\n\n"
                           "echo owned\n"
                           "--b\nContent-Type: text/plain\n"
                           "Content-Disposition: attachment; filename*=UTF-8''..%2F..%2Fx%C3%A9.txt\n\n"
                           "two\n"
                           "--b\nContent-Type: image/png; name=\"..\"\nContent-Transfer-Encoding: base64\n\n"
                           "iVBORw0KGgo=\n"
                           "--b--\n"));
    p.drain();
    REQUIRE(p.h.emitted().size() == 1);
    const auto& r = p.h.emitted().front();
    REQUIRE(r.attachments().size() == 3);
    fs::path dir = fs::absolute(p.attachments()).lexically_normal() / key_hash("evil@example.org");
    std::set<std::string> files;
    for (const auto& e : fs::recursive_directory_iterator(p.h.data_dir())) {
        if (!e.is_regular_file()) continue;
        CHECK(e.path().parent_path() == dir);
        files.insert(e.path().filename().string());
    }
    CHECK(files == std::set<std::string>{"1-evil.sh", "2-x_.txt", "3-attachment.png"});
    CHECK(r.attachments()[2].category == "media.image");
    CHECK(r.value("content.attachments[0].filename") == "../../../../tmp/evil.sh"); // as given, as data
    CHECK(r.value("content.attachments[1].filename") == "../../x\xC3\xA9.txt");
    CHECK(r.value("content.attachments[2].filename") == "..");
    CHECK_FALSE(fs::exists("/tmp/evil.sh"));
}

TEST_CASE("email: a long text is cut at max_text and kept whole as an attachment") {
    Plugin p(Config{{"max_text", "\"1KiB\""}});
    std::string body;
    for (int i = 0; i < 100; ++i) body += "line " + std::to_string(i) + " of a long complaint\n";
    p.maildir.deliver("950.Q.mx", crlf("From: a@example.org\nMessage-ID: <long@example.org>\n\n" + body));
    p.drain();
    REQUIRE(p.h.emitted().size() == 1);
    const auto& r = p.h.emitted().front();
    CHECK(r.value("content.text").size() <= 1024);
    bool noted = false;
    for (int i = 0; r.has("defects[" + std::to_string(i) + "]"); ++i)
        noted |= r.value("defects[" + std::to_string(i) + "]").find("text cut at 1024 bytes; the whole "
                                                                   "text is attachment 1") == 0;
    CHECK(noted);
    REQUIRE(r.attachments().size() == 1);
    CHECK(r.attachments()[0].media_type == "text/plain");
    std::string whole = slurp(r.attachments()[0].uri.substr(7));
    CHECK(whole.size() > 2000);
    CHECK(whole.rfind("line 0 of a long complaint\nline 1", 0) == 0);
}

TEST_CASE("email: configuration") {
    SECTION("a maildir that does not exist fails create, naming the key") {
        Harness h(module());
        h.config("maildir", toml_string("/nonexistent/sb-email-maildir"));
        CHECK(h.create() != SB_OK);
        CHECK(h.last_error().find("config key 'maildir'") != std::string::npos);
    }
    SECTION("missing tmp/new/cur are made") {
        char tmpl[] = "/tmp/sb-email-bare-XXXXXX";
        REQUIRE(::mkdtemp(tmpl));
        fs::path root = tmpl;
        {
            Harness h(module());
            h.config("maildir", toml_string(root.string()));
            REQUIRE(h.create() == SB_OK);
            CHECK(fs::is_directory(root / "new"));
            CHECK(fs::is_directory(root / "cur"));
            CHECK(fs::is_directory(root / "tmp"));
        }
        fs::remove_all(root);
    }
    SECTION("limits are checked by the schema") {
        Harness h(module());
        h.config("maildir", toml_string("/tmp")).config("max_parts", "0");
        CHECK_THROWS(h.create());
    }
}

TEST_CASE("email: a message that cannot be made into a record is quarantined; those behind it "
          "are still taken") {
    Plugin p;
    // A name whose unique part (before ':') is empty: no subject_ref can be made.
    p.maildir.deliver(":2,", fixture("03_unicode_headers_pii_html.eml"));
    p.maildir.deliver("990.R.mx", fixture("01_plain_council_tax_move.eml"));
    p.drain();
    REQUIRE(p.h.emitted().size() == 1);
    CHECK(p.h.counter("messages_failed") == 1);
    REQUIRE(p.h.quarantined().size() == 1);
    CHECK(p.h.quarantined()[0].ref == ":2,");
    CHECK(p.h.quarantined()[0].reason.rfind("could not be made into a record", 0) == 0);
    CHECK(p.maildir.names("new").empty());
    CHECK(p.files_under(p.attachments()) == 0);
    p.no_secrets_logged();
}
