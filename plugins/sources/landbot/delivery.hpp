// landbot: reading one webhook delivery (a Platform MessageHook POST or an
// APIchat webhook POST) into messages. Pure functions, no host calls, so
// tests can drive them directly.
//
// The body is walked once by the SDK's strict JSON reader (json_leaves):
// each scalar arrives with its canonical path ("messages[0].customer.id"),
// keys outside [A-Za-z0-9_-] already mapped to '_' runs. Nothing here logs or
// keeps the body; error texts never quote input.
#pragma once

#include "redact.hpp"

#include <switchboard/detail/json_record.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace landbot {

// A JSON scalar, copied out of the parser.
struct Val {
    sb_value_type type = SB_VALUE_NULL;
    std::string s;
    std::int64_t i = 0;
    double f = 0;

    bool is_string() const { return type == SB_VALUE_STRING; }
    bool is_null() const { return type == SB_VALUE_NULL; }
    // Strings as they are, integers in decimal, others nullopt.
    std::optional<std::string> text() const {
        if (type == SB_VALUE_STRING) return s;
        if (type == SB_VALUE_INT) return std::to_string(i);
        return std::nullopt;
    }
};

// A custom field value after undoing Landbot's type mangling.
struct Custom {
    enum class Kind { Null, String, Bool, List } kind = Kind::Null;
    std::string s;
    bool b = false;
    std::vector<std::string> list;
};

// Landbot stores custom fields through Python and sends some of them back as
// Python reprs: a list as "['a', 'b']", booleans as "True"/"False", None as
// "None". Anything that does not parse as such stays the string it was.
inline Custom demangle(const Val& v) {
    Custom c;
    switch (v.type) {
    case SB_VALUE_NULL: return c;
    case SB_VALUE_BOOL:
        c.kind = Custom::Kind::Bool;
        c.b = v.i != 0;
        return c;
    case SB_VALUE_INT:
        c.kind = Custom::Kind::String;
        c.s = std::to_string(v.i);
        return c;
    case SB_VALUE_FLOAT: {
        c.kind = Custom::Kind::String;
        std::string out;
        sb::detail::append_json_double(out, v.f);
        c.s = out;
        return c;
    }
    case SB_VALUE_STRING: break;
    }
    std::string_view t = v.s;
    while (!t.empty() && (t.front() == ' ' || t.front() == '\t')) t.remove_prefix(1);
    while (!t.empty() && (t.back() == ' ' || t.back() == '\t')) t.remove_suffix(1);
    if (t.empty() || t == "None" || t == "null") return c;
    if (t == "True" || t == "true" || t == "False" || t == "false") {
        c.kind = Custom::Kind::Bool;
        c.b = t[0] == 'T' || t[0] == 't';
        return c;
    }
    if (t.size() >= 2 && t.front() == '[' && t.back() == ']') {
        // Python or JSON list of strings (quoted with ' or "), numbers, bools.
        std::vector<std::string> items;
        std::size_t p = 1, end = t.size() - 1;
        bool ok = true;
        auto skip_ws = [&] {
            while (p < end && (t[p] == ' ' || t[p] == '\t')) ++p;
        };
        skip_ws();
        while (ok && p < end) {
            std::string item;
            if (t[p] == '\'' || t[p] == '"') {
                char q = t[p++];
                bool closed = false;
                while (p < end) {
                    char ch = t[p++];
                    if (ch == '\\' && p < end) {
                        item.push_back(t[p++]);
                    } else if (ch == q) {
                        closed = true;
                        break;
                    } else {
                        item.push_back(ch);
                    }
                }
                ok = closed;
            } else {
                while (p < end && t[p] != ',') item.push_back(t[p++]);
                while (!item.empty() && item.back() == ' ') item.pop_back();
                ok = !item.empty();
            }
            skip_ws();
            if (p < end) {
                if (t[p] != ',') ok = false;
                ++p;
                skip_ws();
            }
            if (ok && !item.empty() && item != "None") items.push_back(std::move(item));
        }
        if (ok) {
            if (items.empty()) return c;
            c.kind = Custom::Kind::List;
            c.list = std::move(items);
            return c;
        }
    }
    c.kind = Custom::Kind::String;
    c.s = std::string(t);
    return c;
}

