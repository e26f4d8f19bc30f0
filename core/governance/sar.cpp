#include "governance/sar.hpp"

#include "audit/audit_log.hpp"
#include "governance/holds.hpp"
#include "governance/identifiers.hpp"
#include "governance/json_out.hpp"
#include "pipeline/leaf_text.hpp"
#include "store/codec.hpp"

#include <switchboard/detail/abi.hpp>

#include <algorithm>
#include <charconv>
#include <map>
#include <set>
#include <sstream>

namespace switchboard::governance {

namespace {

// Names compare as sets of words: "Jane Smith" is "Smith, Jane".
std::string name_key(std::string_view text) {
    std::vector<std::string> words;
    std::istringstream in(normal_name(text));
    for (std::string w; in >> w;) words.push_back(w);
    std::sort(words.begin(), words.end());
    std::string out;
    for (const auto& w : words) out += (out.empty() ? "" : " ") + w;
    return out;
}

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

bool is_postcode_category(std::string_view c) { return c == "contact.postcode" || c == "contact.address.postcode"; }

// References that identify a person's business with the council; a property
// (uprn) or an evidence receipt does not identify the person.
bool is_person_reference(std::string_view c) {
    return starts_with(c, "reference.") && c != "reference.uprn" && c != "reference.evidence";
}

std::string parent_of(std::string_view path) {
    auto dot = path.rfind('.');
    return dot == std::string_view::npos ? std::string() : std::string(path.substr(0, dot));
}

std::string leaf_value(const sb::detail::Leaf& leaf) {
    char buf[32];
    auto t = pipeline::leaf_text(leaf, buf);
    return t ? std::string(*t) : std::string();
}

std::string html(std::string_view s) {
    std::string out;
    for (char c : s) {
        switch (c) {
        case '&': out += "&amp;"; break;
        case '<': out += "&lt;"; break;
        case '>': out += "&gt;"; break;
        case '"': out += "&quot;"; break;
        case '\'': out += "&#39;"; break;
        default: out.push_back(c);
        }
    }
    return out;
}

std::string time_text(std::int64_t t) { return t ? sb::detail::format_time(t) : "-"; }

} // namespace

bool SubjectQuery::normalise(std::string& error, Naming naming, std::string_view within) {
    const bool cli = naming == Naming::cli_options;
    // "--landbot-id" on the command line, "subject.landbot_id" in a JSON body.
    auto label = [&](std::string_view key) {
        if (!cli) return std::string(within) + std::string(key);
        std::string option = "--" + std::string(key);
        std::replace(option.begin(), option.end(), '_', '-');
        return option;
    };
    auto norm = [&](std::string& v, std::string (*fn)(std::string_view), const char* key, const char* what) {
        if (v.empty()) return true;
        std::string n = fn(v);
        if (n.empty()) {
            error = cli ? label(key) + " is not a valid " + label(key).substr(2)
                        : label(key) + ": not a valid " + what;
            return false;
        }
        v = n;
        return true;
    };
    if (!norm(phone, normal_phone, "phone", "phone number") || !norm(email, normal_email, "email", "e-mail address") ||
        !norm(nino, normal_nino, "nino", "National Insurance number") ||
        !norm(postcode, normal_postcode, "postcode", "UK postcode") ||
        !norm(reference, normal_reference, "reference", "reference") ||
        !norm(landbot_id, normal_reference, "landbot_id", "Landbot customer id"))
        return false;
    if (!name.empty()) {
        name = name_key(name);
        if (name.empty()) {
            error = label("name") + (cli ? " has no letters" : ": has no letters");
            return false;
        }
    }
    bool strong = !phone.empty() || !email.empty() || !nino.empty() || !reference.empty() || !landbot_id.empty();
    if (!name.empty() != !postcode.empty() && !strong) {
        const char* given = name.empty() ? "postcode" : "name";
        error = cli ? "a name or a postcode alone matches other people: give --name with --postcode, or a "
                      "phone, e-mail, NINO, Landbot id or reference"
                    : label(given) + ": a name or a postcode alone matches other people: give name with "
                      "postcode, or a phone, email, nino, landbot_id or reference";
        return false;
    }
    if (!strong && name.empty()) {
        std::string where(within.substr(0, within.empty() ? 0 : within.size() - 1));
        error = cli ? "give an identifier: --name with --postcode, --phone, --email, --nino, --landbot-id or "
                      "--reference"
                    : (where.empty() ? std::string("body") : where) +
                          ": give an identifier: name with postcode, phone, email, nino, landbot_id or reference";
        return false;
    }
    return true;
}

std::string* SubjectQuery::field(std::string_view key) {
    if (key == "name") return &name;
    if (key == "postcode") return &postcode;
    if (key == "phone") return &phone;
    if (key == "email") return &email;
    if (key == "nino") return &nino;
    if (key == "landbot_id") return &landbot_id;
    if (key == "reference") return &reference;
    return nullptr;
}

std::string SubjectQuery::kinds() const {
    std::string out;
    auto add = [&](const std::string& v, const char* k) {
        if (!v.empty()) out += (out.empty() ? "" : ", ") + std::string(k);
    };
    add(name, "name");
    add(postcode, "postcode");
    add(phone, "phone");
    add(email, "email");
    add(nino, "nino");
    add(landbot_id, "landbot-id");
    add(reference, "reference");
    return out;
}

std::string sar_id(std::int64_t now) {
    std::string t = sb::detail::format_time(now); // 2026-11-28T17:40:12.123Z
    std::string out = "SAR-";
    for (std::size_t i = 0; i < t.size() && i < 19; ++i)
        if (t[i] != '-' && t[i] != ':') out.push_back(t[i]);
    return out + "Z";
}

bool hold_found(store::Store& store, SarResult& result, const std::string& by, std::int64_t now,
                std::string& error) {
    if (result.records.empty()) return true;
    HoldRequest h;
    for (const auto& r : result.records) h.records.push_back(r.id);
    h.reason = "subject access request " + result.id;
    h.by = by;
    h.sar = result.id;
    auto id = place_hold(store, h, now, error);
    if (!id) return false;
    result.hold = *id;
    for (auto& r : result.records) r.held_by.push_back(*id);
    return true;
}

void apply_audit(std::vector<FoundRecord>& records, const std::vector<audit::Record>& entries) {
    std::map<std::string, FoundRecord*, std::less<>> by_id;
    for (auto& f : records) by_id[f.id] = &f;
    auto number = [](const std::string& text) -> std::uint64_t {
        std::uint64_t v = 0;
        auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
        return ec == std::errc() && p == text.data() + text.size() ? v : 0;
    };
    for (const auto& e : entries) {
        auto attrs = audit::parse_detail(e.detail);
        auto attr = [&](std::string_view k) {
            for (const auto& [key, value] : attrs)
                if (key == k) return value;
            return std::string();
        };
        if (e.kind == "deliver" && e.record_id.empty()) {
            // A run of seqs delivered together ("seqs=F-L"): each is the
            // disclosure to that destination with that seq, whoever's.
            const std::string dest = attr("destination");
            std::uint64_t first = 0, last = 0;
            if (!audit::parse_seq_run(attr("seqs"), first, last)) continue;
            for (auto& f : records)
                for (auto& d : f.disclosures)
                    if (d.destination == dest && d.seq >= first && d.seq <= last && !d.delivered_at)
                        d.delivered_at = e.ts_ms;
            continue;
        }
        auto it = by_id.find(e.record_id);
        if (it == by_id.end()) continue;
        auto& list = it->second->disclosures;
        if (e.kind == "disclose") {
            Disclosure d;
            d.destination = attr("destination");
            d.seq = number(attr("seq"));
            d.purpose = attr("purpose");
            d.profile = attr("profile");
            d.lawful_basis = attr("lawful_basis");
            d.route = attr("route");
            d.disclosed_at = e.ts_ms;
            std::string sent = attr("sent");
            std::size_t start = 0;
            while (start < sent.size()) {
                auto comma = sent.find(',', start);
                std::string item = sent.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
                auto colon = item.rfind(':');
                if (colon == std::string::npos) d.fields.emplace_back(item, "");
                else d.fields.emplace_back(item.substr(0, colon), item.substr(colon + 1));
                if (comma == std::string::npos) break;
                start = comma + 1;
            }
            list.push_back(std::move(d));
        } else if (e.kind == "deliver") {
            // Its own entry: the disclosure with its seq (or, in a trail
            // without seqs, the first to that destination not delivered).
            const std::string dest = attr("destination");
            const std::uint64_t seq = number(attr("seq"));
            for (auto& d : list)
                if (d.destination == dest && !d.delivered_at && (!seq || !d.seq || d.seq == seq)) {
                    d.delivered_at = e.ts_ms;
                    break;
                }
        }
    }
}

SarResult find_subject(store::Store& store, const SubjectQuery& q, const std::filesystem::path& audit_dir,
                       std::int64_t now) {
    SarResult result;
    result.opened_at = now;
    result.id = sar_id(now);
    result.query_kinds = q.kinds();
    for (const auto& chunk : store.chunks_expiring_before(INT64_MAX, SIZE_MAX >> 1)) {
        auto body = store.chunk_body(chunk.id);
        if (!body) continue; // deleted since listed
        ++result.chunks_scanned;
        store::ChunkHeads table;
        if (!table.read(*body)) {
            ++result.unreadable_chunks;
            continue;
        }
        std::size_t pos = table.first;
        while (pos < body->size()) {
            sb_record r;
            if (!store::decode(*body, pos, r, nullptr, &table)) {
                ++result.unreadable_chunks;
                break;
            }
            ++result.records_scanned;
            std::set<std::string> matched;
            bool name_hit = false, postcode_hit = false;
            std::map<std::string, std::pair<std::string, std::string>> split_names; // parent -> first, last
            for (const auto& leaf : r.data.leaves()) {
                const std::string& c = leaf.category();
                std::string v = leaf_value(leaf);
                if (v.empty()) continue;
                if (c == "contact.phone" && !q.phone.empty() && normal_phone(v) == q.phone) matched.insert(c);
                else if (c == "contact.email" && !q.email.empty() && normal_email(v) == q.email) matched.insert(c);
                else if (c == "identifier.nino" && !q.nino.empty() && nino_matches(normal_nino(v), q.nino))
                    matched.insert(c);
                else if (is_person_reference(c) && !q.reference.empty() && normal_reference(v) == q.reference)
                    matched.insert(c);
                else if (c == "vendor.id" && leaf.path() == "vendor.customer_id" && !q.landbot_id.empty() &&
                         normal_reference(v) == q.landbot_id)
                    matched.insert("landbot customer id");
                else if (is_postcode_category(c) && !q.postcode.empty() && normal_postcode(v) == q.postcode)
                    postcode_hit = true;
                else if (c == "identity.name" && !q.name.empty()) {
                    if (name_key(v) == q.name) name_hit = true;
                    auto leafname = leaf.path().substr(leaf.path().rfind('.') + 1);
                    if (leafname == "first_name") split_names[parent_of(leaf.path())].first = v;
                    if (leafname == "last_name") split_names[parent_of(leaf.path())].second = v;
                }
            }
            for (const auto& [parent, fl] : split_names)
                if (!fl.first.empty() && !fl.second.empty() && name_key(fl.first + " " + fl.second) == q.name)
                    name_hit = true;
            if (!q.landbot_id.empty())
                if (const char* s = r.data.meta("subject_ref"); s && normal_reference(s) == q.landbot_id)
                    matched.insert("landbot customer id");
            if (name_hit && postcode_hit) matched.insert("identity.name+contact.postcode");
            if (matched.empty()) continue;

            FoundRecord f;
            auto meta = [&](const char* k) {
                const char* v = r.data.meta(k);
                return std::string(v ? v : "");
            };
            f.id = meta("id");
            f.source = meta("source");
            f.channel = meta("channel");
            f.category = meta("category");
            f.external_id = meta("external_id");
            f.received_at = sb::detail::parse_time(meta("received_at")).value_or(0);
            f.occurred_at = sb::detail::parse_time(meta("occurred_at")).value_or(0);
            f.expires_at = sb::detail::parse_time(meta("expires_at")).value_or(chunk.expires_at);
            f.matched_on.assign(matched.begin(), matched.end());
            for (const auto& leaf : r.data.leaves()) {
                // Staff names and ids are another person's data.
                if (starts_with(leaf.category(), "staff.")) f.withheld.push_back(leaf.path());
                else f.fields.emplace_back(leaf.path(), leaf.category(), leaf_value(leaf));
            }
            for (const auto& a : r.data.attachments()) f.attachments.emplace_back(a.name, a.media_type);
            result.records.push_back(std::move(f));
        }
    }
    std::map<std::string, FoundRecord*, std::less<>> by_id;
    for (auto& f : result.records) by_id[f.id] = &f;
    for (const auto& h : store.held_records(now))
        if (auto it = by_id.find(h.record_id); it != by_id.end()) it->second->held_by.push_back(h.hold);
    if (!by_id.empty() && std::filesystem::exists(audit_dir)) {
        std::set<std::string, std::less<>> ids;
        for (const auto& [id, f] : by_id) ids.insert(id);
        apply_audit(result.records, audit::AuditLog::read_records(audit_dir, ids, true));
    }
    return result;
}

std::string sar_json(const SarResult& r) {
    std::string o = "{\n  \"sar\": ";
    json_str(o, r.id);
    o += ",\n  \"opened_at\": ";
    json_time(o, r.opened_at);
    o += ",\n  \"searched_by\": ";
    json_str(o, r.query_kinds);
    o += ",\n  \"hold\": " + (r.hold ? std::to_string(r.hold) : std::string("null"));
    o += ",\n  \"scanned\": {\"chunks\": " + std::to_string(r.chunks_scanned) +
         ", \"records\": " + std::to_string(r.records_scanned) +
         ", \"unreadable_chunks\": " + std::to_string(r.unreadable_chunks) + "}";
    o += ",\n  \"records\": [";
    bool first_record = true;
    for (const auto& f : r.records) {
        o += first_record ? "\n    {" : ",\n    {";
        first_record = false;
        o += "\"id\": ";
        json_str(o, f.id);
        o += ", \"source\": ";
        json_str(o, f.source);
        o += ", \"channel\": ";
        json_str(o, f.channel);
        o += ", \"category\": ";
        json_str(o, f.category);
        o += ", \"external_id\": ";
        json_str(o, f.external_id);
        o += ",\n     \"occurred_at\": ";
        json_time(o, f.occurred_at);
        o += ", \"received_at\": ";
        json_time(o, f.received_at);
        o += ", \"expires_at\": ";
        json_time(o, f.expires_at);
        o += ", \"held\": ";
        o += f.held_by.empty() ? "false" : "true";
        o += ", \"holds\": [";
        for (std::size_t i = 0; i < f.held_by.size(); ++i) o += (i ? ", " : "") + std::to_string(f.held_by[i]);
        o += "],\n     \"deletion\": ";
        json_str(o, f.held_by.empty() ? "deleted at expires_at, everywhere (store, outbox, source system, departments)"
                                      : "kept past expires_at while held; deleted at the first sweep after the hold ends");
        o += ",\n     \"matched_on\": [";
        for (std::size_t i = 0; i < f.matched_on.size(); ++i) {
            if (i) o += ", ";
            json_str(o, f.matched_on[i]);
        }
        o += "],\n     \"fields\": [";
        for (std::size_t i = 0; i < f.fields.size(); ++i) {
            const auto& [path, category, value] = f.fields[i];
            o += i ? ",\n       {\"path\": " : "\n       {\"path\": ";
            json_str(o, path);
            o += ", \"category\": ";
            json_str(o, category);
            o += ", \"value\": ";
            json_str(o, value);
            o += "}";
        }
        o += "],\n     \"withheld_third_party\": [";
        for (std::size_t i = 0; i < f.withheld.size(); ++i) {
            if (i) o += ", ";
            json_str(o, f.withheld[i]);
        }
        o += "],\n     \"attachments\": [";
        for (std::size_t i = 0; i < f.attachments.size(); ++i) {
            o += i ? ", {\"name\": " : "{\"name\": ";
            json_str(o, f.attachments[i].first);
            o += ", \"media_type\": ";
            json_str(o, f.attachments[i].second);
            o += "}";
        }
        o += "],\n     \"disclosures\": [";
        for (std::size_t i = 0; i < f.disclosures.size(); ++i) {
            const auto& d = f.disclosures[i];
            o += i ? ",\n       {\"department\": " : "\n       {\"department\": ";
            json_str(o, d.destination);
            o += ", \"purpose\": ";
            json_str(o, d.purpose);
            if (!d.lawful_basis.empty()) {
                o += ", \"lawful_basis\": ";
                json_str(o, d.lawful_basis);
            }
            o += ", \"profile\": ";
            json_str(o, d.profile);
            o += ", \"queued_at\": ";
            json_time(o, d.disclosed_at);
            o += ", \"delivered_at\": ";
            json_time(o, d.delivered_at);
            o += ", \"fields\": [";
            for (std::size_t k = 0; k < d.fields.size(); ++k) {
                o += k ? ", {\"path\": " : "{\"path\": ";
                json_str(o, d.fields[k].first);
                o += ", \"as\": ";
                json_str(o, d.fields[k].second);
                o += "}";
            }
            o += "]}";
        }
        o += "]}";
    }
    o += r.records.empty() ? "]\n}\n" : "\n  ]\n}\n";
    return o;
}

std::string sar_html(const SarResult& r) {
    std::string o = R"(<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Subject access report )" +
                    html(r.id) + R"(</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;max-width:60em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;border-top:1px solid #ccc;padding-top:1em}
table{border-collapse:collapse;margin:.5em 0 1em}td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f3f3f3}.held{color:#a40}.note{color:#555;font-size:.9em}
</style></head><body>
<h1>Subject access report )" + html(r.id) + R"(</h1>
<p>Prepared )" + html(time_text(r.opened_at)) + " from Switchboard, the council's contact routing system. Searched by: " +
                    html(r.query_kinds) + ". " + std::to_string(r.records.size()) + " record(s) found among " +
                    std::to_string(r.records_scanned) + " held.";
    if (r.hold) o += " <span class=\"held\">Hold " + std::to_string(r.hold) + " keeps these records until the request is closed.</span>";
    o += "</p>\n<p class=\"note\">Each record is one contact you made with the council. Switchboard passes the "
         "parts each department needs to that department and deletes every copy when the record expires.</p>\n";
    for (const auto& f : r.records) {
        o += "<h2>Record " + html(f.id) + "</h2>\n<table>\n";
        auto row = [&](const char* k, const std::string& v) { o += "<tr><th>" + std::string(k) + "</th><td>" + html(v) + "</td></tr>\n"; };
        row("Received from", f.source + (f.channel.empty() ? "" : " (" + f.channel + ")"));
        row("About", f.category);
        row("Contact made", time_text(f.occurred_at));
        row("Received", time_text(f.received_at));
        std::string del = time_text(f.expires_at);
        if (!f.held_by.empty()) {
            std::string ids;
            for (auto h : f.held_by) ids += (ids.empty() ? "" : ", ") + std::to_string(h);
            del += " (on hold " + ids + ": kept until the hold ends, then deleted)";
        }
        row("Deleted", del);
        o += "</table>\n<h3>What we hold</h3>\n<table><tr><th>field</th><th>kind</th><th>value</th></tr>\n";
        for (const auto& [path, category, value] : f.fields)
            o += "<tr><td>" + html(path) + "</td><td>" + html(category) + "</td><td>" + html(value) + "</td></tr>\n";
        o += "</table>\n";
        if (!f.withheld.empty()) {
            o += "<p class=\"note\">Withheld as another person's data (council staff): ";
            for (std::size_t i = 0; i < f.withheld.size(); ++i) o += (i ? ", " : "") + html(f.withheld[i]);
            o += "</p>\n";
        }
        if (!f.attachments.empty()) {
            o += "<p>Attachments: ";
            for (std::size_t i = 0; i < f.attachments.size(); ++i)
                o += (i ? ", " : "") + html(f.attachments[i].first) + " (" + html(f.attachments[i].second) + ")";
            o += "</p>\n";
        }
        o += "<h3>Who received it</h3>\n";
        if (f.disclosures.empty()) o += "<p>No department received this record.</p>\n";
        else {
            o += "<table><tr><th>department</th><th>purpose</th><th>fields (as sent)</th><th>sent</th><th>delivered</th></tr>\n";
            for (const auto& d : f.disclosures) {
                std::string fields;
                for (const auto& [p, t] : d.fields) fields += (fields.empty() ? "" : ", ") + p + (t.empty() ? "" : " (" + t + ")");
                o += "<tr><td>" + html(d.destination) + "</td><td>" + html(d.purpose) +
                     (d.lawful_basis.empty() ? "" : "<br>lawful basis: " + html(d.lawful_basis)) + "</td><td>" +
                     html(fields) + "</td><td>" + html(time_text(d.disclosed_at)) + "</td><td>" +
                     html(d.delivered_at ? time_text(d.delivered_at) : "not yet") + "</td></tr>\n";
            }
            o += "</table>\n";
        }
    }
    o += "</body></html>\n";
    return o;
}

} // namespace switchboard::governance
