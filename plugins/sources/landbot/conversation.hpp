// landbot: one customer's open conversation, as the plugin keeps it in
// durable state until it closes, and its JSON form in that state.
//
// Everything in here is already redacted (card data always, NINOs in turn
// text): this is what sits at rest between messages.
#pragma once

#include "delivery.hpp"

#include <switchboard/detail/json_record.hpp>
#include <switchboard/plugin.hpp>

#include <algorithm>
#include <charconv>
#include <climits>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace landbot {

struct Turn {
    std::string id;    // _raw.uuid, or "h:<hash>" for messages without one
    std::string trace; // sentry-trace of the delivery that brought it ("" if none)
    std::int64_t ts_us = 0;
    std::optional<std::int64_t> seq;
    std::uint64_t n = 0; // arrival order within the conversation
    std::string type;
    std::string author; // citizen, bot, agent, system, unknown
    std::optional<std::string> text;
    std::string agent_id, agent_name; // of the author, agents only
    std::string channel;              // web_chat, whatsapp, social
};

// A custom field mapped to a record path (field_map).
struct Mapped {
    std::string path, category;
    bool is_bool = false;
    std::string s;
    bool b = false;
};

struct Conversation {
    std::string cid;
    std::int64_t opened_ms = 0;   // host time of the first message
    std::int64_t last_ms = 0;     // host time of the latest message
    std::int64_t archived_ms = 0; // host time Landbot said "archived" (0: not)
    std::int64_t snap_us = LLONG_MIN; // timestamp of the message the customer snapshot is from
    std::uint64_t next_n = 0;
    std::optional<std::string> name, phone, email, agent_id, channel_name, channel_id, nino;
    std::vector<Mapped> mapped;
    std::vector<std::string> hints;
    std::vector<std::string> defects; // fixed texts, never values
    std::vector<Turn> turns;
    // Dedupe keys of messages already emitted: "u:<id>" / "t:<trace>" with
    // the time (host ms) they may be forgotten.
    std::vector<std::pair<std::string, std::int64_t>> recent;

    bool open() const { return !turns.empty(); }
    void add_defect(const std::string& d) {
        if (std::find(defects.begin(), defects.end(), d) == defects.end() && defects.size() < 32)
            defects.push_back(d);
    }
    // Forgets the open conversation, keeping the dedupe keys.
    void clear_open() {
        Conversation keep;
        keep.cid = cid;
        keep.recent = std::move(recent);
        *this = std::move(keep);
    }
};

// Time then _raw.seq then arrival: the order Landbot's docs ask for.
inline void sort_turns(std::vector<Turn>& turns) {
    std::stable_sort(turns.begin(), turns.end(), [](const Turn& a, const Turn& b) {
        if (a.ts_us != b.ts_us) return a.ts_us < b.ts_us;
        std::int64_t sa = a.seq.value_or(LLONG_MIN), sb = b.seq.value_or(LLONG_MIN);
        if (sa != sb) return sa < sb;
        return a.n < b.n;
    });
}

// --- state JSON -------------------------------------------------------------

inline std::string to_json(const Conversation& c) {
    std::string o;
    o.reserve(256 + c.turns.size() * 256);
    auto str = [&](const char* key, const std::string& v, bool comma = true) {
        if (comma) o.push_back(',');
        o += '"';
        o += key;
        o += "\":";
        sb::detail::append_json_string(o, v);
    };
    auto num = [&](const char* key, std::int64_t v) {
        o += ",\"";
        o += key;
        o += "\":";
        sb::detail::append_json_int(o, v);
    };
    auto opt = [&](const char* key, const std::optional<std::string>& v) {
        if (v) str(key, *v);
    };
    o += "{\"v\":1";
    str("cid", c.cid);
    num("opened", c.opened_ms);
    num("last", c.last_ms);
    num("archived", c.archived_ms);
    if (c.snap_us != LLONG_MIN) num("snap", c.snap_us);
    num("next", static_cast<std::int64_t>(c.next_n));
    opt("name", c.name);
    opt("phone", c.phone);
    opt("email", c.email);
    opt("agent", c.agent_id);
    opt("chname", c.channel_name);
    opt("chid", c.channel_id);
    opt("nino", c.nino);
    o += ",\"map\":[";
    for (std::size_t k = 0; k < c.mapped.size(); ++k) {
        const Mapped& m = c.mapped[k];
        if (k) o.push_back(',');
        o += "{";
        str("p", m.path, false);
        str("c", m.category);
        if (m.is_bool)
            o += m.b ? ",\"b\":true" : ",\"b\":false";
        else
            str("s", m.s);
        o += "}";
    }
    o += "],\"hints\":[";
    for (std::size_t k = 0; k < c.hints.size(); ++k) {
        if (k) o.push_back(',');
        sb::detail::append_json_string(o, c.hints[k]);
    }
    o += "],\"defects\":[";
    for (std::size_t k = 0; k < c.defects.size(); ++k) {
        if (k) o.push_back(',');
        sb::detail::append_json_string(o, c.defects[k]);
    }
    o += "],\"turns\":[";
    for (std::size_t k = 0; k < c.turns.size(); ++k) {
        const Turn& t = c.turns[k];
        if (k) o.push_back(',');
        o += "{";
        str("id", t.id, false);
        if (!t.trace.empty()) str("tr", t.trace);
        num("ts", t.ts_us);
        if (t.seq) num("seq", *t.seq);
        num("n", static_cast<std::int64_t>(t.n));
        str("type", t.type);
        str("au", t.author);
        if (t.text) str("text", *t.text);
        if (!t.agent_id.empty()) str("aid", t.agent_id);
        if (!t.agent_name.empty()) str("an", t.agent_name);
        str("ch", t.channel);
        o += "}";
    }
    o += "],\"recent\":[";
    for (std::size_t k = 0; k < c.recent.size(); ++k) {
        if (k) o.push_back(',');
        o += "{";
        str("k", c.recent[k].first, false);
        num("x", c.recent[k].second);
        o += "}";
    }
    o += "]}";
    return o;
}

