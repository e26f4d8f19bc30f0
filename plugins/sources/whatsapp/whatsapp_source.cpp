// whatsapp: citizen messages from the WhatsApp Business Cloud API (Meta),
// received as webhooks on the core's listener at /hooks/whatsapp/<instance>.
//
// GET answers Meta's subscription check (hub.mode / hub.verify_token /
// hub.challenge). POST is authenticated first, by X-Hub-Signature-256 =
// HMAC-SHA256(app secret, raw body), compared in constant time; nothing is
// parsed before that. An authenticated delivery may hold several entries,
// changes and messages: each inbound message becomes one record (external_id
// = its wamid, so Meta's redeliveries are answered SB_DUPLICATE by the
// journal); delivery statuses are counted, never emitted. Media are kept by
// reference (whatsapp-media:<media id>); this plugin does not download them.
// Values are never logged: only counts, positions and reasons.
#include <switchboard/detail/json_record.hpp>
#include <switchboard/plugin.hpp>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <list>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace {

constexpr std::size_t kRecentIds = 4096;      // wamids remembered against bursts
constexpr std::size_t kMaxChallenge = 1024;   // longest hub.challenge echoed
constexpr std::int64_t kWarnEveryMs = 60'000; // refusals: one warning a minute

// The leaves of one JSON document, by canonical path ("entry[0].changes[1].field").
class Doc {
public:
    struct Value {
        sb_value_type type = SB_VALUE_NULL;
        std::string str;
        std::int64_t i = 0;
    };

    bool parse(std::string_view body, std::string& why) {
        sb::detail::JsonError err;
        bool ok = sb::detail::json_leaves(
            body,
            [&](std::string_view path, const sb_value& v) {
                Value val;
                val.type = v.type;
                if (v.type == SB_VALUE_STRING) val.str.assign(v.str, v.len);
                val.i = v.i;
                leaves_.emplace(std::string(path), std::move(val));
                return true;
            },
            err);
        if (!ok) why = err.text();
        return ok;
    }

    // A string leaf (an integer leaf as its digits, for ids sent as numbers).
    std::optional<std::string> text(const std::string& path) const {
        auto it = leaves_.find(path);
        if (it == leaves_.end()) return std::nullopt;
        if (it->second.type == SB_VALUE_STRING) return it->second.str;
        if (it->second.type == SB_VALUE_INT) return std::to_string(it->second.i);
        return std::nullopt;
    }
    const Value* get(const std::string& path) const {
        auto it = leaves_.find(path);
        return it == leaves_.end() ? nullptr : &it->second;
    }
    // Elements of the array at `path` (0 if absent, empty or not an array).
    std::size_t count(const std::string& path) const {
        std::string prefix = path + "[";
        std::size_t n = 0;
        for (auto it = leaves_.lower_bound(prefix);
             it != leaves_.end() && it->first.compare(0, prefix.size(), prefix) == 0; ++it) {
            std::size_t k = prefix.size(), v = 0;
            while (k < it->first.size() && it->first[k] >= '0' && it->first[k] <= '9')
                v = v * 10 + static_cast<std::size_t>(it->first[k++] - '0');
            n = std::max(n, v + 1);
        }
        return n;
    }
    // Whether `path` is an object with at least one member.
    bool is_object(const std::string& path) const {
        std::string prefix = path + ".";
        auto it = leaves_.lower_bound(prefix);
        return it != leaves_.end() && it->first.compare(0, prefix.size(), prefix) == 0;
    }

private:
    std::map<std::string, Value> leaves_;
};

// Message ids recently committed, so that a burst of redeliveries does not
// reach the journal at all (the journal's own dedupe is the real guarantee).
class RecentIds {
public:
    bool contains(const std::string& id) {
        std::lock_guard lock(mu_);
        return index_.count(id) != 0;
    }
    void add(const std::string& id) {
        std::lock_guard lock(mu_);
        if (index_.count(id)) return;
        order_.push_front(id);
        index_[id] = order_.begin();
        if (order_.size() > kRecentIds) {
            index_.erase(order_.back());
            order_.pop_back();
        }
    }
    bool remove(std::string_view id) {
        std::lock_guard lock(mu_);
        auto it = index_.find(std::string(id));
        if (it == index_.end()) return false;
        order_.erase(it->second);
        index_.erase(it);
        return true;
    }

private:
    std::mutex mu_;
    std::list<std::string> order_;
    std::unordered_map<std::string, std::list<std::string>::iterator> index_;
};

