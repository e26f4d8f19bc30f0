#include "governance/ropa.hpp"

#include "util/text.hpp"

#include <algorithm>
#include <cctype>
#include <map>
#include <set>

namespace switchboard::governance {

namespace {

using text::join;

bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

const config::PluginValue* value(const config::InstanceConfig& inst, const char* key) {
    auto it = inst.values.find(key);
    return it == inst.values.end() ? nullptr : &it->second;
}

std::string string_value(const config::InstanceConfig& inst, const char* key) {
    const auto* v = value(inst, key);
    return v && !v->multi ? v->text : std::string();
}

bool bool_value(const config::InstanceConfig& inst, const char* key) {
    const auto* v = value(inst, key);
    return v && v->type == SB_CFG_BOOL && v->boolean;
}

bool is_set(const config::InstanceConfig& inst, const char* key) {
    const auto* v = value(inst, key);
    return v && !v->from_default && (v->multi ? !v->items.empty() : !v->text.empty());
}

std::size_t item_count(const config::InstanceConfig& inst, const char* key) {
    const auto* v = value(inst, key);
    return v && v->multi ? v->items.size() : 0;
}

// The host part of "scheme://host:port/...", for "bound to loopback" notes.
std::string url_host(std::string_view url) {
    auto scheme = url.find("://");
    if (scheme == std::string_view::npos) return {};
    url.remove_prefix(scheme + 3);
    url = url.substr(0, url.find_first_of("/?#"));
    if (!url.empty() && url.front() == '[') return std::string(url.substr(1, url.find(']') - 1));
    return std::string(url.substr(0, url.rfind(':')));
}

bool loopback(std::string_view host) {
    return host == "localhost" || host == "::1" || starts_with(host, "127.");
}

const toml::table* instance_table(const config::Config& c, const config::InstanceConfig& inst) {
    const char* section = inst.kind == SB_KIND_SOURCE ? "sources" : inst.kind == SB_KIND_DESTINATION ? "destinations" : "transforms";
    const auto* s = c.root.get(section);
    if (!s || !s->is_table()) return nullptr;
    const auto* t = s->as_table()->get(inst.name);
    return t ? t->as_table() : nullptr;
}

// An HTTP(S) endpoint in words: TLS, verification, authentication.
std::string http_transport(const config::InstanceConfig& d, const char* url_key, const std::string& auth) {
    const std::string url = string_value(d, url_key);
    std::string out;
    if (starts_with(url, "https://")) {
        out = "HTTPS to " + url_host(url) + " (TLS";
        out += value(d, "tls_verify") && !bool_value(d, "tls_verify") ? ", certificate NOT verified: tls_verify = false"
                                                                       : ", certificate verified";
        if (is_set(d, "ca_file")) out += " against ca_file";
        out += ")";
    } else if (starts_with(url, "http://")) {
        out = "plaintext HTTP to " + url_host(url) + " (allow_http = true): not encrypted";
    } else {
        out = "HTTP endpoint " + url;
    }
    if (!auth.empty()) out += "; " + auth;
    return out;
}

std::string destination_transport(const config::InstanceConfig& d) {
    if (d.plugin == "zmq-feed") {
        const std::string endpoint = string_value(d, "endpoint");
        std::string where = "ZeroMQ feed on " + endpoint + (loopback(url_host(endpoint)) ? " (loopback only)" : "");
        if (bool_value(d, "insecure"))
            return where + ", plaintext (insecure = true): not encrypted, any client admitted";
        std::size_t keys = item_count(d, "clients"), files = item_count(d, "client_key_files");
        std::string who;
        if (keys) who = std::to_string(keys) + " listed client key(s)";
        if (files) who += std::string(who.empty() ? "" : " and ") + "the keys in " + std::to_string(files) + " key file(s)";
        return where + ", CURVE-encrypted and authenticated: only " + (who.empty() ? "listed client keys" : who) +
               " admitted";
    }
    if (d.plugin == "http") {
        const std::string auth = string_value(d, "auth");
        std::string words = auth == "bearer" ? "bearer token" : auth == "hmac" ? "HMAC-SHA256 signed requests"
                          : auth == "none"   ? "no authentication (auth = none)" : auth;
        return http_transport(d, "url", words);
    }
    if (d.plugin == "open311")
        return http_transport(d, "endpoint", is_set(d, "api_key") ? "api_key" : "");
    if (d.plugin == "jsonl-file" || d.plugin == "file-drop")
        return "files under " + string_value(d, "dir") + " on this server (filesystem permissions)";
    // A plugin this generator does not know: what its URL-like values say.
    for (const auto& [key, v] : d.values) {
        if (v.secret) continue;
        if (starts_with(v.text, "https://")) return "TLS to " + url_host(v.text) + " (" + key + "); see the plugin's README";
        if (starts_with(v.text, "http://")) return "plaintext HTTP to " + url_host(v.text) + " (" + key + ")";
    }
    return "not described by Switchboard: see the plugin's README";
}

std::string source_transport(const config::InstanceConfig& s, const sb_plugin_descriptor* d) {
    if (s.plugin == "landbot") return "webhook on the node's HTTP listener, Authorization token checked";
    if (s.plugin == "whatsapp") return "webhook on the node's HTTP listener, X-Hub-Signature-256 checked";
    if (s.plugin == "verint") return "export files read from " + string_value(s, "export_dir");
    if (s.plugin == "qgenie") return "export files read from " + string_value(s, "dir");
    if (s.plugin == "email") return "maildir read from " + string_value(s, "maildir");
    if (s.plugin == "jsonl-source") return "files read from " + string_value(s, "path");
    if (d && (d->capabilities & SB_CAP_HTTP)) return "webhook on the node's HTTP listener";
    return "polled by the node";
}

std::string source_erase(const config::InstanceConfig& s, bool hook) {
    if (!hook) return "no erase hook: the vendor's copy is kept under the vendor's own retention";
    if (s.plugin == "landbot" && !is_set(s, "api_token"))
        return "erase hook, but api_token is not set: Landbot customers are not deleted by Switchboard";
    return "the vendor's copy is deleted at expiry (erase hook, audited)";
}

std::string destination_erase(const config::InstanceConfig& d, bool hook) {
    if (d.plugin == "http" && !is_set(d, "erase_url")) return "no erase_url: the department is not sent erase notices";
    if (!hook) return "no erase hook: the recipient deletes under its own retention";
    std::string out = "erase notice at expiry; the deletion receipt is audited";
    if (d.plugin == "jsonl-file") out += "; files also deleted after " + string_value(d, "retention");
    return out;
}

std::vector<std::string> descriptor_categories(const sb_plugin_descriptor* d) {
    std::vector<std::string> out;
    if (d && d->data_categories)
        for (const char* const* p = d->data_categories; *p; ++p) out.emplace_back(*p);
    return out;
}

RopaSystem system_of(const config::InstanceConfig& inst, const config::PluginLookup& find) {
    RopaSystem s;
    s.name = inst.name;
    s.description = inst.description;
    s.enabled = inst.enabled;
    s.plugin = inst.plugin;
    const sb_plugin_descriptor* d = find ? find(inst.plugin) : nullptr;
    if (d) {
        s.plugin_known = true;
        s.plugin_version = d->version ? d->version : "";
        s.vendor = d->vendor ? d->vendor : "";
        s.plugin_description = d->description ? d->description : "";
        s.erase_hook = d->erase != nullptr || (d->capabilities & SB_CAP_ERASE);
    }
    s.data_categories = descriptor_categories(d);
    return s;
}

struct PolicyRule {
    std::string source, category, period;
};

std::vector<PolicyRule> retention_policies(const config::Config& c) {
    std::vector<PolicyRule> out;
    const auto* ret = c.root.get("retention");
    const auto* list = ret && ret->is_table() ? ret->as_table()->get("policy") : nullptr;
    if (!list || !list->is_array()) return out;
    for (const auto& p : *list->as_array()) {
        const auto* t = p.as_table();
        if (!t) continue;
        auto str = [&](const char* k) {
            const auto* n = t->get(k);
            return n && n->is_string() ? n->as_string()->get() : std::string();
        };
        auto ms = text::parse_duration(str("retention"));
        if (ms) out.push_back({str("source"), str("category"), text::format_duration(*ms)});
    }
    // Most specific first, as the journal applies them.
    std::stable_sort(out.begin(), out.end(), [](const PolicyRule& a, const PolicyRule& b) {
        auto rank = [](const PolicyRule& r) { return (r.source.empty() ? 0 : 1) + (r.category.empty() ? 0 : 2); };
        return rank(a) > rank(b);
    });
    return out;
}

std::string html_escape(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (char ch : s) {
        switch (ch) {
        case '&': out += "&amp;"; break;
        case '<': out += "&lt;"; break;
        case '>': out += "&gt;"; break;
        case '"': out += "&quot;"; break;
        case '\'': out += "&#39;"; break;
        default:
            // Control characters (a hostile description) would make the page
            // ill-formed XML; they carry nothing a reader needs.
            if (static_cast<unsigned char>(ch) < 0x20 && ch != '\n' && ch != '\t') out += ' ';
            else out += ch;
        }
    }
    return out;
}

// Text in a Markdown table cell: nothing a renderer would take as markup
// (HTML, emphasis, links, a cell break, a new line).
std::string md(std::string_view s) {
    std::string out;
    auto word = [&](std::size_t i) {
        return i < s.size() && (std::isalnum(static_cast<unsigned char>(s[i])) || static_cast<unsigned char>(s[i]) >= 0x80);
    };
    for (std::size_t i = 0; i < s.size(); ++i) {
        const char ch = s[i];
        // An underscore inside a word ("housing_repairs") is no emphasis.
        if (ch == '_' && i > 0 && word(i - 1) && word(i + 1)) {
            out += ch;
            continue;
        }
        switch (ch) {
        case '&': out += "&amp;"; break;
        case '<': out += "&lt;"; break;
        case '>': out += "&gt;"; break;
        case '|': case '\\': case '*': case '_': case '[': case ']': case '`': case '#':
            out += '\\';
            out += ch;
            break;
        default:
            if (static_cast<unsigned char>(ch) < 0x20) out += ' ';
            else out += ch;
        }
    }
    return out;
}

// A field path or pattern as code; they are validated paths, but a backtick
// would still end the span.
std::string md_code(std::string_view s) {
    std::string t = md(s);
    return "`" + std::string(s.find('`') == std::string_view::npos ? std::string(s) : t) + "`";
}

std::string or_dash(const std::vector<std::string>& items, std::string_view sep = ", ") {
    return items.empty() ? "-" : join(items, sep);
}

// One document, written twice: Markdown and HTML share this outline so the
// two never say different things.
class Writer {
public:
    explicit Writer(bool html) : html_(html) {}

