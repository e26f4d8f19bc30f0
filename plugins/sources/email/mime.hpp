// A tolerant RFC 5322 / MIME parser for the email source plugin.
//
// Standard library only (plus POSIX iconv, part of the C library, for
// charsets beyond UTF-8, Latin-1 and Windows-1252). Like Python's `email`
// package it never fails on malformed mail: it records what was wrong as
// short, content-free "defects" and carries on. It refuses a message only
// when a limit (parts, nesting) is exceeded, so that a hostile message
// cannot make it work without bound.
//
// Everything it returns is UTF-8 (invalid bytes become U+FFFD).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sbmail {

struct Limits {
    std::size_t max_parts = 100; // MIME entities, the message itself included
    std::size_t max_depth = 10;  // multipart nesting levels
};

// What was wrong with the input but tolerated. Deduplicated, bounded, and
// never holding content: only header names, part numbers, charset names.
class Defects {
public:
    static constexpr std::size_t kMax = 50;
    void add(std::string text);
    const std::vector<std::string>& list() const { return list_; }
    bool has(std::string_view needle) const; // some defect contains `needle`

private:
    std::vector<std::string> list_;
    bool overflow_ = false;
};

struct Mailbox {
    std::string name;    // display name, decoded ("" if none)
    std::string address; // addr-spec as given (no angle brackets)
};

struct Attachment {
    std::string filename;   // as the sender gave it, decoded to UTF-8; "" if none
    std::string media_type; // "type/subtype", lower case
    std::string data;       // decoded bytes
    std::string part;       // MIME part number ("2", "1.3")
};

struct Message {
    std::optional<Mailbox> from;
    std::string subject;              // decoded, whitespace collapsed
    std::optional<std::int64_t> date; // Unix ms, from Date
    std::string message_id;           // without angle brackets; "" if none
    std::vector<std::string> in_reply_to;
    std::vector<std::string> references;
    std::string text;      // the body text chosen, UTF-8, LF line ends
    std::string text_type; // "text/plain", "text/html" (tags stripped) or ""
    std::vector<Attachment> attachments;
    Defects defects;
    std::size_t parts = 0; // MIME entities seen
    // Non-empty when a limit was exceeded: the message must not be used.
    std::string refused;

    // The stable thread id: the first References id, else In-Reply-To, else
    // the message's own Message-ID; "" if none of them.
    std::string thread_id() const;
};

Message parse_message(std::string_view raw, const Limits& limits = {});

// --- building blocks, exposed for tests ----------------------------------

struct Header {
    std::string name;  // as written
    std::string value; // unfolded, leading and trailing whitespace removed, raw bytes
};

// Parses the header section at the start of `data`; `body` receives the
// offset of the body (after the blank line). Tolerates bare LF, continuation
// lines, a missing blank line (the first line that is not a header starts the
// body) and an mbox "From " line.
std::vector<Header> parse_headers(std::string_view data, std::size_t& body, Defects& defects,
                                  const std::string& where = "");

// Header text with RFC 2047 encoded-words decoded (B and Q, any charset
// to_utf8 knows); raw 8-bit text is kept if it is UTF-8 (RFC 6532).
std::string decode_header_text(std::string_view raw, Defects& defects,
                               const std::string& header = "");

// Bytes in `charset` to UTF-8. An empty charset means us-ascii. Unknown
// charsets keep the bytes (as UTF-8 where valid) with a defect.
std::string to_utf8(std::string_view bytes, std::string_view charset, Defects& defects,
                    const std::string& where = "");

// Valid UTF-8 in, the same out; each invalid byte becomes U+FFFD.
// `replaced` (may be null) receives the number of replacements.
std::string sanitize_utf8(std::string_view s, std::size_t* replaced = nullptr);

// Transfer encodings. `clean` (may be null) is set false on malformed input.
std::string decode_base64(std::string_view in, bool* clean = nullptr);
std::string decode_quoted_printable(std::string_view in, bool* clean = nullptr);

// Content-Type / Content-Disposition: "value; name=param; ...". Parameter
// names are lower-cased; RFC 2231 (name*=charset'lang'%XX, continuations
// name*0, name*1*) and RFC 2047 words in values are decoded to UTF-8.
struct HeaderParams {
    std::string value; // lower case
    std::map<std::string, std::string> params;
};
HeaderParams parse_header_params(std::string_view raw, Defects& defects,
                                 const std::string& where = "");

// The first mailbox of an address list (From).
std::optional<Mailbox> parse_mailbox(std::string_view raw, Defects& defects);

// The <ids> of Message-ID, In-Reply-To, References (without brackets).
std::vector<std::string> parse_msg_ids(std::string_view raw);

// RFC 5322 date-time (and common obsolete forms) to Unix milliseconds.
std::optional<std::int64_t> parse_date(std::string_view raw);

// Simple, safe HTML to text: no scripts or styles, tags removed, block
// elements become line breaks, common entities decoded.
std::string html_to_text(std::string_view html);

// A file name safe to create in a directory: no path, only [A-Za-z0-9._-],
// no leading dot, at most 100 bytes, extension kept; from the media type when
// `name` has nothing usable.
std::string safe_filename(std::string_view name, std::string_view media_type);

} // namespace sbmail