std::string percent_decode(std::string_view s) {
    auto hex = [](char c) {
        return c >= '0' && c <= '9'   ? c - '0'
               : c >= 'a' && c <= 'f' ? c - 'a' + 10
               : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                      : -1;
    };
    std::string out;
    for (std::size_t k = 0; k < s.size(); ++k) {
        if (s[k] == '+') {
            out += ' ';
        } else if (s[k] == '%' && k + 2 < s.size() && hex(s[k + 1]) >= 0 && hex(s[k + 2]) >= 0) {
            out += static_cast<char>(hex(s[k + 1]) * 16 + hex(s[k + 2]));
            k += 2;
        } else {
            out += s[k];
        }
    }
    return out;
}

std::map<std::string, std::string> query_params(std::string_view q) {
    std::map<std::string, std::string> out;
    while (!q.empty()) {
        std::size_t amp = q.find('&');
        std::string_view pair = q.substr(0, amp);
        q.remove_prefix(amp == std::string_view::npos ? q.size() : amp + 1);
        std::size_t eq = pair.find('=');
        std::string key = percent_decode(pair.substr(0, eq));
        std::string value = eq == std::string_view::npos ? "" : percent_decode(pair.substr(eq + 1));
        out.emplace(std::move(key), std::move(value)); // the first of a repeated key stands
    }
    return out;
}

// Equal without revealing, through timing, where two secrets differ (or
// their lengths): their digests are compared in constant time.
bool same_secret(std::string_view a, std::string_view b) {
    unsigned char da[SHA256_DIGEST_LENGTH], db[SHA256_DIGEST_LENGTH];
    unsigned int la = 0, lb = 0;
    if (!EVP_Digest(a.data(), a.size(), da, &la, EVP_sha256(), nullptr) ||
        !EVP_Digest(b.data(), b.size(), db, &lb, EVP_sha256(), nullptr))
        return false;
    return CRYPTO_memcmp(da, db, sizeof da) == 0;
}

