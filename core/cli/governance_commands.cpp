#include "cli/governance_commands.hpp"

#include "config/config.hpp"
#include "governance/erasure.hpp"
#include "governance/holds.hpp"
#include "governance/sar.hpp"
#include "store/store.hpp"
#include "util/text.hpp"

#include <switchboard/detail/abi.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <iostream>
#include <thread>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace switchboard::cli {

namespace {

const char* kSarHelp = R"(Usage: switchboard sar -c FILE IDENTIFIERS [--out DIR] [--hold --by NAME]
       switchboard sar -c FILE close SAR-ID --by NAME

Subject access (UK GDPR Art. 15): finds every record the node holds about a
person and writes SAR-ID.json (the bundle) and SAR-ID.html (a readable,
self-contained report) into DIR (default: the current directory), mode 0600:
the records and their fields, source systems, purposes, which departments
received which fields and when, and when each will be deleted.

Identifiers (give every one you know; formats are normalised):
  --phone P            any UK form: 07700 900123, +44 7700 900123, 0044...
  --email E            any case
  --nino N             any spacing or case; the suffix letter is optional
  --landbot-id ID      the Landbot customer id
  --reference REF      a council tax account, benefit claim or case number
  --name NAME --postcode PC   only together: a name or a postcode alone
                       matches other people and is refused
A record is included when a strong identifier (phone, e-mail, NINO, Landbot
id, reference) matches one of its fields, or when both the name and the
postcode match fields of the same record.

--hold places a legal hold ("subject access request SAR-ID") on everything
found, so nothing is deleted while the request is answered (DPA 2018 s.173);
`sar close SAR-ID --by NAME` ends it.

Options:
  -c, --config FILE    the config file (required)
  --set KEY=VALUE      override one key of the file (repeatable)
  --out DIR            where to write the bundle and the report
  --hold               hold what was found (needs --by)
  --by NAME            who opens (with --hold) or closes the request
  -h, --help           this text
)";

const char* kHoldHelp = R"(Usage: switchboard hold -c FILE add (--record ID... | --subject KEY=VALUE...)
                          --reason TEXT --by NAME [--until DATE]
       switchboard hold -c FILE list
       switchboard hold -c FILE end HOLD-ID --by NAME

A legal hold stops retention deleting the records it names (a complaint, a
tribunal, a subject access request) until it is ended, or until DATE
(YYYY-MM-DD: through that day, UTC; or an RFC 3339 time) when it expires by
itself. It takes effect at once, on a running node too; the node writes the
audit entries (hold set, ended, expired) at its next sweep.

--record ID holds one record (repeatable). --subject KEY=VALUE holds every
record found for a person, as `switchboard sar` finds them (KEY is phone,
email, nino, landbot-id, reference, name or postcode; repeatable, e.g.
--subject name="Jane Smith" --subject postcode="LS1 4AB"): the records held
now, not ones that arrive later.

`list` shows every hold: id, in force / ended / expired, who set it and when,
until, the reason, the subject access request, the records.

Options:
  -c, --config FILE    the config file (required)
  --set KEY=VALUE      override one key of the file (repeatable)
  -h, --help           this text
)";

