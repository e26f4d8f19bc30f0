#pragma once

// The little JSON the feed client reads from the server: one object per
// message, of which it wants the top-level members only. The whole text is
// checked (RFC 8259 grammar, nesting at most 128 deep), but only top-level
// numbers, strings and booleans are read into values: a record's payload is
// passed on as the text it came in, never built into a tree (that cost more
// than everything else the client does per record). Error texts never quote
// the input (they may be logged).

#include <switchboard/detail/json_record.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace switchboard::feed::json {

class Object {
public:
    std::optional<std::int64_t> get_int(std::string_view key) const {
        const Member* m = find(key);
        if (!m || m->kind != Kind::Int) return std::nullopt;
        return m->i;
    }
    std::optional<std::string> get_string(std::string_view key) const {
        const Member* m = find(key);
        if (!m || m->kind != Kind::String) return std::nullopt;
        return m->s;
    }
    std::optional<bool> get_bool(std::string_view key) const {
        const Member* m = find(key);
        if (!m || m->kind != Kind::Bool) return std::nullopt;
        return m->i != 0;
    }
    bool has_object(std::string_view key) const {
        const Member* m = find(key);
        return m && m->kind == Kind::Object;
    }
    // An element of a top-level array member: its text (in the text
    // parsed), and its members when it is an object (else null; they live
    // as long as this object, unchanged).
    struct Item {
        std::string_view text;
        const Object* members = nullptr;
    };
    // The elements of the top-level array member `key`; nullopt when it is
    // not an array.
    std::optional<std::vector<Item>> get_items(std::string_view key) const {
        const Member* m = find(key);
        if (!m || m->kind != Kind::Array) return std::nullopt;
        std::vector<Item> out(m->item_text.size());
        for (std::size_t k = 0; k < out.size(); ++k) // (an element's text starts with its first token)
            out[k] = {m->item_text[k], m->item_text[k].front() == '{' ? &m->item_members[k] : nullptr};
        return out;
    }

private:
    friend class Reader;
    // Int: an integer within int64; Number: any other number.
    enum class Kind { Null, Bool, Int, Number, String, Object, Array };
    struct Member {
        std::string key;
        Kind kind = Kind::Null;
        std::int64_t i = 0;
        std::string s;
        // Array (a top-level member's): each element's text, and its
        // members (none unless it is an object).
        std::vector<std::string_view> item_text;
        std::vector<Object> item_members;
    };
    // A key given twice: the last one counts.
    const Member* find(std::string_view key) const {
        for (auto m = members_.rbegin(); m != members_.rend(); ++m)
            if (m->key == key) return &*m;
        return nullptr;
    }
    std::vector<Member> members_;
};

class Reader {
public:
    explicit Reader(std::string_view text) : t_(text) {}

    // Reads the text as one value; `top`, when given and the value is an
    // object, receives its members. False unless the text is valid JSON.
    bool read(Object* top, bool& is_object) {
        ws();
        is_object = at_ < t_.size() && t_[at_] == '{';
        if (!value(0, is_object ? top : nullptr, nullptr)) return false;
        ws();
        return at_ == t_.size();
    }

private:
    static constexpr int kMaxDepth = 128;