// Epoch seconds (a string of digits, or a number) as RFC 3339.
std::optional<std::string> epoch_seconds(const Doc::Value* v) {
    if (!v) return std::nullopt;
    std::int64_t s = 0;
    if (v->type == SB_VALUE_INT) {
        s = v->i;
    } else if (v->type == SB_VALUE_STRING && !v->str.empty() && v->str.size() <= 12) {
        for (char c : v->str) {
            if (c < '0' || c > '9') return std::nullopt;
            s = s * 10 + (c - '0');
        }
    } else {
        return std::nullopt;
    }
    if (s <= 0 || s > 253'402'300'799) return std::nullopt; // up to 9999-12-31
    return sb::format_time(s * 1000);
}

bool is_hex64(std::string_view s) {
    if (s.size() != 64) return false;
    for (char c : s)
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    return true;
}

// The media message types kept by reference, with the category of each.
struct MediaType {
    const char* type;
    const char* category;
    bool caption; // whether it can carry a caption (content.text)
};
constexpr MediaType kMedia[] = {
    {"image", "media.image", true},       {"sticker", "media.image", false},
    {"audio", "media.voice", false},      {"video", "media.video", true},
    {"document", "media.document", true},
};

class WhatsAppSource : public sb::Plugin {
public:
    static sb::PluginInfo info() {
        sb::PluginInfo i;
        i.name = "whatsapp";
        i.version = "0.1.0";
        i.vendor = "Switchboard project";
        i.licence = "Apache-2.0";
        i.description = "Citizen messages from WhatsApp Business Cloud API webhooks (Meta)";
        i.kind = SB_KIND_SOURCE;
        i.capabilities = SB_CAP_HTTP | SB_CAP_ATTACHMENTS;
        i.data_categories = {"identity.name",   "contact.phone", "content.free_text",
                             "content.meta",    "classification.hint", "vendor.id",
                             "media.image",     "media.voice",   "media.video",
                             "media.document"};
        i.config = {
            sb::Field::string("app_secret").required().secret().describe(
                "The Meta app secret: X-Hub-Signature-256 is HMAC-SHA256 of the body with it"),
            sb::Field::string("verify_token").required().secret().describe(
                "The verify token entered in the app's webhook settings (subscription check)"),
            sb::Field::size("max_body").range(1024, 16.0 * 1024 * 1024).fallback("\"1MiB\"")
                .describe("Largest POST body accepted; larger ones get 413"),
            sb::Field::string("phone_number_id").multi().describe(
                "Only these business phone number ids are ingested (others are acknowledged "
                "and counted); empty: every number the app receives"),
            sb::Field::boolean("also_via_landbot").fallback("false").describe(
                "Set when the same WhatsApp number is also connected through Landbot: a "
                "warning is logged at start (configure only one of the two)"),
        };
        return i;
    }

    explicit WhatsAppSource(sb::Host host)
        : sb::Plugin(host),
          app_secret_(host.string("app_secret")),
          verify_token_(host.string("verify_token")),
          max_body_(static_cast<std::size_t>(host.integer("max_body"))),
          numbers_(host.list("phone_number_id")),
          also_via_landbot_(host.boolean("also_via_landbot")),
          path_("/hooks/whatsapp/" + host.instance_name()) {
        if (app_secret_.empty()) throw sb::Error(SB_ERR_INVALID, "config key 'app_secret' is empty");
        if (verify_token_.empty())
            throw sb::Error(SB_ERR_INVALID, "config key 'verify_token' is empty");
    }

    void start() {
        host().route("*", path_.c_str(), [this](const sb::HttpRequest& req, sb::HttpResponse& resp) {
            handle(req, resp);
        });
        host().info("webhook at " + path_ + (numbers_.empty() ? std::string()
                                                              : " for " + std::to_string(numbers_.size()) +
                                                                    " phone number id(s)"));
        if (also_via_landbot_)
            host().warn("the same number is connected through Landbot: configure only one of the "
                        "two to avoid double ingestion (also_via_landbot = true)");
    }

    // WhatsApp offers no way to delete a message from the citizen's device,
    // and Meta keeps what passed through the Cloud API under its own terms.
    // What this plugin holds of a message is its id in the in-memory burst
    // guard: that goes. Nothing is kept on disk by the plugin.
    sb::Status erase(const sb::EraseRequest& req) {
        host().count("erase_requests");
        if (!req.external_id.empty() && recent_.remove(req.external_id))
            host().count("erase_recent_ids_dropped");
        host().debug("erase for record " + std::string(req.record_id) +
                     ": own copies deleted; WhatsApp has no API to delete the message from the "
                     "citizen's device");
        return SB_OK;
    }

private:
    void handle(const sb::HttpRequest& req, sb::HttpResponse& resp) {
        if (req.path() != path_) {
            resp.respond(404, "{\"error\":\"no such hook\"}");
            return;
        }
        if (req.method() == "GET") return verify(req, resp);
        if (req.method() == "POST") return deliver(req, resp);
        resp.header("Allow", "GET, POST");
        resp.respond(405, "{\"error\":\"method not allowed\"}");
    }

    // Meta's subscription check: echo hub.challenge if the token is ours.
    void verify(const sb::HttpRequest& req, sb::HttpResponse& resp) {
        auto q = query_params(req.query());
        const std::string& mode = q["hub.mode"];
        const std::string& challenge = q["hub.challenge"];
        bool token_ok = q.count("hub.verify_token") && same_secret(q["hub.verify_token"], verify_token_);
        if (mode == "subscribe" && token_ok && !challenge.empty() && challenge.size() <= kMaxChallenge) {
            host().count("verify_ok");
            host().info("subscription check answered");
            resp.header("X-Content-Type-Options", "nosniff");
            resp.respond(200, challenge, "text/plain");
            return;
        }
        host().count("verify_refused");
        warn_limited(last_verify_warn_, std::string("refused a subscription check: ") +
                                            (mode != "subscribe" ? "hub.mode is not subscribe"
                                             : !token_ok       ? "hub.verify_token does not match"
                                                               : "hub.challenge missing or too long"));
        resp.respond(403, "{\"error\":\"verification refused\"}");
    }

    void deliver(const sb::HttpRequest& req, sb::HttpResponse& resp) {
        host().count("posts");
        std::string_view body = req.body();
        if (body.size() > max_body_) {
            host().count("bodies_oversized");
            warn_limited(last_size_warn_, "refused a POST of " + std::to_string(body.size()) +
                                              " bytes: larger than max_body");
            resp.respond(413, "{\"error\":\"body too large\",\"limit\":" +
                                  std::to_string(max_body_) + "}");
            return;
        }
        // Authenticate before reading a byte of it.
        auto sig = req.header("X-Hub-Signature-256");
        if (!sig) {
            host().count("signature_missing");
            warn_limited(last_sig_warn_, "refused a POST without X-Hub-Signature-256");
            resp.respond(401, "{\"error\":\"missing X-Hub-Signature-256\"}");
            return;
        }
        if (!signature_ok(*sig, body)) {
            host().count("signature_bad");
            warn_limited(last_sig_warn_, "refused a POST: X-Hub-Signature-256 does not match");
            resp.respond(401, "{\"error\":\"X-Hub-Signature-256 does not match\"}");
            return;
        }

        Doc doc;
        std::string why;
        if (!doc.parse(body, why)) return unusable(body, "not valid JSON: " + why, resp);
        Batch batch;
        if (auto structural = read(doc, batch)) return unusable(body, *structural, resp);

        // Commit the messages, then keep what could not be used.
        std::size_t emitted = 0, duplicates = batch.recent;
        if (!batch.records.empty()) {
            std::vector<sb::Status> results;
            std::size_t n = batch.records.size();
            sb::Status s = host().emit_batch(batch.records, nullptr, nullptr, &results);
            if (s != SB_OK) {
                host().count("emit_unavailable");
                host().error("journal did not commit " + std::to_string(n) +
                             " message(s); answered 503 so that Meta delivers again");
                resp.respond(503, "{\"error\":\"not committed, deliver again\"}");
                return;
            }
            for (std::size_t k = 0; k < n; ++k) {
                if (results[k] == SB_OK || results[k] == SB_DUPLICATE) {
                    recent_.add(batch.ids[k]);
                    (results[k] == SB_OK ? emitted : duplicates)++;
                } else {
                    host().count("messages_refused");
                    batch.problems.push_back(batch.where[k] + ": refused by the host (" +
                                             sb::status_name(results[k]) + ")");
                }
            }
        }
        if (emitted) host().count("messages_emitted", emitted);
        if (duplicates) host().count("messages_duplicate", duplicates);
        if (batch.statuses) host().count("statuses_ignored", batch.statuses);
        if (batch.ignored) host().count("changes_ignored", batch.ignored);
        if (batch.reactions) host().count("reactions_ignored", batch.reactions);
        if (batch.other_number) host().count("changes_other_number", batch.other_number);
        if (!batch.problems.empty()) {
            std::string reasons;
            for (const auto& p : batch.problems) {
                if (reasons.size() > 1000) {
                    reasons += "; ...";
                    break;
                }
                reasons += (reasons.empty() ? "" : "; ") + p;
            }
            if (!keep(body, reasons)) {
                resp.respond(503, "{\"error\":\"not committed, deliver again\"}");
                return;
            }
        }
        host().debug("POST: " + std::to_string(emitted) + " message(s) committed, " +
                      std::to_string(duplicates) + " duplicate(s), " +
                      std::to_string(batch.statuses) + " status(es) ignored");
        resp.respond(200, "{\"status\":\"ok\",\"messages\":" + std::to_string(emitted) +
                              ",\"duplicates\":" + std::to_string(duplicates) +
                              ",\"statuses\":" + std::to_string(batch.statuses) +
                              ",\"quarantined\":" + (batch.problems.empty() ? "false" : "true") +
                              "}");
    }

    bool signature_ok(std::string_view header, std::string_view body) const {
        constexpr std::string_view kPrefix = "sha256=";
        if (header.substr(0, kPrefix.size()) != kPrefix) return false;
        std::string_view hex = header.substr(kPrefix.size());
        if (hex.size() != 2 * SHA256_DIGEST_LENGTH) return false;
        unsigned char given[SHA256_DIGEST_LENGTH];
        for (std::size_t k = 0; k < sizeof given; ++k) {
            auto nibble = [](char c) {
                return c >= '0' && c <= '9'   ? c - '0'
                       : c >= 'a' && c <= 'f' ? c - 'a' + 10
                       : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                              : -1;
            };
            int hi = nibble(hex[2 * k]), lo = nibble(hex[2 * k + 1]);
            if (hi < 0 || lo < 0) return false;
            given[k] = static_cast<unsigned char>(hi * 16 + lo);
        }
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned int len = 0;
        if (!HMAC(EVP_sha256(), app_secret_.data(), static_cast<int>(app_secret_.size()),
                  reinterpret_cast<const unsigned char*>(body.data()), body.size(), mac, &len) ||
            len != SHA256_DIGEST_LENGTH)
            return false;
        return CRYPTO_memcmp(mac, given, SHA256_DIGEST_LENGTH) == 0;
    }

    // An authenticated body that cannot be used: it came from Meta, and Meta
    // would deliver the same bytes again on any non-2xx answer, so it is kept
    // in the quarantine and acknowledged (503 if it could not be kept).
    void unusable(std::string_view body, const std::string& why, sb::HttpResponse& resp) {
        if (!keep(body, why)) {
            resp.respond(503, "{\"error\":\"not committed, deliver again\"}");
            return;
        }
        resp.respond(200, "{\"status\":\"quarantined\",\"reason\":" + sb::json_quote(why) + "}");
    }

    bool keep(std::string_view body, const std::string& why) {
        std::string ref = "POST " + sb::format_time(host().now_ms());
        sb::Status s = host().quarantine(body, why, ref.c_str());
        if (s != SB_OK) {
            host().count("quarantine_failed");
            host().error("could not quarantine a POST (" + why + "); answered 503");
            return false;
        }
        host().count("bodies_quarantined");
        host().warn("quarantined a POST of " + std::to_string(body.size()) + " bytes: " + why);
        return true;
    }

    void warn_limited(std::atomic<std::int64_t>& last, const std::string& message) {
        std::int64_t now = host().now_ms();
        std::int64_t before = last.load();
        if (before != 0 && now - before < kWarnEveryMs) return;
        if (!last.compare_exchange_strong(before, now)) return;
        host().warn(message + " (further ones within a minute are only counted)");
    }

    struct Batch {
        std::vector<sb::Record> records;
        std::vector<std::string> ids;   // wamid of each record
        std::vector<std::string> where; // its position in the body
        std::vector<std::string> problems;
        std::size_t statuses = 0, ignored = 0, other_number = 0, recent = 0, reactions = 0;
    };

    // Walks the envelope. Returns the reason if its structure is wrong (then
    // nothing of it is emitted); problems with single messages go to
    // batch.problems and the other messages are emitted.
    std::optional<std::string> read(const Doc& doc, Batch& batch) {
        auto object = doc.text("object");
        if (!object || *object != "whatsapp_business_account")
            return std::string("object is not \"whatsapp_business_account\"");
        std::size_t entries = doc.count("entry");
        if (entries == 0) return std::string("no entry array");
        for (std::size_t e = 0; e < entries; ++e) {
            std::string eb = "entry[" + std::to_string(e) + "]";
            std::size_t changes = doc.count(eb + ".changes");
            if (changes == 0) return eb + " has no changes array";
            for (std::size_t c = 0; c < changes; ++c) {
                std::string cb = eb + ".changes[" + std::to_string(c) + "]";
                auto field = doc.text(cb + ".field");
                if (!field) return cb + " has no field";
                if (!doc.is_object(cb + ".value")) return cb + " has no value object";
                if (*field != "messages") {
                    ++batch.ignored; // other subscriptions (templates, account updates)
                    continue;
                }
                read_change(doc, cb + ".value", batch);
            }
        }
        return std::nullopt;
    }

    void read_change(const Doc& doc, const std::string& vb, Batch& batch) {
        auto number_id = doc.text(vb + ".metadata.phone_number_id");
        if (!numbers_.empty() &&
            (!number_id || std::find(numbers_.begin(), numbers_.end(), *number_id) == numbers_.end())) {
            ++batch.other_number;
            return;
        }
        auto display = doc.text(vb + ".metadata.display_phone_number");
        batch.statuses += doc.count(vb + ".statuses");

        std::map<std::string, std::string> names; // wa_id -> profile name
        std::size_t contacts = doc.count(vb + ".contacts");
        for (std::size_t k = 0; k < contacts; ++k) {
            std::string kb = vb + ".contacts[" + std::to_string(k) + "]";
            auto wa_id = doc.text(kb + ".wa_id");
            auto name = doc.text(kb + ".profile.name");
            if (wa_id && name && !name->empty()) names.emplace(*wa_id, *name);
        }

        std::size_t messages = doc.count(vb + ".messages");
        for (std::size_t m = 0; m < messages; ++m) {
            std::string mb = vb + ".messages[" + std::to_string(m) + "]";
            auto id = doc.text(mb + ".id");
            auto from = doc.text(mb + ".from");
            auto at = epoch_seconds(doc.get(mb + ".timestamp"));
            auto type = doc.text(mb + ".type").value_or("");
            if (!id || id->empty() || !from || from->empty() || !at) {
                batch.problems.push_back(mb + ": id, from or timestamp missing or malformed");
                continue;
            }
            if (type == "reaction") { // an emoji on an earlier message: not a contact
                ++batch.reactions;
                continue;
            }
            if (recent_.contains(*id)) { // delivered again within the burst window
                ++batch.recent;
                continue;
            }
            sb::Record rec = host().record();
            rec.meta(SB_META_CHANNEL, "whatsapp")
                .meta(SB_META_EXTERNAL_ID, *id)
                .meta(SB_META_OCCURRED_AT, *at)
                .meta(SB_META_SUBJECT_REF, *from);
            rec.set("contact.phone", *from, "contact.phone");
            if (auto n = names.find(*from); n != names.end())
                rec.set("citizen.name", n->second, "identity.name");
            if (display && !display->empty())
                rec.set("hints.business_number", *display, "classification.hint");
            if (number_id && !number_id->empty())
                rec.set("vendor.phone_number_id", *number_id, "vendor.id");
            rec.set("content.type", type.empty() ? "unknown" : type, "content.meta");
            if (auto problem = read_content(doc, mb, type, rec)) {
                host().count("messages_unmapped");
                batch.problems.push_back(mb + ": " + *problem);
                continue;
            }
            batch.records.push_back(std::move(rec));
            batch.ids.push_back(*id);
            batch.where.push_back(mb);
        }
    }

    // The message's content by type. Returns why it cannot be mapped.
    std::optional<std::string> read_content(const Doc& doc, const std::string& mb,
                                            const std::string& type, sb::Record& rec) {
        auto text = [&](const std::string& path) {
            if (auto t = doc.text(path); t && !t->empty()) {
                rec.set("content.text", *t, "content.free_text");
                return true;
            }
            return false;
        };
        if (type == "text") {
            if (!text(mb + ".text.body")) return std::string("text message without text.body");
            return std::nullopt;
        }
        for (const MediaType& media : kMedia) {
            if (type != media.type) continue;
            std::string base = mb + "." + media.type;
            auto media_id = doc.text(base + ".id");
            if (!media_id || media_id->empty()) return type + " message without a media id";
            std::string uri = "whatsapp-media:" + *media_id;
            std::string mime = doc.text(base + ".mime_type").value_or("application/octet-stream");
            auto sha = doc.text(base + ".sha256");
            sb_attachment a{};
            a.struct_size = sizeof a;
            a.name = media.type;
            a.uri = uri.c_str();
            a.media_type = mime.c_str();
            a.size = -1;
            // Meta's digest of the media file; kept only in the documented form.
            a.sha256 = sha && is_hex64(*sha) ? sha->c_str() : nullptr;
            a.category = media.category;
            rec.attach(a);
            if (media.caption) text(base + ".caption");
            return std::nullopt;
        }
        if (type == "button") {
            if (!text(mb + ".button.text")) return std::string("button message without button.text");
            return std::nullopt;
        }
        if (type == "interactive") {
            if (text(mb + ".interactive.button_reply.title") ||
                text(mb + ".interactive.list_reply.title"))
                return std::nullopt;
            return std::string("interactive message without a reply title");
        }
        return "message type " + sb::json_quote(type.substr(0, 32)) + " is not mapped";
    }

    const std::string app_secret_;
    const std::string verify_token_;
    const std::size_t max_body_;
    const std::vector<std::string> numbers_;
    const bool also_via_landbot_;
    const std::string path_;

    RecentIds recent_;
    std::atomic<std::int64_t> last_sig_warn_{0}, last_size_warn_{0}, last_verify_warn_{0};
};

} // namespace

SB_PLUGIN(WhatsAppSource)