// The values of a Custom as strings (a list's elements; a bool as
// "true"/"false"; nothing for null).
inline std::vector<std::string> custom_values(const Custom& c) {
    switch (c.kind) {
    case Custom::Kind::Null: return {};
    case Custom::Kind::String: return {c.s};
    case Custom::Kind::Bool: return {c.b ? "true" : "false"};
    case Custom::Kind::List: return c.list;
    }
    return {};
}

// Customer keys Landbot itself sends; every other key directly on
// `customer` is a custom (or hidden) field of the bot.
inline bool is_builtin_customer_key(std::string_view k) {
    static constexpr std::string_view keys[] = {
        "id",  "agent_id", "archived",     "name",  "phone",        "email",
        "country", "url",  "webchat_type", "is_external", "token", "register_date"};
    return std::find(std::begin(keys), std::end(keys), k) != std::end(keys);
}

// One message of a delivery, before the plugin applies its configuration.
struct Message {
    std::size_t index = 0; // position in messages[]
    std::string customer_id;
    std::optional<std::string> uuid;  // _raw.uuid
    std::optional<std::int64_t> ts_us; // timestamp, microseconds
    std::optional<std::int64_t> seq;   // _raw.seq
    std::string type;                  // "text", "location", ... ("unknown" if absent)
    std::string author;                // citizen, bot, agent, system, unknown
    std::optional<std::string> text;   // data.body (Platform) / message (APIchat)
    std::optional<std::string> sender_id, sender_name; // the author's, for agents
    std::optional<std::string> channel_type, channel_name, channel_id;
    // Customer snapshot carried by the message.
    std::optional<std::string> name, phone, email, agent_id;
    std::optional<bool> archived;
    std::vector<std::pair<std::string, Val>> custom;   // key -> scalar
    std::vector<std::pair<std::string, Custom>> lists; // key -> JSON array
    std::uint32_t nested_custom = 0; // custom fields that were objects (ignored)
};

struct Delivery {
    bool apichat = false;
    std::vector<Message> messages;
    // Messages that could not be used, each "messages[K]: why" (no values).
    std::vector<std::string> problems;
};

namespace detail {

inline std::string author_from(std::string_view t) {
    if (t == "customer" || t == "user") return "citizen";
    if (t == "bot") return "bot";
    if (t == "agent" || t == "human") return "agent";
    if (t == "sys" || t == "system") return "system";
    return "unknown";
}

// Landbot ids are numbers; accept decimal ids sent as strings too, and
// nothing that could smuggle a path into the erase URL.
inline std::optional<std::string> id_from(const Val& v) {
    if (v.type == SB_VALUE_INT) return v.i >= 0 ? std::optional(std::to_string(v.i)) : std::nullopt;
    if (v.type != SB_VALUE_STRING || v.s.empty() || v.s.size() > 64) return std::nullopt;
    for (char c : v.s)
        if (!is_alnum(c) && c != '_' && c != '-') return std::nullopt;
    return v.s;
}

inline std::optional<std::int64_t> timestamp_us(const Val& v) {
    double secs = 0;
    if (v.type == SB_VALUE_INT) {
        secs = static_cast<double>(v.i);
    } else if (v.type == SB_VALUE_FLOAT) {
        secs = v.f;
    } else if (v.type == SB_VALUE_STRING) {
        auto r = std::from_chars(v.s.data(), v.s.data() + v.s.size(), secs);
        if (r.ec != std::errc() || r.ptr != v.s.data() + v.s.size()) return std::nullopt;
    } else {
        return std::nullopt;
    }
    // Seconds since 1970, between 2001 and 2286: anything else is not a
    // Landbot timestamp (a millisecond value would be off by 1000).
    if (!std::isfinite(secs) || secs < 1e9 || secs >= 1e10) return std::nullopt;
    return static_cast<std::int64_t>(std::llround(secs * 1e6));
}

} // namespace detail

