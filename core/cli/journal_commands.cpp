#include "cli/journal_commands.hpp"

#include "audit/audit_log.hpp"
#include "daemon.hpp"
#include "pipeline/explain.hpp"
#include "pipeline/journal.hpp"
#include "pipeline/retention.hpp"
#include "store/codec.hpp"
#include "store/store.hpp"
#include "util/text.hpp"

#include <switchboard/detail/abi.hpp>
#include <switchboard/detail/json_record.hpp>

#include <chrono>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <sstream>

namespace switchboard::cli {

namespace {

std::int64_t now_ms() {
    using namespace std::chrono;
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

// Loads and validates the config (as `check` does); prints problems.
std::unique_ptr<Prepared> load(const Args& a, const char* command) {
    if (!a.config) {
        std::cerr << "switchboard " << command << ": -c FILE is required; see switchboard " << command
                  << " --help\n";
        return nullptr;
    }
    auto p = prepare({*a.config, a.plugin_dirs, a.overrides});
    if (p->diagnostics.has_errors()) {
        for (const auto& r : p->registry.refused()) std::cerr << r.str() << "\n";
        for (const auto& item : p->diagnostics.all()) std::cerr << item.str() << "\n";
        std::cerr << a.config->string() << ": " << p->diagnostics.error_count() << " error(s)\n";
        return nullptr;
    }
    return p;
}

// Reads only the config's own sections (no plugins needed): for commands that
// look at a data directory.
std::unique_ptr<config::Config> load_config_only(const Args& a, const char* command) {
    if (!a.config) {
        std::cerr << "switchboard " << command << ": -c FILE is required; see switchboard " << command
                  << " --help\n";
        return nullptr;
    }
    config::Diagnostics d;
    auto c = config::load_config(*a.config, d, a.overrides);
    if (d.has_errors()) {
        for (const auto& item : d.all()) std::cerr << item.str() << "\n";
        return nullptr;
    }
    return c;
}

std::unique_ptr<store::Store> open_journal(const config::Config& c) {
    auto file = c.node.data_dir / "journal.db";
    if (!std::filesystem::exists(file)) {
        std::cerr << "no journal at " << file.string() << " (has a node run on this config?)\n";
        return nullptr;
    }
    return store::open_sqlite(file.string());
}

std::string when(std::int64_t at, std::int64_t now) {
    std::string in = at > now ? "in " + text::format_duration((at - now) / 60'000 * 60'000)
                              : "due now";
    if (at > now && at - now < 60'000) in = "in under a minute";
    return sb::detail::format_time(at) + " (" + in + ")";
}

} // namespace

int cmd_explain(const Args& a) {
    if (a.positional.size() != 1) {
        std::cerr << "switchboard explain: give one RECORD.json; see switchboard explain --help\n";
        return 2;
    }
    auto p = load(a, "explain");
    if (!p) return 2;
    const std::string file = a.positional[0];
    std::ifstream in(file, std::ios::binary);
    if (!in) {
        std::cerr << file << ": cannot read\n";
        return 2;
    }
    std::string json((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (json.size() > 4 * 1024 * 1024) {
        std::cerr << file << ": larger than 4 MiB; not a record\n";
        return 2;
    }
    sb_record record;
    sb::detail::JsonError error;
    sb::detail::RecordReadOptions options;
    if (!sb::detail::read_record_json(json, record, error, options)) {
        // Perhaps a record as a destination received it (with "id").
        sb_record again;
        sb::detail::JsonError second;
        options.envelope = true;
        if (!sb::detail::read_record_json(json, again, second, options)) {
            std::cerr << file << ": not a record: " << error.text() << "\n";
            return 2;
        }
        record = std::move(again);
    }
    const auto& c = *p->config;
    std::string source = a.source.value_or("");
    if (source.empty())
        if (const char* s = record.data.meta("source")) source = s;
    if (source.empty() && c.sources.size() == 1) source = c.sources[0].name;
    if (!source.empty()) {
        if (!c.find_instance(source)) {
            std::cerr << "switchboard explain: no source instance named '" << source << "' in "
                      << a.config->string() << "\n";
            return 2;
        }
        record.data.set_meta_at(sb::detail::meta_index("source"), source);
    }
    if (!record.data.meta("id")) record.data.set_meta_at(sb::detail::meta_index("id"), "(" + file + ")");
    std::cout << pipeline::explain(*p->policy, record, now_ms(), p->policy->destinations());
    return 0;
}

int cmd_retention(const Args& a) {
    if (a.dry_run == a.pending) {
        std::cerr << "switchboard retention: give --dry-run or --pending; see switchboard retention --help\n";
        return 2;
    }
    auto c = load_config_only(a, "retention");
    if (!c) return 2;
    auto st = open_journal(*c);
    if (!st) return 1;
    std::int64_t now = now_ms();
    // Records kept by legal holds (switchboard hold): the sweeper skips their
    // whole chunk while a hold is in force.
    std::map<std::int64_t, std::vector<store::HeldRecord>> held;
    for (auto& h : st->held_records(now)) held[h.chunk].push_back(std::move(h));
    if (a.pending) {
        // Held chunks are skipped whole by the sweeper: every record in one
        // is kept, and those past their expiry are kept only by the hold.
        std::size_t kept = 0, kept_past = 0;
        for (const auto& [chunk, records] : held) {
            auto info = st->chunk_info(chunk);
            if (!info) continue;
            kept += info->count;
            bool past = info->expires_at <= now;
            kept_past += past ? info->count : 0;
            std::cout << "chunk " << chunk << ": " << info->count << " record(s) kept by holds, expiry "
                      << when(info->expires_at, now) << (past ? " [past expiry: deleted when the holds end]" : "")
                      << "; held:";
            for (const auto& h : records) std::cout << " " << h.record_id << " (hold " << h.hold << ")";
            std::cout << "\n";
        }
        if (kept)
            std::cout << kept << " record(s) kept by holds, " << kept_past
                      << " of them past their expiry; see switchboard hold list\n";
        auto tasks = st->erase_tasks(INT64_MAX, 100000);
        if (tasks.empty()) {
            std::cout << "no erase steps outstanding\n";
            return 0;
        }
        const std::int64_t deadline = c->retention.receipt_deadline_ms;
        std::size_t overdue = 0;
        for (const auto& t : tasks) overdue += pipeline::erase_overdue(t, now, deadline) ? 1 : 0;
        std::cout << tasks.size() << " erase task(s) outstanding";
        if (overdue)
            std::cout << ", " << overdue << " OVERDUE (unconfirmed for longer than retention.receipt_deadline, "
                      << text::format_duration(deadline) << ")";
        std::cout << ":\n";
        for (const auto& t : tasks) {
            std::vector<store::EraseItem> items;
            store::decode_items(t.items, items);
            std::cout << "  " << (t.target == store::EraseTarget::Source ? "vendor copy at " : "notice to ")
                      << t.instance << (t.reason == SB_ERASE_REQUEST ? " (erasure on request)" : "") << ": "
                      << (items.size() - std::min<std::size_t>(t.done, items.size()))
                      << " of " << items.size() << " record(s) left, since "
                      << sb::detail::format_time(t.created_at) << ", " << t.attempts
                      << " failed attempt(s)" << (t.last_error.empty() ? "" : ", last: " + t.last_error)
                      << ", next " << when(t.next_at, now)
                      << (pipeline::erase_overdue(t, now, deadline) ? " [OVERDUE: no receipt]" : "") << "\n";
        }
        return 0;
    }
    std::int64_t until = INT64_MAX;
    if (a.within) {
        auto d = text::parse_duration(*a.within);
        if (!d) {
            std::cerr << "switchboard retention: --within takes a duration such as \"7d\"\n";
            return 2;
        }
        until = now + *d;
    }
    auto chunks = st->chunks_expiring_before(until, 100000);
    std::map<std::string, std::uint64_t> per_source;
    std::uint64_t total = 0, kept = 0;
    std::cout << std::left << std::setw(16) << "RECORD" << std::setw(18) << "SOURCE" << std::setw(12)
              << "CHANNEL" << std::setw(20) << "CATEGORY" << "EXPIRES\n";
    for (const auto& ch : chunks) {
        auto body = st->chunk_body(ch.id);
        if (!body) continue;
        store::ChunkHeads table;
        if (!table.read(*body)) continue;
        std::size_t pos = table.first;
        while (pos < body->size()) {
            sb_record r;
            if (!store::decode(*body, pos, r, nullptr, &table)) break;
            auto meta = [&](const char* k) {
                const char* v = r.data.meta(k);
                return std::string(v ? v : "-");
            };
            auto expires = sb::detail::parse_time(meta("expires_at")).value_or(ch.expires_at);
            std::string hold;
            if (auto it = held.find(ch.id); it != held.end()) {
                ++kept;
                for (const auto& h : it->second)
                    hold += (hold.empty() ? " [held: " : ", ") + std::string(h.record_id == meta("id") ? "" : "chunk of ") +
                            h.record_id + " hold " + std::to_string(h.hold);
                hold += "; kept while held]";
            }
            std::cout << std::setw(16) << meta("id") << std::setw(18) << meta("source") << std::setw(12)
                      << meta("channel") << std::setw(20) << meta("category") << when(expires, now) << hold << "\n";
            ++per_source[meta("source")];
            ++total;
        }
    }
    std::cout << total << " record(s) will expire" << (a.within ? " within " + *a.within : "");
    if (!per_source.empty()) {
        std::cout << " (";
        bool first = true;
        for (const auto& [s, n] : per_source) {
            std::cout << (first ? "" : ", ") << s << ": " << n;
            first = false;
        }
        std::cout << ")";
    }
    if (kept) std::cout << "; " << kept << " of them held (not deleted while a hold is in force)";
    std::cout << "; nothing was deleted (dry run)\n";
    return 0;
}

int cmd_audit(const Args& a) {
    if (a.positional.size() != 1 || a.positional[0] != "verify") {
        std::cerr << "switchboard audit: usage: switchboard audit verify -c FILE\n";
        return 2;
    }
    auto c = load_config_only(a, "audit");
    if (!c) return 2;
    auto dir = c->node.data_dir / "audit";
    if (!std::filesystem::exists(dir)) {
        std::cerr << "no audit trail at " << dir.string() << " (has a node run on this config?)\n";
        return 1;
    }
    // The journal keeps the head of the chain, and the entries it committed
    // that may not have reached the files yet.
    std::optional<audit::Head> head;
    std::vector<std::pair<std::uint64_t, std::string>> saved;
    if (std::filesystem::exists(c->node.data_dir / "journal.db")) {
        auto st = store::open_sqlite((c->node.data_dir / "journal.db").string());
        head = pipeline::committed_audit_head(*st);
        saved = st->pending_audit();
    }
    auto result = audit::AuditLog::verify(dir, saved.empty() ? head : std::nullopt);
    bool ok = result.ok;
    for (const auto& p : result.problems)
        std::cout << dir.string() << "/" << p.file << ":" << p.line << ": "
                  << (p.seq ? "entry " + std::to_string(p.seq) + ": " : "") << p.what << "\n";
    std::uint64_t pending = 0;
    if (ok && !saved.empty()) {
        audit::Head reached = result.last;
        for (const auto& [last, lines] : saved) {
            std::string problem;
            auto h = audit::AuditLog::verify_saved(reached, lines, problem);
            if (!h) {
                std::cout << "entries committed but not yet in the files: " << problem << "\n";
                ok = false;
                break;
            }
            pending += h->seq - reached.seq;
            reached = *h;
        }
        if (ok && head && !(reached == *head)) {
            std::cout << "the trail ends at entry " << reached.seq << " but the journal recorded entry "
                      << head->seq << " (entries removed or rewritten)\n";
            ok = false;
        }
    }
    if (!ok) {
        std::cout << "audit trail FAILED verification\n";
        return 1;
    }
    std::cout << "audit trail OK: " << result.entries << " entries in " << result.files << " file(s)";
    if (pending) std::cout << ", and " << pending << " committed entries not yet written to the files";
    if (head) std::cout << "; head " << head->seq << " matches the journal";
    std::cout << "\n";
    return 0;
}

int cmd_deadletters(const Args& a) {
    std::string action = a.positional.empty() ? "list" : a.positional[0];
    if (action != "list" && action != "retry") {
        std::cerr << "switchboard deadletters: unknown action '" << action << "'; use list or retry\n";
        return 2;
    }
    auto c = load_config_only(a, "deadletters");
    if (!c) return 2;
    auto st = open_journal(*c);
    if (!st) return 1;
    std::string dest = a.destination.value_or("");
    if (!dest.empty() && !c->find_instance(dest)) {
        std::cerr << "switchboard deadletters: no destination named '" << dest << "'\n";
        return 2;
    }
    auto letters = st->dead_letters(dest);
    std::int64_t now = now_ms();
    if (action == "list") {
        if (a.all || a.positional.size() > 1) {
            std::cerr << "switchboard deadletters list takes no ids\n";
            return 2;
        }
        if (letters.empty()) {
            std::cout << "no dead letters" << (dest.empty() ? "" : " for " + dest) << "\n";
            return 0;
        }
        for (const auto& d : letters)
            std::cout << d.id << "  " << d.destination << "  seq " << d.seq << "  " << d.record_id << "  "
                      << d.attempts << " attempt(s)  " << d.error << (d.retry ? "  [retry requested]" : "")
                      << "  expires " << when(d.expires_at, now) << "\n";
        std::cout << letters.size() << " dead letter(s)\n";
        return 0;
    }
    std::vector<std::int64_t> ids;
    if (a.all) {
        for (const auto& d : letters) ids.push_back(d.id);
    } else {
        for (std::size_t i = 1; i < a.positional.size(); ++i) {
            try {
                ids.push_back(std::stoll(a.positional[i]));
            } catch (...) {
                std::cerr << "switchboard deadletters retry: '" << a.positional[i] << "' is not an id\n";
                return 2;
            }
        }
    }
    if (ids.empty()) {
        std::cerr << "switchboard deadletters retry: give ids, or --all\n";
        return 2;
    }
    std::size_t asked = 0;
    st->write([&](store::Txn& t) {
        for (auto id : ids)
            if (t.request_retry(id)) ++asked;
            else std::cerr << "no dead letter " << id << "\n";
    });
    std::cout << asked << " dead letter(s) will be delivered again by the running node\n";
    return asked == ids.size() ? 0 : 1;
}

} // namespace switchboard::cli