    void title(const std::string& t) {
        if (html_) out_ += "<h1>" + html_escape(t) + "</h1>\n";
        else out_ += "# " + md(t) + "\n\n";
    }
    void heading(const std::string& t, int level = 2) {
        if (html_) out_ += "<h" + std::to_string(level) + ">" + html_escape(t) + "</h" + std::to_string(level) + ">\n";
        else out_ += std::string(static_cast<std::size_t>(level), '#') + " " + md(t) + "\n\n";
    }
    void para(const std::string& t) {
        if (html_) out_ += "<p>" + html_escape(t) + "</p>\n";
        else out_ += md(t) + "\n\n";
    }
    // Cells are plain text; a cell starting with "`" is shown as code.
    void table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows) {
        auto cell = [&](const std::string& c) {
            bool code = c.size() > 1 && c.front() == '`' && c.back() == '`';
            std::string body = code ? c.substr(1, c.size() - 2) : c;
            if (html_) return code ? "<code>" + html_escape(body) + "</code>" : html_escape(body);
            return code ? md_code(body) : md(body);
        };
        if (html_) {
            out_ += "<table>\n<thead><tr>";
            for (const auto& h : header) out_ += "<th>" + html_escape(h) + "</th>";
            out_ += "</tr></thead>\n<tbody>\n";
            for (const auto& r : rows) {
                out_ += "<tr>";
                for (const auto& c : r) out_ += "<td>" + cell(c) + "</td>";
                out_ += "</tr>\n";
            }
            out_ += "</tbody>\n</table>\n";
            return;
        }
        out_ += "|";
        for (const auto& h : header) out_ += " " + md(h) + " |";
        out_ += "\n|";
        for (std::size_t i = 0; i < header.size(); ++i) out_ += "---|";
        out_ += "\n";
        for (const auto& r : rows) {
            out_ += "|";
            for (const auto& c : r) out_ += " " + cell(c) + " |";
            out_ += "\n";
        }
        out_ += "\n";
    }