// Reads `body`. False with `error` (a fixed text with a byte offset) if it is
// not JSON or has neither shape; otherwise the usable messages are in
// `out.messages` and the unusable ones are named in `out.problems`.
inline bool parse_delivery(std::string_view body, Delivery& out, std::string& error) {
    using Fields = std::vector<std::pair<std::string, Val>>;
    std::map<std::size_t, Fields> per_message;
    Fields top; // APIchat: customer.*, agent.*, channel.*
    bool bad_messages_shape = false;
    sb::detail::JsonError jerr;
    bool ok = sb::detail::json_leaves(
        body,
        [&](std::string_view path, const sb_value& v) {
            Val val;
            val.type = v.type;
            if (v.type == SB_VALUE_STRING) val.s.assign(v.str, v.len);
            val.i = v.i;
            val.f = v.f;
            if (path.substr(0, 9) == "messages[") {
                std::size_t close = path.find(']');
                std::size_t k = 0;
                auto r = std::from_chars(path.data() + 9, path.data() + close, k);
                if (r.ec != std::errc() || close == std::string_view::npos) return true;
                std::string_view rest = path.substr(close + 1);
                if (!rest.empty() && rest[0] == '.') rest.remove_prefix(1);
                per_message[k].emplace_back(std::string(rest), std::move(val));
            } else if (path.substr(0, 8) == "messages") {
                bad_messages_shape = true; // "messages" is not an array
            } else {
                top.emplace_back(std::string(path), std::move(val));
            }
            return true;
        },
        jerr);
    if (!ok) {
        error = "not JSON: " + jerr.text();
        return false;
    }
    if (bad_messages_shape) {
        error = "\"messages\" is not an array of objects";
        return false;
    }
    if (per_message.empty()) {
        error = "no messages";
        return false;
    }
    auto top_has = [&](std::string_view prefix) {
        for (const auto& [p, v] : top)
            if (p.compare(0, prefix.size(), prefix) == 0) return true;
        return false;
    };
    // APIchat puts customer (and agent, channel) at the top; Platform hooks
    // put them on each message.
    out.apichat = top_has("customer.");
    out.messages.clear();
    out.problems.clear();

    for (auto& [k, fields] : per_message) {
        const std::string where = "messages[" + std::to_string(k) + "]";
        Message m;
        m.index = k;
        std::optional<std::string> raw_author, raw_message;
        std::optional<Val> customer_id;
        bool has_channel_type = false;
        auto take_customer = [&](const std::string& key, const Val& v) {
            // key is the path below "customer."
            if (key == "id") {
                customer_id = v;
            } else if (key == "name") {
                if (v.is_string() && !v.s.empty()) m.name = v.s;
            } else if (key == "phone") {
                if (auto t = v.text(); t && !t->empty()) m.phone = *t;
            } else if (key == "email") {
                if (v.is_string() && !v.s.empty()) m.email = v.s;
            } else if (key == "agent_id") {
                if (auto t = v.text(); t && !t->empty()) m.agent_id = *t;
            } else if (key == "archived") {
                if (v.type == SB_VALUE_BOOL) m.archived = v.i != 0;
                else if (v.is_string()) {
                    Custom c = demangle(v);
                    if (c.kind == Custom::Kind::Bool) m.archived = c.b;
                }
            } else if (is_builtin_customer_key(key)) {
                // country, url, webchat_type, is_external, token,
                // register_date: not needed, not kept (the APIchat token is
                // a credential).
            } else {
                std::size_t cut = key.find_first_of(".[");
                if (cut == std::string::npos) {
                    m.custom.emplace_back(key, v);
                } else if (key[cut] == '[' && key.find('.', cut) == std::string::npos) {
                    // A real JSON list: gather its scalar elements.
                    std::string name = key.substr(0, cut);
                    auto it = std::find_if(m.lists.begin(), m.lists.end(),
                                           [&](const auto& e) { return e.first == name; });
                    if (it == m.lists.end()) {
                        m.lists.emplace_back(name, Custom{Custom::Kind::List, {}, false, {}});
                        it = m.lists.end() - 1;
                    }
                    for (auto& s : custom_values(demangle(v))) it->second.list.push_back(s);
                } else {
                    ++m.nested_custom;
                }
            }
        };
        for (const auto& [path, v] : fields) {
            std::string_view p = path;
            if (p == "type") {
                if (v.is_string() && !v.s.empty()) m.type = v.s.substr(0, 64);
            } else if (p == "timestamp") {
                m.ts_us = detail::timestamp_us(v);
            } else if (p == "data.body") {
                if (v.is_string()) m.text = v.s;
            } else if (p == "message") { // APIchat's flat text
                if (v.is_string()) raw_message = v.s;
            } else if (p == "sender.type") {
                if (v.is_string()) m.author = detail::author_from(v.s);
            } else if (p == "sender.id") {
                m.sender_id = v.text();
            } else if (p == "sender.name") {
                if (v.is_string() && !v.s.empty()) m.sender_name = v.s;
            } else if (p == "_raw.uuid") {
                if (v.is_string() && !v.s.empty() && v.s.size() <= 128) m.uuid = v.s;
            } else if (p == "_raw.seq") {
                if (v.type == SB_VALUE_INT) m.seq = v.i;
            } else if (p == "_raw.author_type") {
                if (v.is_string()) raw_author = v.s;
            } else if (p == "_raw.message") {
                if (v.is_string() && !raw_message) raw_message = v.s;
            } else if (p == "channel.type") {
                has_channel_type = true;
                if (v.is_string()) m.channel_type = v.s.substr(0, 64);
            } else if (p == "channel.name") {
                if (v.is_string() && !v.s.empty()) m.channel_name = v.s;
            } else if (p == "channel.id") {
                m.channel_id = v.text();
            } else if (p.substr(0, 9) == "customer.") {
                take_customer(std::string(p.substr(9)), v);
            }
        }
        if (out.apichat) {
            std::optional<std::string> agent_type, agent_id, agent_name;
            for (const auto& [path, v] : top) {
                std::string_view p = path;
                if (p.substr(0, 9) == "customer.") take_customer(std::string(p.substr(9)), v);
                else if (p == "agent.type" && v.is_string()) agent_type = v.s;
                else if (p == "agent.id") agent_id = v.text();
                else if (p == "agent.name" && v.is_string()) agent_name = v.s;
                else if (p == "channel.name" && v.is_string() && !v.s.empty()) m.channel_name = v.s;
                else if (p == "channel.id") m.channel_id = v.text();
            }
            // An APIchat webhook carries what the bot or an agent sends to
            // the custom channel; its author is the top-level agent.
            if (m.author.empty()) m.author = agent_type ? detail::author_from(*agent_type) : "bot";
            if (m.author == "agent") {
                if (!m.sender_id) m.sender_id = agent_id;
                if (!m.sender_name) m.sender_name = agent_name;
            }
        }
        if (m.author.empty() || m.author == "unknown")
            m.author = raw_author ? detail::author_from(*raw_author) : "unknown";
        if (!m.text && raw_message) m.text = raw_message;
        if (m.type.empty()) m.type = m.text ? "text" : "unknown";
        if (has_channel_type && !m.channel_type) m.channel_type = "";
        auto cid = customer_id ? detail::id_from(*customer_id) : std::nullopt;
        if (!cid) {
            out.problems.push_back(where + ": no usable customer.id");
            continue;
        }
        m.customer_id = *cid;
        out.messages.push_back(std::move(m));
    }
    return true;
}

} // namespace landbot