std::int64_t now_ms() {
    using namespace std::chrono;
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

struct Options {
    std::optional<std::filesystem::path> config;
    std::vector<std::string> overrides, positional, records, subject;
    std::map<std::string, std::string> values; // --name, --phone, ... --by, --reason, --until, --out
    bool hold = false, help = false;
    std::set<std::string> flags; // options without a value that were given
};

// Parses `switchboard CMD ...`; `valued`: options taking a value. Prints
// the problem and returns nullopt on bad usage.
std::optional<Options> parse(int argc, char** argv, const std::string& valued, const char* command,
                             bool takes_hold, const std::string& flags = "") {
    Options o;
    for (int i = 2; i < argc; ++i) {
        std::string arg = argv[i], name = arg, value;
        bool inline_value = false;
        if (arg.rfind("--", 0) == 0 && arg.find('=') != std::string::npos) {
            name = arg.substr(0, arg.find('='));
            value = arg.substr(arg.find('=') + 1);
            inline_value = true;
        }
        if (name == "-c") name = "--config";
        if (name == "-h" || name == "--help") {
            o.help = true;
            continue;
        }
        if (name.empty() || name[0] != '-') {
            o.positional.push_back(arg);
            continue;
        }
        if (name == "--hold" && takes_hold) {
            o.hold = true;
            continue;
        }
        if (!inline_value && (" " + flags + " ").find(" " + name + " ") != std::string::npos) {
            o.flags.insert(name);
            continue;
        }
        if ((" " + valued + " ").find(" " + name + " ") == std::string::npos) {
            std::cerr << "switchboard " << command << ": unknown option '" << name << "'; see switchboard "
                      << command << " --help\n";
            return std::nullopt;
        }
        if (!inline_value) {
            if (i + 1 >= argc) {
                std::cerr << "switchboard " << command << ": " << name << " needs a value\n";
                return std::nullopt;
            }
            value = argv[++i];
        }
        if (name == "--config") o.config = value;
        else if (name == "--set") o.overrides.push_back(value);
        else if (name == "--record") o.records.push_back(value);
        else if (name == "--subject") o.subject.push_back(value);
        else if (o.values.count(name)) {
            std::cerr << "switchboard " << command << ": " << name << " given twice\n";
            return std::nullopt;
        } else o.values[name] = value;
    }
    return o;
}

// "ACTION ID": the id, when exactly one whole integer follows the action.
std::optional<std::int64_t> action_id(const Options& o) {
    try {
        if (o.positional.size() != 2) return std::nullopt;
        std::size_t used = 0;
        std::int64_t id = std::stoll(o.positional[1], &used);
        if (used != o.positional[1].size()) return std::nullopt;
        return id;
    } catch (const std::exception&) {
        return std::nullopt;
    }
}

std::string value(const Options& o, const char* name) {
    auto it = o.values.find(name);
    return it == o.values.end() ? std::string() : it->second;
}

std::unique_ptr<store::Store> open_store(const Options& o, const char* command, std::filesystem::path& data_dir,
                                         std::int64_t* receipt_deadline_ms = nullptr) {
    if (!o.config) {
        std::cerr << "switchboard " << command << ": -c FILE is required; see switchboard " << command << " --help\n";
        return nullptr;
    }
    config::Diagnostics d;
    auto c = config::load_config(*o.config, d, o.overrides);
    if (d.has_errors()) {
        for (const auto& item : d.all()) std::cerr << item.str() << "\n";
        return nullptr;
    }
    data_dir = c->node.data_dir;
    if (receipt_deadline_ms) *receipt_deadline_ms = c->retention.receipt_deadline_ms;
    auto file = data_dir / "journal.db";
    if (!std::filesystem::exists(file)) {
        std::cerr << "no journal at " << file.string() << " (has a node run on this config?)\n";
        return nullptr;
    }
    return store::open_sqlite(file.string());
}

bool write_private(const std::filesystem::path& file, const std::string& text) {
    int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return false;
    std::size_t off = 0;
    while (off < text.size()) {
        ssize_t n = ::write(fd, text.data() + off, text.size() - off);
        if (n <= 0) {
            ::close(fd);
            return false;
        }
        off += static_cast<std::size_t>(n);
    }
    bool ok = ::fsync(fd) == 0;
    return ::close(fd) == 0 && ok;
}

// The identifiers of a query, from --phone etc. (sar) or --subject KEY=VALUE (hold).
bool query_from(const Options& o, bool from_subject, governance::SubjectQuery& q, const char* command) {
    std::map<std::string, std::string*> keys = {
        {"name", &q.name},   {"postcode", &q.postcode},     {"phone", &q.phone},        {"email", &q.email},
        {"nino", &q.nino},   {"landbot-id", &q.landbot_id}, {"reference", &q.reference},
    };
    if (from_subject) {
        for (const auto& s : o.subject) {
            auto eq = s.find('=');
            auto it = eq == std::string::npos ? keys.end() : keys.find(s.substr(0, eq));
            if (it == keys.end()) {
                std::cerr << "switchboard " << command << ": --subject takes KEY=VALUE with KEY one of name, "
                             "postcode, phone, email, nino, landbot-id, reference\n";
                return false;
            }
            *it->second = s.substr(eq + 1);
        }
    } else {
        for (auto& [k, v] : keys) *v = value(o, ("--" + k).c_str());
    }
    std::string error;
    if (!q.normalise(error)) {
        std::cerr << "switchboard " << command << ": " << error << "\n";
        return false;
    }
    return true;
}

} // namespace