    std::string finish(const std::string& page_title) const {
        if (!html_) return out_;
        return "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n<title>" +
               html_escape(page_title) +
               "</title>\n<style>\n"
               "body{font-family:system-ui,sans-serif;margin:2em;max-width:80em;color:#111}\n"
               "table{border-collapse:collapse;margin:0 0 1.5em 0}\n"
               "th,td{border:1px solid #999;padding:.3em .6em;text-align:left;vertical-align:top}\n"
               "th{background:#eee}\ncode{font-family:monospace}\n"
               "</style>\n</head>\n<body>\n" +
               out_ + "</body>\n</html>\n";
    }

private:
    bool html_;
    std::string out_;
};

std::string code(const std::string& s) { return "`" + s + "`"; }

std::string write_ropa(const Ropa& r, bool html) {
    Writer w(html);
    const std::string title = "Record of processing: " + r.node;
    w.title(title);
    w.para("UK GDPR Article 30 record, generated by " + r.generated_by + " from " + r.config_file +
           " and the descriptors of the plugins it uses. It describes what this configuration does; "
           "regenerate it whenever the configuration changes.");

    w.heading("1. Source systems and the data they collect");
    std::vector<std::vector<std::string>> rows;
    for (const auto& s : r.sources) {
        std::string plugin = s.plugin + (s.plugin_known ? " " + s.plugin_version + " (" + s.vendor + ")" : " (not loaded)");
        rows.push_back({s.name + (s.enabled ? "" : " (disabled)"), s.description, plugin, or_dash(s.channels),
                        or_dash(s.data_categories), or_dash(s.data_subjects), or_dash(s.retention, "; "),
                        s.transport, s.erase});
    }
    w.table({"source", "description", "plugin (vendor)", "channels", "data categories", "data subjects",
             "retention", "how data arrives", "vendor copy at expiry"},
            rows);

    w.heading("2. Purposes and lawful bases");
    w.para("Each route sends contacts of the listed categories to one recipient, for one purpose, through one "
           "profile. Special category data (UK GDPR Art. 9) leaves only on a route with a lawful basis; a "
           "route without one sends none.");
    rows.clear();
    for (const auto& rt : r.routes) {
        std::string taken = join(rt.categories, ", ");
        if (!rt.channels.empty()) taken += "; channels " + join(rt.channels, ", ");
        if (!rt.sources.empty()) taken += "; sources " + join(rt.sources, ", ");
        rows.push_back({rt.label, taken, rt.destination, rt.purpose,
                        rt.lawful_basis.empty() ? "not stated (no special category data)" : rt.lawful_basis,
                        rt.profile + " v" + std::to_string(rt.profile_version)});
    }
    w.table({"route", "contacts (categories)", "recipient", "purpose", "lawful basis (Art. 9)", "profile"}, rows);

    w.heading("3. Recipients and the fields each receives");
    w.para("Default deny: a field no profile names never leaves. Transforms: keep, mask (last N characters "
           "kept), hash (keyed), redact (personal data in free text replaced by its kind), generalise "
           "(postcode to district, date to month, age to band).");
    for (const auto& d : r.recipients) {
        w.heading(d.name + (d.description.empty() ? "" : ": " + d.description), 3);
        rows.clear();
        rows.push_back({"plugin", d.plugin + (d.plugin_known ? " " + d.plugin_version + " (" + d.vendor + ")" : " (not loaded)")});
        rows.push_back({"accepts", d.data_categories.empty() ? "whatever its profile sends (not declared by the plugin)"
                                                             : join(d.data_categories, ", ")});
        rows.push_back({"transport", d.transport});
        rows.push_back({"transfer outside the UK", d.transfer.empty() ? "none" : d.transfer});
        rows.push_back({"at expiry", d.erase});
        if (!d.enabled) rows.push_back({"state", "disabled"});
        w.table({"", ""}, rows);
        rows.clear();
        for (const auto& rt : r.routes) {
            if (rt.destination != d.name) continue;
            for (const auto& f : rt.fields)
                rows.push_back({code(f.pattern), f.transform + (f.special && !rt.lawful_basis.empty() ? " (special category)" : "")
                                                     + (f.special && rt.lawful_basis.empty() ? " (special category data dropped: no lawful basis)" : ""),
                                rt.label, rt.purpose});
        }
        if (rows.empty()) w.para("No route sends anything to this recipient.");
        else w.table({"field path", "transform", "route", "purpose"}, rows);
    }

    w.heading("4. Retention");
    w.para("Every record has one clock, from collection, applied to every copy: store, outbox, dead letters, "
           "attachments, then the vendor's and each recipient's copy through erase requests with receipts. "
           "Default: " + r.retention_default + ".");
    rows.clear();
    for (const auto& m : r.retention) rows.push_back({m.measure, m.detail});
    w.table({"scope", "period"}, rows);

    w.heading("5. Transfers outside the UK");
    rows.clear();
    for (const auto& d : r.recipients)
        if (!d.transfer.empty()) rows.push_back({d.name, d.transfer});
    if (rows.empty())
        w.para("None: no recipient is configured with a transfer outside the UK (destinations.NAME.transfer_abroad).");
    else
        w.table({"recipient", "transfer and safeguard"}, rows);

    w.heading("6. Security measures in force");
    rows.clear();
    for (const auto& m : r.security) rows.push_back({m.measure, m.detail});
    w.table({"measure", "in force"}, rows);
    return w.finish(title);
}

std::string route_key(const pipeline::Route& r) {
    if (!r.name.empty()) return r.name;
    return r.destination + " for " + join(r.categories, ",") +
           (r.channels.empty() ? "" : " on " + join(r.channels, ",")) +
           (r.sources.empty() ? "" : " from " + join(r.sources, ","));
}

} // namespace

