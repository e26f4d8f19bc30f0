// The email plugin's MIME parser on its own: each RFC feature it handles, and
// each malformed fixture's defects. (The plugin's own tests, through the
// harness and the daemon, are email_test.cpp and email_daemon_test.cpp.)
#include "mime.hpp"

#include <catch2/catch.hpp>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

using namespace sbmail;

namespace {

std::string fixture(const std::string& name) {
    const char* dir = std::getenv("SB_FIXTURES");
    REQUIRE(dir);
    std::ifstream in(std::string(dir) + "/email/" + name, std::ios::binary);
    REQUIRE(in);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
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

std::string hdr(std::string_view raw) {
    Defects d;
    return decode_header_text(raw, d, "Subject");
}

} // namespace

TEST_CASE("mime: header unfolding, continuation lines and the blank line") {
    Defects d;
    std::size_t body = 0;
    std::string raw = "Subject: a long\r\n  folded\r\n\tsubject\r\nX-Empty:\r\nFrom : x@y\r\n\r\nbody";
    auto h = parse_headers(raw, body, d);
    REQUIRE(h.size() == 3);
    CHECK(h[0].name == "Subject");
    CHECK(h[0].value == "a long  folded\tsubject"); // unfolding keeps the whitespace
    CHECK(h[1].value.empty());
    CHECK(h[2].name == "From"); // obsolete space before the colon
    CHECK(raw.substr(body) == "body");
    CHECK(d.list().empty());

    // No blank line: the first line that is not a header starts the body.
    Defects d2;
    auto h2 = parse_headers("Subject: x\nthis is the body\nmore", body, d2);
    CHECK(h2.size() == 1);
    CHECK(d2.has("missing blank line"));
    // An mbox From_ line is skipped, with a defect.
    Defects d3;
    auto h3 = parse_headers("From someone@example.net Mon Jan  6 08:14:57 2025\nSubject: y\n\nb", body, d3);
    REQUIRE(h3.size() == 1);
    CHECK(h3[0].value == "y");
    CHECK(d3.has("mbox From_ line"));
}

TEST_CASE("mime: RFC 2047 encoded-words, B and Q, in several charsets") {
    CHECK(hdr("=?UTF-8?B?QmluIGNvbGxlY3Rpb24g8J+Xke+4jyBtaXNzZWQg4oCTIMSMdHZydGVr?=") ==
          "Bin collection \xF0\x9F\x97\x91\xEF\xB8\x8F missed \xE2\x80\x93 \xC4\x8Ctvrtek");
    CHECK(hdr("=?utf-8?q?Siobh=C3=A1n_N=C3=AD_Bhriain?=") == "Siobh\xC3\xA1n N\xC3\xAD Bhriain");
    CHECK(hdr("=?ISO-8859-1?Q?Caf=E9?=") == "Caf\xC3\xA9");
    CHECK(hdr("=?iso-8859-1?b?Q2Fm6Q==?=") == "Caf\xC3\xA9");
    // Windows-1252 (and Latin-1 labels, read as browsers do): 0x80 is the euro sign.
    CHECK(hdr("=?windows-1252?Q?=80100_=96_rent?=") == "\xE2\x82\xAC" "100 \xE2\x80\x93 rent");
    CHECK(hdr("=?ISO-8859-15?Q?=A4?=") == "\xE2\x82\xAC");
    // Whitespace between adjacent encoded-words disappears; a multi-byte
    // character split across two words is joined before decoding.
    CHECK(hdr("=?UTF-8?Q?a?= \r\n =?UTF-8?Q?b?=") == "ab");
    CHECK(hdr("=?UTF-8?B?w6k=?= =?UTF-8?Q?t=C3?= =?UTF-8?Q?=A9?=") == "\xC3\xA9t\xC3\xA9");
    // ... but not between a word and plain text.
    CHECK(hdr("Re: =?UTF-8?Q?caf=C3=A9?= now") == "Re: caf\xC3\xA9 now");
    // RFC 2231 language suffix on the charset.
    CHECK(hdr("=?UTF-8*en?Q?hello?=") == "hello");
    // Not encoded-words: left alone.
    CHECK(hdr("what =? is this ?= thing") == "what =? is this ?= thing");
    CHECK(hdr("=?UTF-8?X?abc?=") == "=?UTF-8?X?abc?=");
    // Raw UTF-8 in a header is allowed (RFC 6532).
    CHECK(hdr("Caf\xC3\xA9 raw") == "Caf\xC3\xA9 raw");

    // Unknown charset: bytes kept (as UTF-8 where valid), with a defect.
    Defects d;
    CHECK(decode_header_text("=?x-unknown-cs?Q?abc=C3=A9?=", d, "Subject") == "abc\xC3\xA9");
    CHECK(d.has("unknown charset x-unknown-cs"));
    // Broken 8-bit in a header: U+FFFD and a defect.
    Defects d2;
    CHECK(decode_header_text("Caf\xE9", d2, "Subject") == "Caf\xEF\xBF\xBD");
    CHECK(d2.has("Subject header: 8-bit bytes"));
}

TEST_CASE("mime: charsets beyond Latin-1 go through an allow-listed iconv") {
    Defects d;
    // ISO-8859-2 (Polish): Łódź
    CHECK(to_utf8("\xA3\xF3\x64\xBC", "iso-8859-2", d) == "\xC5\x81\xC3\xB3\x64\xC5\xBA");
    CHECK(d.list().empty());
    // A charset outside the allow-list is not handed to iconv.
    Defects d2;
    to_utf8("abc", "ISO-2022-CN-EXT", d2);
    CHECK(d2.has("unknown charset iso-2022-cn-ext"));
}

TEST_CASE("mime: charset conversion to UTF-8; invalid bytes become U+FFFD") {
    Defects d;
    CHECK(to_utf8("\xA3" "5 \x93quoted\x94", "windows-1252", d) ==
          "\xC2\xA3" "5 \xE2\x80\x9Cquoted\xE2\x80\x9D");
    CHECK(to_utf8("na\xEFve", "latin1", d) == "na\xC3\xAFve");
    CHECK(d.list().empty());
    CHECK(to_utf8("ok \xC3\xA9 bad \xFF end", "UTF-8", d) == "ok \xC3\xA9 bad \xEF\xBF\xBD end");
    CHECK(d.has("invalid bytes for charset utf-8"));
    // Overlong forms and surrogates are invalid too.
    std::size_t bad = 0;
    std::string five;
    for (int i = 0; i < 5; ++i) five += "\xEF\xBF\xBD";
    CHECK(sanitize_utf8("\xC0\xAF\xED\xA0\x80", &bad) == five);
    CHECK(bad == 5);
    // Undeclared 8-bit text: read as UTF-8, noted.
    Defects d2;
    CHECK(to_utf8("Caf\xC3\xA9", "", d2) == "Caf\xC3\xA9");
    CHECK(d2.has("undeclared 8-bit bytes"));
}

TEST_CASE("mime: base64 and quoted-printable bodies, clean and malformed") {
    bool clean = false;
    CHECK(decode_base64("SGVs\r\nbG8=", &clean) == "Hello");
    CHECK(clean);
    CHECK(decode_base64("SGVsbG8", &clean) == "Hello"); // missing padding: tolerated
    CHECK(clean);
    CHECK(decode_base64("SGV*sbG8=", &clean) == "Hello"); // junk skipped, noted
    CHECK_FALSE(clean);
    CHECK(decode_base64("SGk=SGk=", &clean) == "HiHi"); // concatenated blocks
    CHECK(clean);

    CHECK(decode_quoted_printable("caf=C3=A9 =E2=80=94 soft=\r\n break\r\nline 2", &clean) ==
          "caf\xC3\xA9 \xE2\x80\x94 soft break\r\nline 2");
    CHECK(clean);
    CHECK(decode_quoted_printable("trailing   \nlower =c3=a9=\n", &clean) ==
          "trailing\r\nlower \xC3\xA9");
    CHECK(clean);
    CHECK(decode_quoted_printable("100% = sure =ZZ", &clean) == "100% = sure =ZZ");
    CHECK_FALSE(clean);
}

TEST_CASE("mime: Content-Type parameters, RFC 2231 file names and continuations") {
    Defects d;
    auto ct = parse_header_params("Text/Plain; charset=\"UTF-8\"; format=flowed (comment)", d);
    CHECK(ct.value == "text/plain");
    CHECK(ct.params["charset"] == "UTF-8");

    auto cd = parse_header_params("attachment; filename*=UTF-8''%E2%82%AC%20rates%20bill.pdf", d);
    CHECK(cd.value == "attachment");
    CHECK(cd.params["filename"] == "\xE2\x82\xAC rates bill.pdf");

    auto cont = parse_header_params(
        "attachment; filename*0*=iso-8859-1'en'Caf%E9%20; filename*1=\"menu\"; filename*2*=%2Epdf", d);
    CHECK(cont.params["filename"] == "Caf\xC3\xA9 menu.pdf");

    // RFC 2231 wins over the plain parameter; RFC 2047 in a plain name is decoded.
    auto both = parse_header_params("attachment; filename=\"fallback.txt\"; filename*=UTF-8''real.txt", d);
    CHECK(both.params["filename"] == "real.txt");
    auto word = parse_header_params("image/jpeg; name=\"=?UTF-8?B?w6lsw6huZS5qcGc=?=\"", d);
    CHECK(word.params["name"] == "\xC3\xA9l\xC3\xA8ne.jpg");
    CHECK(d.list().empty());

    auto quoted = parse_header_params("multipart/mixed; boundary=\"a;b\\\"c\"", d);
    CHECK(quoted.params["boundary"] == "a;b\"c");
}

TEST_CASE("mime: From display names and addresses") {
    Defects d;
    auto m = parse_mailbox("Rhiannon Baptiste-Walsh <rhiannon.bw@example.org>", d);
    REQUIRE(m);
    CHECK(m->name == "Rhiannon Baptiste-Walsh");
    CHECK(m->address == "rhiannon.bw@example.org");
    m = parse_mailbox("\"Walsh, Rhiannon \\\"Rhi\\\"\" <r@example.org>", d);
    CHECK(m->name == "Walsh, Rhiannon \"Rhi\"");
    CHECK(m->address == "r@example.org");
    m = parse_mailbox("=?UTF-8?Q?Siobh=C3=A1n_N=C3=AD_Bhriain?= <siobhan.nb@example.org>", d);
    CHECK(m->name == "Siobh\xC3\xA1n N\xC3\xAD Bhriain");
    m = parse_mailbox("someone@example.net", d);
    CHECK(m->name.empty());
    CHECK(m->address == "someone@example.net");
    m = parse_mailbox("someone@example.net (Some One)", d);
    CHECK(m->name == "Some One");
    CHECK(m->address == "someone@example.net");
    m = parse_mailbox("<bare@example.net>", d);
    CHECK(m->address == "bare@example.net");
    CHECK(d.list().empty());
    m = parse_mailbox("A <a@example.org>, B <b@example.org>", d);
    CHECK(m->address == "a@example.org");
    CHECK(d.has("several addresses"));
}

TEST_CASE("mime: message ids for threading") {
    CHECK(parse_msg_ids("<20250106081457.FAKE0001@example.org>") ==
          std::vector<std::string>{"20250106081457.FAKE0001@example.org"});
    CHECK(parse_msg_ids("<a@x> (comment)\r\n <b@y>\t<c@z>") == std::vector<std::string>{"a@x", "b@y", "c@z"});
    CHECK(parse_msg_ids("no-brackets@example.org") == std::vector<std::string>{"no-brackets@example.org"});
    CHECK(parse_msg_ids("").empty());
    CHECK(parse_msg_ids("<>").empty());
}

TEST_CASE("mime: RFC 5322 dates, obsolete forms, and nonsense") {
    // 2025-01-06T08:14:57Z
    const std::int64_t t = 1736151297000;
    CHECK(parse_date("Mon, 06 Jan 2025 08:14:57 +0000") == t);
    CHECK(parse_date("6 Jan 2025 08:14:57 +0000") == t);
    CHECK(parse_date("Mon, 06 Jan 2025 09:14:57 +0100 (CET)") == t);
    CHECK(parse_date("Mon, 06 Jan 2025 03:14:57 EST") == t);
    CHECK(parse_date("Mon, 6 Jan 25 08:14:57 GMT") == t);         // two-digit year
    CHECK(parse_date("Mon, 06 Jan 2025 08:14 +0000") == t - 57000); // no seconds
    CHECK(parse_date("Mon Jan  6 08:14:57 2025") == t);            // asctime, no zone: UTC
    CHECK(parse_date("monday, 06 january 2025 08:14:57 +00:00") == t);
    CHECK_FALSE(parse_date(""));
    CHECK_FALSE(parse_date("yesterday"));
    CHECK_FALSE(parse_date("Mon, 31 Feb 2025 08:14:57 +0000"));
    CHECK_FALSE(parse_date("Mon, 06 Jan 2025 25:14:57 +0000"));
}

TEST_CASE("mime: HTML to text is simple and safe") {
    CHECK(html_to_text("<html><head><title>t</title><style>p{x:1}</style></head><body>"
                       "<p>Hi,&nbsp;my <b>bins</b> were missed.</p><script>alert(1)</script>"
                       "<p>Cost &pound;5 &amp; more &#8364;3 &#x2014; ok<br>Bye</p><!-- hidden --></body></html>") ==
          "Hi, my bins were missed.\nCost \xC2\xA3" "5 & more \xE2\x82\xAC" "3 \xE2\x80\x94 ok\nBye");
    CHECK(html_to_text("a < b and <a href=\"x>y\">link</a>") == "a < b and link");
    CHECK(html_to_text("&bogus; &#0; &") == "&bogus; \xEF\xBF\xBD &");
}

TEST_CASE("mime: attachment file names are made safe") {
    CHECK(safe_filename("tenancy-agreement.txt", "text/plain") == "tenancy-agreement.txt");
    CHECK(safe_filename("../../etc/passwd", "") == "passwd");
    CHECK(safe_filename("..\\..\\boot.ini", "") == "boot.ini");
    CHECK(safe_filename("..", "application/pdf") == "attachment.pdf");
    CHECK(safe_filename("", "image/jpeg") == "attachment.jpg");
    CHECK(safe_filename(".hidden", "") == "hidden");
    CHECK(safe_filename("-rf", "") == "rf");
    CHECK(safe_filename("Caf\xC3\xA9 bill (2).pdf", "") == "Caf_bill_2_.pdf");
    std::string longname(300, 'a');
    CHECK(safe_filename(longname + ".pdf", "") == std::string(96, 'a') + ".pdf");
}

TEST_CASE("mime: nested multiparts; text/plain preferred; attachments kept; HTML only is stripped") {
    std::string raw = crlf(
        "From: A <a@example.org>\n"
        "Subject: nested\n"
        "Date: Tue, 07 Jan 2025 10:00:00 +0000\n"
        "Message-ID: <n1@example.org>\n"
        "MIME-Version: 1.0\n"
        "Content-Type: multipart/mixed; boundary=outer\n"
        "\n"
        "preamble\n"
        "--outer\n"
        "Content-Type: multipart/alternative; boundary=\"inner\"\n"
        "\n"
        "--inner\n"
        "Content-Type: text/html; charset=utf-8\n"
        "\n"
        "<p>html version</p>\n"
        "--inner\n"
        "Content-Type: multipart/related; boundary=rel\n"
        "\n"
        "--rel\n"
        "Content-Type: text/plain; charset=iso-8859-1\n"
        "Content-Transfer-Encoding: quoted-printable\n"
        "\n"
        "plain caf=E9 version\n"
        "--rel\n"
        "Content-Type: image/png\n"
        "Content-ID: <logo>\n"
        "Content-Transfer-Encoding: base64\n"
        "\n"
        "iVBORw0KGgo=\n"
        "--rel--\n"
        "--inner--\n"
        "--outer\n"
        "Content-Type: application/pdf; name=\"bill.pdf\"\n"
        "Content-Disposition: attachment; filename*=UTF-8''council%20tax%20bill.pdf\n"
        "Content-Transfer-Encoding: base64\n"
        "\n"
        "JVBERi0xLjQK\n"
        "--outer--\n"
        "epilogue\n");
    Message m = parse_message(raw);
    CHECK(m.refused.empty());
    CHECK(m.defects.list().empty());
    CHECK(m.text == "plain caf\xC3\xA9 version");
    CHECK(m.text_type == "text/plain");
    REQUIRE(m.attachments.size() == 2);
    CHECK(m.attachments[0].media_type == "image/png");
    CHECK(m.attachments[0].part == "1.2.2");
    CHECK(m.attachments[0].data == std::string("\x89PNG\r\n\x1a\n", 8));
    CHECK(m.attachments[1].filename == "council tax bill.pdf");
    CHECK(m.attachments[1].media_type == "application/pdf");
    CHECK(m.attachments[1].data == "%PDF-1.4\n");
    CHECK(m.parts == 7);

    // HTML only: tags stripped.
    Message h = parse_message(crlf("From: b@example.org\nContent-Type: text/html; charset=windows-1252\n\n"
                                   "<div>Rent \x80" "5</div><div>thanks</div>\n"));
    CHECK(h.text == "Rent \xE2\x82\xAC" "5\nthanks");
    CHECK(h.text_type == "text/html");
}

TEST_CASE("mime: limits on parts and nesting refuse the message") {
    std::string many = "Content-Type: multipart/mixed; boundary=b\n\n";
    for (int i = 0; i < 5; ++i) many += "--b\nContent-Type: text/plain\n\npart\n";
    many += "--b--\n";
    Limits small;
    small.max_parts = 4;
    CHECK(parse_message(many, small).refused == "more than 4 MIME parts");
    CHECK(parse_message(many).refused.empty());

    std::string deep = "Content-Type: multipart/mixed; boundary=b0\n\n";
    for (int i = 1; i <= 4; ++i)
        deep += "--b" + std::to_string(i - 1) + "\nContent-Type: multipart/mixed; boundary=b" +
                std::to_string(i) + "\n\n";
    deep += "--b4\nContent-Type: text/plain\n\ndeep text\n";
    Limits shallow;
    shallow.max_depth = 3;
    CHECK(parse_message(deep, shallow).refused == "MIME nesting deeper than 3 levels");
    Message ok = parse_message(deep);
    CHECK(ok.refused.empty());
    CHECK(ok.text == "deep text");
}

TEST_CASE("mime: assorted malformations are defects, not failures") {
    Message m = parse_message(crlf("Subject: x\nContent-Type: multipart/mixed\n\nbody without boundary\n"));
    CHECK(m.defects.has("multipart without a boundary"));
    CHECK(m.text == "body without boundary");
    Message n = parse_message(crlf("Content-Type: multipart/mixed; boundary=zz\n\nno delimiter here\n"));
    CHECK(n.defects.has("multipart boundary not found"));
    CHECK(n.text == "no delimiter here");
    Message o = parse_message(crlf("Content-Type: text\nContent-Transfer-Encoding: x-uuencode\n\nodd\n"));
    CHECK(o.defects.has("malformed Content-Type"));
    CHECK(o.defects.has("unknown Content-Transfer-Encoding x-uuencode"));
    CHECK(o.text == "odd");
    Message p = parse_message(crlf("Date: whenever\nDate: later\nMessage-ID: nonsense\n\nx\n"));
    CHECK(p.defects.has("unreadable Date header"));
    CHECK(p.defects.has("several Date headers"));
    CHECK(p.defects.has("malformed Message-ID header"));
    CHECK(p.defects.has("no From header"));
    Message e = parse_message("");
    CHECK(e.text.empty());
    CHECK(e.refused.empty());
}

TEST_CASE("mime fixture 01: plain quoted-printable council tax move") {
    Message m = parse_message(fixture("01_plain_council_tax_move.eml"));
    CHECK(m.defects.list().empty());
    REQUIRE(m.from);
    CHECK(m.from->name == "Rhiannon Baptiste-Walsh");
    CHECK(m.from->address == "rhiannon.bw@example.org");
    CHECK(m.subject == "Change of address - council tax");
    CHECK(m.date == 1736151297000);
    CHECK(m.message_id == "20250106081457.FAKE0001@example.org");
    CHECK(m.thread_id() == m.message_id);
    CHECK(m.text.find("My council tax account number is 9000123456. Please close the old account "
                      "\xE2\x80\x94 I'm the only adult at the new address.") != std::string::npos);
    CHECK(m.text.find('\r') == std::string::npos);
    CHECK(m.attachments.empty());
}

TEST_CASE("mime fixture 02: multipart reply with an attachment and threading headers") {
    Message m = parse_message(fixture("02_multipart_evidence_reply.eml"));
    CHECK(m.defects.list().empty());
    CHECK(m.from->name == "Marek Nowak-Ellison");
    CHECK(m.in_reply_to == std::vector<std::string>{"hb-request-0000-8812@council.example"});
    CHECK(m.thread_id() == "hb-request-0000-8812@council.example");
    CHECK(m.text.rfind("Hi, attached is my tenancy agreement as requested.", 0) == 0);
    CHECK(m.text.find("> Please send a copy of your tenancy agreement.") != std::string::npos);
    REQUIRE(m.attachments.size() == 1);
    CHECK(m.attachments[0].filename == "tenancy-agreement.txt");
    CHECK(m.attachments[0].media_type == "text/plain");
    CHECK(m.attachments[0].data.rfind("TENANCY AGREEMENT (FICTIONAL TEST DOCUMENT)\n", 0) == 0);
    CHECK(m.attachments[0].data.size() == 173);
}

TEST_CASE("mime fixture 03: RFC 2047 headers, emoji subject, base64/QP alternatives") {
    Message m = parse_message(fixture("03_unicode_headers_pii_html.eml"));
    CHECK(m.defects.list().empty());
    CHECK(m.from->name == "Siobh\xC3\xA1n N\xC3\xAD Bhriain");
    CHECK(m.subject == "Bin collection \xF0\x9F\x97\x91\xEF\xB8\x8F missed \xE2\x80\x93 \xC4\x8Ctvrtek");
    CHECK(m.text_type == "text/plain"); // the plain alternative, not the HTML
    CHECK(m.text.find("NI number QQ 12 34 56 C") != std::string::npos);
    CHECK(m.text.find("4111111111111111") != std::string::npos); // the core redacts it at ingest
    CHECK(m.text.find("<p>") == std::string::npos);
    CHECK(m.text.substr(m.text.size() - 8) == "Siobh\xC3\xA1n");
    CHECK(m.attachments.empty());
}

TEST_CASE("mime fixture 04: LF only, no Date or Message-ID, unclosed multipart, stray byte") {
    Message m = parse_message(fixture("04_malformed_lf_only_no_date.eml"));
    CHECK(m.refused.empty());
    const auto& d = m.defects.list();
    INFO([&] { std::string all; for (auto& x : d) all += x + "\n"; return all; }());
    CHECK(m.defects.has("bare LF line endings"));
    CHECK(m.defects.has("no Date header"));
    CHECK(m.defects.has("no Message-ID header"));
    CHECK(m.defects.has("multipart boundary never closed"));
    CHECK(m.defects.has("part 1: undeclared 8-bit bytes (charset not given)"));
    CHECK(m.defects.has("part 1: invalid bytes for charset us-ascii replaced by U+FFFD"));
    CHECK(d.size() == 6);
    CHECK_FALSE(m.date);
    CHECK(m.message_id.empty());
    CHECK(m.from->address == "someone@example.net");
    CHECK(m.from->name.empty());
    CHECK(m.subject == "urgent!!! flytipping");
    CHECK(m.text == "Mattresses dumped outside 2 Sham Terrace L4 0XX. Caf\xC3\xA9 owner says it's "
                    "been a week.\nStray latin-1 byte here: \xEF\xBF\xBD");
}