int sar_main(int argc, char** argv);
int hold_main(int argc, char** argv);

const char* sar_help() { return kSarHelp; }
const char* hold_help() { return kHoldHelp; }

int sar_main(int argc, char** argv) {
    auto o = parse(argc, argv,
                   "--config --set --name --postcode --phone --email --nino --landbot-id --reference --out --by",
                   "sar", true);
    if (!o) return 2;
    if (o->help) {
        std::cout << kSarHelp;
        return 0;
    }
    std::string by = value(*o, "--by");
    bool closing = !o->positional.empty() && o->positional[0] == "close";
    if (closing) {
        if (o->positional.size() != 2 || by.empty()) {
            std::cerr << "switchboard sar: usage: switchboard sar -c FILE close SAR-ID --by NAME\n";
            return 2;
        }
    } else if (!o->positional.empty()) {
        std::cerr << "switchboard sar: unexpected argument '" << o->positional[0] << "'; see switchboard sar --help\n";
        return 2;
    }
    if (o->hold && by.empty()) {
        std::cerr << "switchboard sar: --hold needs --by NAME (who opens the request)\n";
        return 2;
    }
    governance::SubjectQuery q;
    if (!closing && !query_from(*o, false, q, "sar")) return 2;
    std::filesystem::path out = value(*o, "--out").empty() ? "." : value(*o, "--out");
    if (!closing && !std::filesystem::is_directory(out)) {
        std::cerr << "switchboard sar: --out " << out.string() << " is not a directory\n";
        return 2;
    }
    std::filesystem::path data_dir;
    auto st = open_store(*o, "sar", data_dir);
    if (!st) return o->config ? 1 : 2;
    std::int64_t now = now_ms();
    if (closing) {
        std::size_t n = governance::end_sar_holds(*st, o->positional[1], by, now);
        if (!n) {
            std::cerr << "switchboard sar: no hold in force for " << o->positional[1] << "\n";
            return 1;
        }
        std::cout << o->positional[1] << " closed: " << n
                  << " hold(s) ended; the records are deleted at the first sweep after their expiry\n";
        return 0;
    }
    auto result = governance::find_subject(*st, q, data_dir / "audit", now);
    if (std::string error; o->hold && !governance::hold_found(*st, result, by, now, error)) {
        std::cerr << "switchboard sar: could not place the hold: " << error << "\n";
        return 1;
    }
    auto json = out / (result.id + ".json"), page = out / (result.id + ".html");
    if (!write_private(json, governance::sar_json(result)) || !write_private(page, governance::sar_html(result))) {
        std::cerr << "switchboard sar: cannot write " << json.string() << " or " << page.string() << "\n";
        return 1;
    }
    std::cout << result.id << ": " << result.records.size() << " record(s) found (searched by " << result.query_kinds
              << "; " << result.records_scanned << " record(s) in " << result.chunks_scanned << " chunk(s) scanned)\n";
    if (result.unreadable_chunks)
        std::cout << "warning: " << result.unreadable_chunks << " chunk(s) could not be read completely\n";
    for (const auto& r : result.records) {
        std::cout << "  " << r.id << "  " << r.source << "  " << r.category << "  sent to " << r.disclosures.size()
                  << " department(s)  expires " << sb::detail::format_time(r.expires_at)
                  << (r.held_by.empty() ? "" : "  [held]") << "\n";
    }
    if (result.hold) std::cout << "hold " << result.hold << " placed; end it with: switchboard sar close " << result.id << " --by NAME\n";
    std::cout << "wrote " << json.string() << " and " << page.string() << " (mode 0600)\n";
    return 0;
}