std::string data_subject_of(std::string_view category) {
    if (starts_with(category, "staff.")) return "council staff";
    for (std::string_view p : {"identity.", "contact.", "identifier.", "reference.", "special.", "financial.",
                               "content.", "media.", "call.", "citizen."})
        if (starts_with(category, p)) return "residents and others contacting the council";
    return {};
}

std::vector<std::string> channels_of(const config::InstanceConfig& source) {
    const std::string& p = source.plugin;
    if (p == "verint") return {"phone"};
    if (p == "qgenie") return {"visit"};
    if (p == "landbot") return {"web_chat", "whatsapp", "social"};
    if (p == "whatsapp") return {"whatsapp"};
    if (p == "email") return {"email"};
    if (p == "jsonl-source") {
        std::string c = string_value(source, "channel");
        return {(c.empty() ? "batch" : c) + " (or as each line says)"};
    }
    return {};
}

Ropa build_ropa(const config::Config& c, const pipeline::Policy& policy, const config::PluginLookup& find,
                const std::string& generated_by) {
    Ropa r;
    r.node = c.node.name;
    r.config_file = c.file.string();
    r.generated_by = generated_by;
    r.retention_default = text::format_duration(c.retention.default_ms);
    const auto policies = retention_policies(c);

    for (const auto& inst : c.sources) {
        RopaSystem s = system_of(inst, find);
        s.channels = channels_of(inst);
        std::set<std::string> subjects;
        for (const auto& cat : s.data_categories)
            if (auto who = data_subject_of(cat); !who.empty()) subjects.insert(who);
        if (!s.plugin_known) subjects.insert("not known: the plugin is not loaded");
        else if (s.data_categories.empty()) subjects.insert("as its records' categories say (not declared by the plugin)");
        s.data_subjects.assign(subjects.begin(), subjects.end());
        s.retention.push_back(inst.retention_ms ? text::format_duration(*inst.retention_ms) + " (sources." + inst.name + ".retention)"
                                                : r.retention_default + " (retention.default)");
        for (const auto& p : policies)
            if (p.source.empty() || p.source == inst.name)
                s.retention.push_back((p.category.empty() ? "all its contacts" : p.category) + ": " + p.period);
        const sb_plugin_descriptor* d = find ? find(inst.plugin) : nullptr;
        s.transport = source_transport(inst, d);
        s.erase = source_erase(inst, s.erase_hook);
        r.sources.push_back(std::move(s));
    }

    for (const auto& route : policy.router().all()) {
        RopaRoute rt;
        rt.key = route_key(route);
        rt.label = route.label;
        rt.categories = route.categories;
        rt.channels = route.channels;
        rt.sources = route.sources;
        rt.destination = route.destination;
        rt.purpose = route.purpose;
        rt.lawful_basis = route.lawful_basis;
        rt.profile = route.profile_name;
        if (const auto* p = route.profile) {
            rt.profile_version = p->version();
            rt.profile_description = p->description();
            const auto& special = p->special_patterns();
            for (const auto& rule : p->rules()) {
                RopaField f{rule.pattern.text(), rule.transform_text, false};
                f.special = std::find(special.begin(), special.end(), f.pattern) != special.end();
                rt.fields.push_back(std::move(f));
            }
        }
        r.routes.push_back(std::move(rt));
    }

    for (const auto& inst : c.destinations) {
        RopaSystem d = system_of(inst, find);
        d.transport = destination_transport(inst);
        d.erase = destination_erase(inst, d.erase_hook);
        if (const auto* t = instance_table(c, inst))
            if (const auto* n = t->get("transfer_abroad"); n && n->is_string()) d.transfer = n->as_string()->get();
        r.recipients.push_back(std::move(d));
    }

    r.retention.push_back({"default (retention.default)", r.retention_default});
    for (const auto& inst : c.sources)
        if (inst.retention_ms)
            r.retention.push_back({"source " + inst.name + " (sources." + inst.name + ".retention)",
                                   text::format_duration(*inst.retention_ms)});
    for (const auto& p : policies) {
        std::string scope = "[[retention.policy]]";
        if (!p.source.empty()) scope += " source " + p.source;
        if (!p.category.empty()) scope += " category " + p.category;
        r.retention.push_back({scope, p.period});
    }
    r.retention.push_back({"deletion after expiry (retention.sweep_interval)",
                           "within 1m plus " + text::format_duration(c.retention.sweep_interval_ms)});
    r.retention.push_back({"erase receipts expected within (retention.receipt_deadline)",
                           text::format_duration(c.retention.receipt_deadline_ms)});

    // Security measures: what the config and the code guarantee.
    auto& sec = r.security;
    for (const auto& d : r.recipients) sec.push_back({"transport to " + d.name, d.transport});
    {
        const auto* http = c.root.get("http");
        const toml::table* t = http && http->is_table() ? http->as_table() : nullptr;
        bool tls = t && t->contains("tls_cert") && t->contains("tls_key");
        std::string listener;
        if (!c.http.enabled) listener = "disabled (http.enabled = false)";
        else
            listener = c.http.host + ":" + std::to_string(c.http.port) +
                       (loopback(c.http.host) ? ", loopback only" : ", reachable from the network (http.allow_remote)") +
                       (tls ? ", TLS (http.tls_cert)" : loopback(c.http.host) ? "" : ", no TLS in Switchboard");
        sec.push_back({"HTTP listener (webhooks, health, admin)", listener});
    }
    sec.push_back({"payment card data", "card numbers (Luhn), and CVVs and expiry dates near them, are redacted at "
                                        "ingest, before anything is written: never at rest"});
    sec.push_back({"minimisation", "default deny per recipient (profiles); special category data only on a route "
                                   "with a lawful basis, checked when the config is loaded"});
    sec.push_back({"audit trail", "every ingest, disclosure, delivery and deletion in a hash-chained trail under " +
                                      c.node.data_dir.string() + "/audit (ids and field paths, never values); "
                                      "switchboard audit verify checks it"});
    sec.push_back({"data at rest", c.node.store + " store in " + c.node.data_dir.string() +
                                       " (mode 0700; deleted content overwritten: secure_delete)"});
    std::size_t secrets = 0;
    for (const auto* list : {&c.sources, &c.destinations})
        for (const auto& inst : *list)
            for (const auto& [k, v] : inst.values)
                if (v.secret && !v.from_default && !v.text.empty()) ++secrets;
    sec.push_back({"secrets", std::to_string(secrets) + " plugin secret(s), each read from env: or file: at start; "
                                                        "none written in the config"});
    sec.push_back({"plugin integrity", c.plugins.require_pins ? "every plugin file pinned by SHA-256 (plugins.require_pins)"
                                       : c.plugins.sha256.empty()
                                           ? "plugin files not pinned (plugins.sha256)"
                                           : std::to_string(c.plugins.sha256.size()) + " plugin file(s) pinned by SHA-256"});
    return r;
}