    void ws() {
        while (at_ < t_.size() && (t_[at_] == ' ' || t_[at_] == '\t' || t_[at_] == '\n' || t_[at_] == '\r')) ++at_;
    }
    bool eat(char c) {
        if (at_ < t_.size() && t_[at_] == c) {
            ++at_;
            return true;
        }
        return false;
    }
    bool literal(std::string_view word) {
        if (t_.substr(at_, word.size()) != word) return false;
        at_ += word.size();
        return true;
    }
    bool hex4(std::uint32_t& v) {
        if (at_ + 4 > t_.size()) return false;
        v = 0;
        for (int k = 0; k < 4; ++k) {
            int h = sb::detail::hex_value(t_[at_++]);
            if (h < 0) return false;
            v = v << 4 | static_cast<std::uint32_t>(h);
        }
        return true;
    }
    // A string at '"'; decoded into `out` when given (a lone surrogate
    // becomes U+FFFD), only checked otherwise.
    bool string(std::string* out) {
        if (!eat('"')) return false;
        for (;;) {
            std::size_t run = at_;
            while (run < t_.size() && t_[run] != '"' && t_[run] != '\\' && static_cast<unsigned char>(t_[run]) >= 0x20)
                ++run;
            if (out) out->append(t_.data() + at_, run - at_);
            at_ = run;
            if (at_ >= t_.size() || static_cast<unsigned char>(t_[at_]) < 0x20) return false;
            if (t_[at_++] == '"') return true;
            if (at_ >= t_.size()) return false;
            char e = t_[at_++];
            char plain = 0;
            switch (e) {
            case '"': plain = '"'; break;
            case '\\': plain = '\\'; break;
            case '/': plain = '/'; break;
            case 'b': plain = '\b'; break;
            case 'f': plain = '\f'; break;
            case 'n': plain = '\n'; break;
            case 'r': plain = '\r'; break;
            case 't': plain = '\t'; break;
            case 'u': {
                std::uint32_t cp;
                if (!hex4(cp)) return false;
                if (cp >= 0xD800 && cp < 0xDC00 && t_.substr(at_, 2) == "\\u") {
                    std::size_t back = at_;
                    at_ += 2;
                    std::uint32_t low;
                    if (!hex4(low)) return false;
                    if (low >= 0xDC00 && low < 0xE000)
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                    else
                        at_ = back; // not a pair: this one is lone, the next read on its own
                }
                if (cp >= 0xD800 && cp < 0xE000) cp = 0xFFFD;
                if (out) sb::detail::append_utf8(*out, cp);
                continue;
            }
            default: return false;
            }
            if (out) out->push_back(plain);
        }
    }
    // A number; `integer` says whether it is an integer within int64.
    bool number(std::int64_t& v, bool& integer) {
        std::size_t start = at_;
        eat('-');
        if (at_ >= t_.size()) return false;
        if (t_[at_] == '0') {
            ++at_;
        } else if (t_[at_] >= '1' && t_[at_] <= '9') {
            while (at_ < t_.size() && t_[at_] >= '0' && t_[at_] <= '9') ++at_;
        } else {
            return false;
        }
        integer = true;
        if (eat('.')) {
            integer = false;
            std::size_t digits = at_;
            while (at_ < t_.size() && t_[at_] >= '0' && t_[at_] <= '9') ++at_;
            if (at_ == digits) return false;
        }
        if (at_ < t_.size() && (t_[at_] == 'e' || t_[at_] == 'E')) {
            integer = false;
            ++at_;
            if (!eat('+')) eat('-');
            std::size_t digits = at_;
            while (at_ < t_.size() && t_[at_] >= '0' && t_[at_] <= '9') ++at_;
            if (at_ == digits) return false;
        }
        if (integer) {
            // Within int64, or not an integer it can give.
            const bool negative = t_[start] == '-';
            const std::uint64_t limit = negative ? std::uint64_t{1} << 63 : (std::uint64_t{1} << 63) - 1;
            std::uint64_t u = 0;
            for (std::size_t k = start + (negative ? 1 : 0); k < at_; ++k) {
                auto d = static_cast<std::uint64_t>(t_[k] - '0');
                if (u > (limit - d) / 10) {
                    integer = false;
                    break;
                }
                u = u * 10 + d;
            }
            if (integer)
                v = negative ? (u == std::uint64_t{1} << 63 ? INT64_MIN : -static_cast<std::int64_t>(u))
                             : static_cast<std::int64_t>(u);
        }
        return true;
    }
    // A value; `members`, when given and it is an object, receives them.
    bool value(int depth, Object* members, Object::Member* into) {
        if (depth > kMaxDepth) return false;
        ws();
        if (at_ >= t_.size()) return false;
        char c = t_[at_];
        if (c == '{') {
            ++at_;
            if (into) into->kind = Object::Kind::Object;
            ws();
            if (eat('}')) return true;
            for (;;) {
                ws();
                Object::Member m;
                if (!string(members ? &m.key : nullptr)) return false;
                ws();
                if (!eat(':')) return false;
                if (!value(depth + 1, nullptr, members ? &m : nullptr)) return false;
                if (members) members->members_.push_back(std::move(m));
                ws();
                if (eat('}')) return true;
                if (!eat(',')) return false;
            }
        }
        if (c == '[') {
            ++at_;
            if (into) into->kind = Object::Kind::Array;
            ws();
            if (eat(']')) return true;
            for (;;) {
                ws();
                // A top-level member's elements are kept: their text, and
                // the members of those that are objects (RECORDS).
                const std::size_t from = at_;
                Object* members = into ? &into->item_members.emplace_back() : nullptr;
                if (!value(depth + 1, members, nullptr)) return false;
                if (into) into->item_text.push_back(t_.substr(from, at_ - from));
                ws();
                if (eat(']')) return true;
                if (!eat(',')) return false;
            }
        }
        if (c == '"') {
            if (into) into->kind = Object::Kind::String;
            return string(into ? &into->s : nullptr);
        }
        if (c == 't' || c == 'f') {
            if (into) {
                into->kind = Object::Kind::Bool;
                into->i = c == 't';
            }
            return literal(c == 't' ? "true" : "false");
        }
        if (c == 'n') return literal("null");
        std::int64_t v = 0;
        bool integer = false;
        if (!number(v, integer)) return false;
        if (into) {
            into->kind = integer ? Object::Kind::Int : Object::Kind::Number;
            into->i = v;
        }
        return true;
    }

    std::string_view t_;
    std::size_t at_ = 0;
};

// nullopt with `error` set unless `text` is one JSON object.
inline std::optional<Object> parse_object(std::string_view text, std::string& error) {
    Object o;
    bool is_object = false;
    if (!Reader(text).read(&o, is_object)) {
        error = "not valid JSON (" + std::to_string(text.size()) + " bytes)";
        return std::nullopt;
    }
    if (!is_object) {
        error = "not a JSON object";
        return std::nullopt;
    }
    return o;
}

// A JSON text on one line: raw CR and LF can only be white space between
// tokens in valid JSON (inside strings they must be escaped), so dropping
// them changes nothing else.
inline std::string one_line(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    // A run at a time: the daemon's JSON has no raw line breaks at all.
    // Each of the two is looked for with memchr (find_first_of("\r\n")
    // calls memchr on the two-byte set for every byte of the text: a fifth
    // of the client's time).
    const char* p = text.data();
    const char* const end = p + text.size();
    auto next = [&](char c) { return static_cast<const char*>(std::memchr(p, c, static_cast<std::size_t>(end - p))); };
    const char* lf = next('\n');
    const char* cr = next('\r');
    for (;;) {
        const char* stop = std::min(lf ? lf : end, cr ? cr : end);
        out.append(p, static_cast<std::size_t>(stop - p));
        if (stop == end) break;
        p = stop + 1;
        if (lf && lf < p) lf = next('\n');
        if (cr && cr < p) cr = next('\r');
    }
    return out;
}

} // namespace switchboard::feed::json