int hold_main(int argc, char** argv) {
    auto o = parse(argc, argv, "--config --set --record --subject --reason --by --until", "hold", false);
    if (!o) return 2;
    if (o->help) {
        std::cout << kHoldHelp;
        return 0;
    }
    std::string action = o->positional.empty() ? "" : o->positional[0];
    if (action != "add" && action != "list" && action != "end") {
        std::cerr << "switchboard hold: give add, list or end; see switchboard hold --help\n";
        return 2;
    }
    std::string by = value(*o, "--by"), reason = value(*o, "--reason");
    std::int64_t until = 0;
    governance::SubjectQuery q;
    std::int64_t end_id = 0;
    if (action == "add") {
        if (o->positional.size() != 1 || by.empty() || reason.empty() ||
            o->records.empty() == o->subject.empty()) {
            std::cerr << "switchboard hold add: give --record ID... or --subject KEY=VALUE..., with --reason TEXT "
                         "and --by NAME\n";
            return 2;
        }
        if (!value(*o, "--until").empty()) {
            auto t = governance::parse_until(value(*o, "--until"));
            if (!t) {
                std::cerr << "switchboard hold add: --until takes YYYY-MM-DD or an RFC 3339 time\n";
                return 2;
            }
            until = *t;
        }
        if (!o->subject.empty() && !query_from(*o, true, q, "hold add")) return 2;
    } else if (action == "end") {
        auto id = action_id(*o);
        if (!id) {
            std::cerr << "switchboard hold end: usage: switchboard hold -c FILE end HOLD-ID --by NAME\n";
            return 2;
        }
        end_id = *id;
        if (by.empty()) {
            std::cerr << "switchboard hold end: --by NAME is required\n";
            return 2;
        }
    } else if (o->positional.size() != 1) {
        std::cerr << "switchboard hold list takes no arguments\n";
        return 2;
    }
    std::filesystem::path data_dir;
    auto st = open_store(*o, "hold", data_dir);
    if (!st) return o->config ? 1 : 2;
    std::int64_t now = now_ms();
    std::string error;
    if (action == "add") {
        governance::HoldRequest h;
        h.records = o->records;
        h.reason = reason;
        h.by = by;
        h.until = until;
        if (!o->subject.empty()) {
            auto found = governance::find_subject(*st, q, data_dir / "audit", now);
            for (const auto& r : found.records) h.records.push_back(r.id);
            if (h.records.empty()) {
                std::cerr << "switchboard hold add: no records found for the subject (searched by " << q.kinds()
                          << "); nothing held\n";
                return 1;
            }
        }
        auto id = governance::place_hold(*st, h, now, error);
        if (!id) {
            std::cerr << "switchboard hold add: " << error << "\n";
            return 1;
        }
        std::cout << "hold " << *id << " placed on " << h.records.size() << " record(s)"
                  << (until ? " until " + sb::detail::format_time(until) : std::string(" until ended")) << "\n";
        return 0;
    }
    if (action == "end") {
        if (!governance::end_hold(*st, end_id, by, now, error)) {
            std::cerr << "switchboard hold end: " << error << "\n";
            return 1;
        }
        std::cout << "hold " << end_id << " ended; its records are deleted at the first sweep after their expiry\n";
        return 0;
    }
    auto holds = st->holds(std::nullopt);
    if (holds.empty()) {
        std::cout << "no holds\n";
        return 0;
    }
    std::size_t in_force = 0;
    for (const auto& h : holds) {
        std::string state = governance::hold_state(h, now);
        in_force += state == "in force";
        std::cout << h.id << "  " << state << "  set by " << h.set_by << " " << sb::detail::format_time(h.set_at)
                  << "  until " << (h.until ? sb::detail::format_time(h.until) : std::string("ended"));
        if (h.ended_at) std::cout << "  ended " << sb::detail::format_time(h.ended_at) << " by " << h.ended_by;
        std::cout << "\n    reason: " << h.reason << (h.sar.empty() ? "" : "  (" + h.sar + ")") << "\n    "
                  << h.records.size() << " record(s):";
        for (std::size_t i = 0; i < h.records.size() && i < 20; ++i) std::cout << " " << h.records[i];
        if (h.records.size() > 20) std::cout << " ...";
        std::cout << "\n";
    }
    std::cout << holds.size() << " hold(s), " << in_force << " in force\n";
    return 0;
}