std::string ropa_markdown(const Ropa& ropa) { return write_ropa(ropa, false); }
std::string ropa_html(const Ropa& ropa) { return write_ropa(ropa, true); }

// --- diff ------------------------------------------------------------------

namespace {

// Per recipient: field pattern -> its transforms (by route, joined).
std::map<std::string, std::map<std::string, std::string>> fields_by_recipient(const Ropa& r) {
    std::map<std::string, std::map<std::string, std::set<std::string>>> sets;
    for (const auto& rt : r.routes)
        for (const auto& f : rt.fields) sets[rt.destination][f.pattern].insert(f.transform);
    std::map<std::string, std::map<std::string, std::string>> out;
    for (const auto& [dest, fields] : sets)
        for (const auto& [pattern, transforms] : fields)
            out[dest][pattern] = join(std::vector<std::string>(transforms.begin(), transforms.end()), ", ");
    return out;
}

std::string route_text(const RopaRoute& r) {
    std::string s = join(r.categories, ", ") + " to " + r.destination + " for \"" + r.purpose + "\" (profile " +
                    r.profile + " v" + std::to_string(r.profile_version) + ")";
    if (!r.lawful_basis.empty()) s += "; lawful basis: " + r.lawful_basis;
    return s;
}

template <class T, class Key, class Fn>
void by_key(const std::vector<T>& before, const std::vector<T>& after, Key key, Fn fn) {
    std::map<std::string, const T*> a, b;
    for (const auto& x : before) a[key(x)] = &x;
    for (const auto& x : after) b[key(x)] = &x;
    for (const auto& [k, x] : a) fn(k, x, b.count(k) ? b[k] : nullptr);
    for (const auto& [k, x] : b)
        if (!a.count(k)) fn(k, nullptr, x);
}

const char* kind_words(const std::string& kind, bool plural) {
    static const std::map<std::string, std::pair<const char*, const char*>> words = {
        {"route_added", {"route added", "routes added"}},
        {"route_removed", {"route removed", "routes removed"}},
        {"route_changed", {"route changed", "routes changed"}},
        {"field_added", {"field added", "fields added"}},
        {"field_removed", {"field removed", "fields removed"}},
        {"transform_changed", {"transform changed", "transforms changed"}},
        {"recipient_added", {"recipient added", "recipients added"}},
        {"recipient_removed", {"recipient removed", "recipients removed"}},
        {"source_added", {"source added", "sources added"}},
        {"source_removed", {"source removed", "sources removed"}},
        {"retention_changed", {"retention period changed", "retention periods changed"}},
        {"transfer_changed", {"transfer abroad changed", "transfers abroad changed"}},
        {"security_changed", {"security measure changed", "security measures changed"}},
    };
    auto it = words.find(kind);
    if (it == words.end()) return kind.c_str();
    return plural ? it->second.second : it->second.first;
}

// The order changes are reported in: who receives what first.
int kind_rank(const std::string& kind) {
    static const char* order[] = {"route_added",     "route_removed",     "route_changed",    "field_added",
                                  "field_removed",   "transform_changed", "recipient_added",  "recipient_removed",
                                  "source_added",    "source_removed",    "retention_changed", "transfer_changed",
                                  "security_changed"};
    for (int i = 0; i < static_cast<int>(std::size(order)); ++i)
        if (kind == order[i]) return i;
    return 99;
}

std::string write_diff(const RopaDiff& d, bool html) {
    Writer w(html);
    const std::string title = "Record of processing: changes";
    w.title(title);
    w.para("From " + d.old_file + " to " + d.new_file + ". " + d.summary() + ".");
    if (!d.changes.empty()) {
        std::vector<std::vector<std::string>> rows;
        for (const auto& c : d.changes)
            rows.push_back({kind_words(c.kind, false), c.subject, c.before.empty() ? "-" : c.before,
                            c.after.empty() ? "-" : c.after});
        w.table({"change", "what", "before", "after"}, rows);
    }
    return w.finish(title);
}

} // namespace