namespace detail {

// "turns[12].text" -> ("turns", 12, "text"); false for other shapes.
inline bool split_item(std::string_view path, std::string_view& array, std::size_t& index,
                       std::string_view& rest) {
    std::size_t open = path.find('[');
    if (open == std::string_view::npos) return false;
    std::size_t close = path.find(']', open);
    if (close == std::string_view::npos) return false;
    array = path.substr(0, open);
    auto r = std::from_chars(path.data() + open + 1, path.data() + close, index);
    if (r.ec != std::errc() || r.ptr != path.data() + close) return false;
    rest = path.substr(close + 1);
    if (!rest.empty() && rest[0] == '.') rest.remove_prefix(1);
    return index < 100000;
}

} // namespace detail

// Reads what to_json wrote. False with `error` if it is not that.
inline bool from_json(std::string_view text, Conversation& c, std::string& error) {
    c = Conversation{};
    bool version_ok = false;
    auto grow = [](auto& v, std::size_t i) {
        if (v.size() <= i) v.resize(i + 1);
        return &v[i];
    };
    std::vector<std::pair<std::string, std::int64_t>> recent;
    sb::detail::JsonError jerr;
    bool ok = sb::detail::json_leaves(
        text,
        [&](std::string_view path, const sb_value& v) {
            std::string s = v.type == SB_VALUE_STRING ? std::string(v.str, v.len) : std::string();
            std::int64_t i = v.type == SB_VALUE_INT ? v.i : 0;
            std::string_view array, rest;
            std::size_t idx = 0;
            if (detail::split_item(path, array, idx, rest)) {
                if (array == "turns") {
                    Turn* t = grow(c.turns, idx);
                    if (rest == "id") t->id = s;
                    else if (rest == "tr") t->trace = s;
                    else if (rest == "ts") t->ts_us = i;
                    else if (rest == "seq") t->seq = i;
                    else if (rest == "n") t->n = static_cast<std::uint64_t>(i);
                    else if (rest == "type") t->type = s;
                    else if (rest == "au") t->author = s;
                    else if (rest == "text") t->text = s;
                    else if (rest == "aid") t->agent_id = s;
                    else if (rest == "an") t->agent_name = s;
                    else if (rest == "ch") t->channel = s;
                } else if (array == "map") {
                    Mapped* m = grow(c.mapped, idx);
                    if (rest == "p") m->path = s;
                    else if (rest == "c") m->category = s;
                    else if (rest == "s") m->s = s;
                    else if (rest == "b") {
                        m->is_bool = true;
                        m->b = v.i != 0;
                    }
                } else if (array == "hints") {
                    *grow(c.hints, idx) = s;
                } else if (array == "defects") {
                    *grow(c.defects, idx) = s;
                } else if (array == "recent") {
                    auto* r = grow(recent, idx);
                    if (rest == "k") r->first = s;
                    else if (rest == "x") r->second = i;
                }
                return true;
            }
            if (path == "v") version_ok = v.type == SB_VALUE_INT && v.i == 1;
            else if (path == "cid") c.cid = s;
            else if (path == "opened") c.opened_ms = i;
            else if (path == "last") c.last_ms = i;
            else if (path == "archived") c.archived_ms = i;
            else if (path == "snap") c.snap_us = i;
            else if (path == "next") c.next_n = static_cast<std::uint64_t>(i);
            else if (path == "name") c.name = s;
            else if (path == "phone") c.phone = s;
            else if (path == "email") c.email = s;
            else if (path == "agent") c.agent_id = s;
            else if (path == "chname") c.channel_name = s;
            else if (path == "chid") c.channel_id = s;
            else if (path == "nino") c.nino = s;
            return true;
        },
        jerr);
    if (!ok) {
        error = "conversation state is not JSON: " + jerr.text();
        return false;
    }
    if (!version_ok) {
        error = "conversation state has an unknown version";
        return false;
    }
    if (c.cid.empty()) {
        error = "conversation state has no customer id";
        return false;
    }
    for (const Turn& t : c.turns)
        if (t.id.empty()) {
            error = "conversation state has a turn without an id";
            return false;
        }
    c.recent = std::move(recent);
    return true;
}

// --- the index of customers that have a state key ------------------------

inline std::string index_json(const std::vector<std::string>& cids) {
    std::string o = "[";
    for (std::size_t k = 0; k < cids.size(); ++k) {
        if (k) o.push_back(',');
        sb::detail::append_json_string(o, cids[k]);
    }
    o += "]";
    return o;
}

// The index is a JSON array; json_leaves wants an object, so wrap it.
inline bool index_from_json(std::string_view text, std::vector<std::string>& out) {
    out.clear();
    std::string wrapped = "{\"i\":" + std::string(text) + "}";
    sb::detail::JsonError jerr;
    return sb::detail::json_leaves(
        wrapped,
        [&](std::string_view, const sb_value& v) {
            if (v.type == SB_VALUE_STRING) out.emplace_back(v.str, v.len);
            return true;
        },
        jerr);
}

} // namespace landbot