namespace {

const char* kEraseHelp = R"(Usage: switchboard erase -c FILE IDENTIFIERS --by NAME [--wait DURATION] [--dry-run]
       switchboard erase -c FILE --record ID... --by NAME [--wait DURATION]
       switchboard erase -c FILE status ERASURE-ID [--json]
       switchboard erase -c FILE list

Erasure on request (UK GDPR Art. 17): erases a person's records ahead of the
retention clock, through the same path as retention - the store (records,
attachments, outbox, dead letters, scrubbed so no byte lingers), the vendor
(each source's erase hook) and every department that received them (erase
notices, confirmed by the department's deletion receipt) - and reports what
is confirmed and what is outstanding.

The records are found as `switchboard sar` finds them (the same identifiers:
--phone, --email, --nino, --landbot-id, --reference, --name with --postcode;
see switchboard sar --help), or named with --record ID (repeatable): the
records held now, not ones that arrive later. A record under a legal hold is
not erased (deleting data to avoid disclosing it is an offence, DPA 2018
s.173): it is reported as held; erase it again when the hold has ended.

The running node carries the erasure out within seconds (it alone writes the
audit trail and talks to the plugins); a node that is stopped does it when it
starts. The command waits up to --wait (default 30s; 0: do not wait) for the
node and the answers, then prints the status. A department that is offline
confirms when its client comes back: `erase status ID` shows it then, and
`switchboard retention --pending` lists every erase step still outstanding.

Options:
  -c, --config FILE    the config file (required)
  --set KEY=VALUE      override one key of the file (repeatable)
  --by NAME            who asks for the erasure (required; audited)
  --record ID          a record to erase (repeatable), instead of identifiers
  --wait DURATION      how long to wait for the node and the confirmations
  --dry-run            list the records that would be erased; erase nothing
  --json               status as JSON
  -h, --help           this text

Exit codes: 0 done and every step confirmed (or the dry run listed), 1 a
failure, 2 bad usage, 3 placed but not complete yet (not carried out, or
steps outstanding: see `erase status`).
)";

int erase_main(int argc, char** argv) {
    auto o = parse(argc, argv,
                   "--config --set --name --postcode --phone --email --nino --landbot-id --reference --by --record "
                   "--wait",
                   "erase", false, "--dry-run --json");
    if (!o) return 2;
    if (o->help) {
        std::cout << kEraseHelp;
        return 0;
    }
    bool dry_run = o->flags.count("--dry-run") > 0, json = o->flags.count("--json") > 0;
    std::string action = o->positional.empty() ? "" : o->positional[0];
    std::int64_t status_id = 0;
    if (action == "status") {
        auto id = action_id(*o);
        if (!id) {
            std::cerr << "switchboard erase: usage: switchboard erase -c FILE status ERASURE-ID [--json]\n";
            return 2;
        }
        status_id = *id;
    } else if (action == "list") {
        if (o->positional.size() != 1) {
            std::cerr << "switchboard erase list takes no arguments\n";
            return 2;
        }
    } else if (!action.empty()) {
        std::cerr << "switchboard erase: unexpected argument '" << action << "'; see switchboard erase --help\n";
        return 2;
    }
    std::int64_t wait_ms = 30'000;
    if (!value(*o, "--wait").empty()) {
        auto w = text::parse_duration(value(*o, "--wait"));
        if (!w && value(*o, "--wait") != "0") {
            std::cerr << "switchboard erase: --wait takes a duration such as 30s or 2m\n";
            return 2;
        }
        wait_ms = w.value_or(0);
    }
    std::string by = value(*o, "--by");
    governance::SubjectQuery q;
    bool by_subject = false;
    if (action.empty()) {
        by_subject = o->records.empty();
        if (!dry_run && by.empty()) {
            std::cerr << "switchboard erase: --by NAME is required (who asks for the erasure)\n";
            return 2;
        }
        if (by_subject && !query_from(*o, false, q, "erase")) return 2;
        if (!by_subject && !q.kinds().empty()) {
            std::cerr << "switchboard erase: give --record ID... or identifiers, not both\n";
            return 2;
        }
    }
    std::filesystem::path data_dir;
    std::int64_t deadline = 0;
    auto st = open_store(*o, "erase", data_dir, &deadline);
    if (!st) return o->config ? 1 : 2;
    std::int64_t now = now_ms();
    if (action == "list") {
        auto all = st->erasures(1000);
        if (all.empty()) std::cout << "no erasures\n";
        for (const auto& e : all)
            std::cout << e.id << "  asked by " << e.requested_by << " " << sb::detail::format_time(e.requested_at)
                      << "  " << (e.done_at ? "carried out " + sb::detail::format_time(e.done_at) : "not carried out yet")
                      << "\n";
        return 0;
    }
    auto report = [&](std::int64_t id) {
        auto status = governance::erasure_status(*st, data_dir / "audit", id, now_ms(), deadline);
        if (!status) {
            std::cerr << "switchboard erase: no erasure " << id << "\n";
            return 1;
        }
        std::cout << (json ? governance::erasure_json(*status) : governance::erasure_text(*status));
        return status->complete() ? 0 : 3;
    };
    if (action == "status") return report(status_id);
    std::vector<std::string> records = o->records;
    if (by_subject) {
        auto found = governance::find_subject(*st, q, data_dir / "audit", now);
        for (const auto& r : found.records) records.push_back(r.id);
        if (records.empty()) {
            std::cerr << "switchboard erase: no records found for the subject (searched by " << q.kinds()
                      << "); nothing to erase\n";
            return 1;
        }
        if (dry_run) {
            std::cout << found.records.size() << " record(s) would be erased (searched by " << q.kinds() << "):\n";
            for (const auto& r : found.records)
                std::cout << "  " << r.id << "  " << r.source << "  " << r.category << "  sent to "
                          << r.disclosures.size() << " department(s)" << (r.held_by.empty() ? "" : "  [held: not erased]")
                          << "\n";
            return 0;
        }
    } else if (dry_run) {
        for (const auto& r : records) std::cout << "  " << r << "\n";
        return 0;
    }
    std::string error;
    auto id = governance::request_erasure(*st, {records, by}, now, error);
    if (!id) {
        std::cerr << "switchboard erase: " << error << "\n";
        return 1;
    }
    std::cout << "erasure " << *id << " placed for " << records.size() << " record(s)\n";
    // Wait for the node to carry it out and for the answers, bounded.
    auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms);
    while (std::chrono::steady_clock::now() < until) {
        // The audit trail is read only once the store says every step is settled.
        if (governance::erasure_settled(*st, *id)) {
            auto status = governance::erasure_status(*st, data_dir / "audit", *id, now_ms(), deadline);
            if (status && status->complete()) break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    return report(*id);
}

} // namespace

const char* erase_help() { return kEraseHelp; }

int cmd_erase(int argc, char** argv) {
    try {
        return erase_main(argc, argv);
    } catch (const std::exception& e) {
        std::cerr << "switchboard erase: " << e.what() << "\n";
        return 1;
    }
}

int cmd_sar(int argc, char** argv) {
    try {
        return sar_main(argc, argv);
    } catch (const std::exception& e) {
        std::cerr << "switchboard sar: " << e.what() << "\n";
        return 1;
    }
}

int cmd_hold(int argc, char** argv) {
    try {
        return hold_main(argc, argv);
    } catch (const std::exception& e) {
        std::cerr << "switchboard hold: " << e.what() << "\n";
        return 1;
    }
}

} // namespace switchboard::cli