RopaDiff diff_ropa(const Ropa& before, const Ropa& after) {
    RopaDiff d;
    d.old_file = before.config_file;
    d.new_file = after.config_file;
    auto add = [&](std::string kind, std::string subject, std::string was, std::string now) {
        d.changes.push_back({std::move(kind), std::move(subject), std::move(was), std::move(now)});
    };

    by_key(before.routes, after.routes, [](const RopaRoute& r) { return r.key; },
           [&](const std::string& key, const RopaRoute* a, const RopaRoute* b) {
               if (!a) return add("route_added", key, "", route_text(*b));
               if (!b) return add("route_removed", key, route_text(*a), "");
               if (route_text(*a) != route_text(*b) || a->channels != b->channels || a->sources != b->sources)
                   add("route_changed", key, route_text(*a), route_text(*b));
           });

    auto fa = fields_by_recipient(before), fb = fields_by_recipient(after);
    std::set<std::string> dests;
    for (const auto& [k, v] : fa) dests.insert(k);
    for (const auto& [k, v] : fb) dests.insert(k);
    for (const auto& dest : dests) {
        const auto& a = fa[dest];
        const auto& b = fb[dest];
        for (const auto& [pattern, t] : a) {
            auto it = b.find(pattern);
            if (it == b.end()) add("field_removed", dest + ": " + pattern, t, "");
            else if (it->second != t) add("transform_changed", dest + ": " + pattern, t, it->second);
        }
        for (const auto& [pattern, t] : b)
            if (!a.count(pattern)) add("field_added", dest + ": " + pattern, "", t);
    }

    by_key(before.recipients, after.recipients, [](const RopaSystem& s) { return s.name; },
           [&](const std::string& name, const RopaSystem* a, const RopaSystem* b) {
               if (!a) return add("recipient_added", name, "", b->plugin + ": " + b->transport);
               if (!b) return add("recipient_removed", name, a->plugin + ": " + a->transport, "");
               if (a->transfer != b->transfer)
                   add("transfer_changed", name, a->transfer.empty() ? "none" : a->transfer,
                       b->transfer.empty() ? "none" : b->transfer);
               if (a->transport != b->transport) add("security_changed", "transport to " + name, a->transport, b->transport);
           });
    by_key(before.sources, after.sources, [](const RopaSystem& s) { return s.name; },
           [&](const std::string& name, const RopaSystem* a, const RopaSystem* b) {
               if (!a) return add("source_added", name, "", b->plugin);
               if (!b) return add("source_removed", name, a->plugin, "");
           });
    by_key(before.retention, after.retention, [](const RopaMeasure& m) { return m.measure; },
           [&](const std::string& scope, const RopaMeasure* a, const RopaMeasure* b) {
               if (!a || !b || a->detail != b->detail)
                   add("retention_changed", scope, a ? a->detail : "", b ? b->detail : "");
           });
    by_key(before.security, after.security, [](const RopaMeasure& m) { return m.measure; },
           [&](const std::string& measure, const RopaMeasure* a, const RopaMeasure* b) {
               // Transports are reported with their recipient above.
               if (starts_with(measure, "transport to ")) return;
               if (!a || !b || a->detail != b->detail)
                   add("security_changed", measure, a ? a->detail : "", b ? b->detail : "");
           });
    std::stable_sort(d.changes.begin(), d.changes.end(),
                     [](const RopaChange& x, const RopaChange& y) { return kind_rank(x.kind) < kind_rank(y.kind); });
    return d;
}

std::string RopaDiff::summary() const {
    if (changes.empty()) return "no change to who receives what";
    std::vector<std::string> parts;
    for (std::size_t i = 0; i < changes.size();) {
        std::size_t j = i;
        std::vector<std::string> subjects;
        while (j < changes.size() && changes[j].kind == changes[i].kind) subjects.push_back(changes[j++].subject);
        parts.push_back(std::to_string(j - i) + " " + kind_words(changes[i].kind, j - i > 1) + " (" +
                        join(subjects, "; ") + ")");
        i = j;
    }
    return std::to_string(changes.size()) + (changes.size() == 1 ? " change: " : " changes: ") + join(parts, ", ");
}

std::string diff_markdown(const RopaDiff& diff) { return write_diff(diff, false); }
std::string diff_html(const RopaDiff& diff) { return write_diff(diff, true); }

} // namespace switchboard::governance
