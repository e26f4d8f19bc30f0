// email: citizen e-mails (RFC 5322 / MIME) from a maildir drop.
//
// The council's mail system delivers each message into <maildir>/new/ (its
// writers create files in tmp/ and rename them into new/; tmp/ is never
// read). Each message is parsed by the plugin's own tolerant MIME parser
// (mime.hpp), its attachments are written under the instance's data
// directory and referenced by file:// URI, and the record is emitted. Only
// once the record is durably committed (SB_OK, or SB_DUPLICATE) is the
// message moved to cur/ with the maildir ":2," suffix, so a crash at any
// point reads it again and the journal's idempotency makes that harmless.
//
// The record's key (external_id) is the Message-ID, or "sha256:<hex>" of the
// raw message when it has none. The state "m.<hash of the key>" lists the
// maildir names holding that message (the first one, and redeliveries); it
// is committed in the same durable commit as the record, so the erase hook
// can always find every copy in the drop and the attachment directory.
//
// Logs carry maildir file names (made by the mail system: time, process,
// host), record ids, counts and reasons; never addresses, subjects, bodies
// or Message-IDs (which often embed an address).
#include "mime.hpp"

#include <switchboard/plugin.hpp>

#include <openssl/evp.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace {

namespace fs = std::filesystem;

constexpr std::size_t kPerPoll = 16;                // messages taken per poll call
constexpr std::size_t kQuarantineHead = 64u << 10;  // bytes kept of an oversized message
constexpr std::size_t kMaxSubject = 4096;           // bytes of subject kept
constexpr char kListSeparator = '/';                // never in a file name

std::string os_error() { return std::strerror(errno); }

std::string sha256_hex(std::string_view data) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr) != 1)
        throw sb::Error(SB_ERR_INTERNAL, "SHA-256 failed");
    static const char* const kHex = "0123456789abcdef";
    std::string out;
    out.reserve(len * 2);
    for (unsigned int i = 0; i < len; ++i) {
        out += kHex[md[i] >> 4];
        out += kHex[md[i] & 0xF];
    }
    return out;
}

// A maildir entry this plugin may touch: a plain name, not hidden.
bool plain_name(std::string_view n) {
    return !n.empty() && n.size() <= 255 && n.front() != '.' && n.find('/') == std::string_view::npos &&
           n.find('\0') == std::string_view::npos;
}

// The unique part of a maildir name: what comes before the ":2,<flags>" info.
std::string base_of(std::string_view name) { return std::string(name.substr(0, name.find(':'))); }

std::vector<std::string> split_list(std::string_view s) {
    std::vector<std::string> out;
    while (!s.empty()) {
        std::size_t sep = s.find(kListSeparator);
        std::string_view item = s.substr(0, sep);
        if (!item.empty()) out.emplace_back(item);
        if (sep == std::string_view::npos) break;
        s.remove_prefix(sep + 1);
    }
    return out;
}

std::string join_list(const std::vector<std::string>& items) {
    std::string out;
    for (const auto& i : items) {
        if (!out.empty()) out += kListSeparator;
        out += i;
    }
    return out;
}

// Cuts `s` to at most `max` bytes without splitting a UTF-8 sequence.
std::string utf8_prefix(std::string_view s, std::size_t max) {
    if (s.size() <= max) return std::string(s);
    std::size_t cut = max;
    while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
    return std::string(s.substr(0, cut));
}

struct Fd {
    int fd = -1;
    explicit Fd(int f) : fd(f) {}
    ~Fd() {
        if (fd >= 0) ::close(fd);
    }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
};

bool read_up_to(int fd, std::size_t max, std::string& out) {
    out.clear();
    char buf[1 << 16];
    while (out.size() < max) {
        ssize_t r = ::read(fd, buf, std::min(sizeof buf, max - out.size()));
        if (r < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        if (r == 0) break;
        out.append(buf, static_cast<std::size_t>(r));
    }
    return true;
}

bool fsync_path(const fs::path& p) {
    int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    bool ok = ::fsync(fd) == 0;
    ::close(fd);
    return ok;
}

// Writes `data` to `path` durably: a temporary file beside it, fsync, rename.
bool write_durably(const fs::path& path, std::string_view data, std::string& error) {
    fs::path tmp = path.parent_path() / (".tmp-" + path.filename().string());
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        error = os_error();
        return false;
    }
    Fd guard(fd);
    std::size_t done = 0;
    while (done < data.size()) {
        ssize_t w = ::write(fd, data.data() + done, data.size() - done);
        if (w < 0) {
            if (errno == EINTR) continue;
            error = os_error();
            return false;
        }
        done += static_cast<std::size_t>(w);
    }
    if (::fsync(fd) != 0 || ::rename(tmp.c_str(), path.c_str()) != 0) {
        error = os_error();
        ::unlink(tmp.c_str());
        return false;
    }
    return true;
}

const char* attachment_category(std::string_view media_type) {
    if (media_type.rfind("image/", 0) == 0) return "media.image";
    if (media_type.rfind("audio/", 0) == 0) return "media.voice";
    return "media.document";
}

class EmailSource : public sb::Plugin {
public:
    static sb::PluginInfo info() {
        sb::PluginInfo i;
        i.name = "email";
        i.version = "0.1.0";
        i.vendor = "Switchboard project";
        i.licence = "Apache-2.0";
        i.description = "Citizen e-mails (RFC 5322/MIME) from a maildir drop, attachments by reference";
        i.kind = SB_KIND_SOURCE;
        i.capabilities = SB_CAP_ATTACHMENTS;
        i.data_categories = {"identity.name",      "contact.email",      "content.free_text",
                             "content.meta",       "classification.hint", "operational.defect",
                             "media.document",     "media.image",        "media.voice"};
        i.config = {
            sb::Field::path("maildir").required().describe(
                "The maildir the mail system delivers to: messages are read from new/ and moved "
                "to cur/ once committed (tmp/ is never read)"),
            sb::Field::size("max_message").range(1024, 1024.0 * 1024 * 1024).fallback("\"25MiB\"").describe(
                "Largest message accepted; larger ones are quarantined (first 64 KiB) and removed "
                "from the drop"),
            sb::Field::integer("max_parts").range(1, 10000).fallback("100").describe(
                "Most MIME parts in a message; more and the message is quarantined"),
            sb::Field::integer("max_depth").range(1, 64).fallback("10").describe(
                "Deepest multipart nesting; deeper and the message is quarantined"),
            sb::Field::size("max_text").range(1024, 64.0 * 1024 * 1024).fallback("\"1MiB\"").describe(
                "Longest body text kept in content.text; a longer one is cut there and kept "
                "whole as an attachment"),
        };
        return i;
    }

    explicit EmailSource(sb::Host host)
        : sb::Plugin(host),
          maildir_(host.string("maildir")),
          new_dir_(maildir_ / "new"),
          cur_dir_(maildir_ / "cur"),
          max_message_(static_cast<std::uint64_t>(host.integer("max_message"))),
          max_text_(static_cast<std::size_t>(host.integer("max_text"))) {
        limits_.max_parts = static_cast<std::size_t>(host.integer("max_parts"));
        limits_.max_depth = static_cast<std::size_t>(host.integer("max_depth"));
        struct stat st {};
        if (::stat(maildir_.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
            throw sb::Error(SB_ERR_INVALID, "config key 'maildir': " + maildir_.string() +
                                                " is not a directory");
        // The mail system may not have made them yet; they belong to the maildir.
        for (const char* sub : {"tmp", "new", "cur"}) {
            fs::path p = maildir_ / sub;
            if (::mkdir(p.c_str(), 0700) != 0 && errno != EEXIST)
                throw sb::Error(SB_ERR_INVALID, "config key 'maildir': cannot create " + p.string() +
                                                    ": " + os_error());
        }
        std::string dd = fs::absolute(host.data_dir()).lexically_normal().string();
        while (dd.size() > 1 && dd.back() == '/') dd.pop_back();
        attachments_ = fs::path(dd) / "attachments";
        std::error_code ec;
        fs::create_directories(attachments_, ec);
        if (ec)
            throw sb::Error(SB_ERR_INTERNAL, "cannot create " + attachments_.string() + ": " + ec.message());
    }

    void start() { host().info("reading maildir " + maildir_.string() + " (new/ -> cur/)"); }

    // Takes up to kPerPoll messages from new/. SB_OK when the drop changed
    // (there may be more), SB_IDLE when there was nothing to take.
    sb::Status poll() {
        std::vector<std::string> names = list(new_dir_);
        // Forget unreadable names that have gone.
        for (auto it = unreadable_.begin(); it != unreadable_.end();)
            it = std::binary_search(names.begin(), names.end(), *it) ? std::next(it) : unreadable_.erase(it);
        std::size_t progress = 0;
        for (const auto& name : names) {
            if (progress >= kPerPoll) break;
            std::lock_guard lock(mutex_); // not while an erase runs
            if (take_guarded(name)) ++progress;
        }
        return progress ? SB_OK : SB_IDLE;
    }

    // Deletes the message from the drop (every copy this instance took: cur/,
    // or new/ if not moved yet) and its attachment files.
    sb::Status erase(const sb::EraseRequest& req) {
        std::lock_guard lock(mutex_);
        host().count("erase_requests");
        std::string record_id(req.record_id);
        std::string external_id(req.external_id), subject_ref;
        if (req.record) {
            if (auto v = req.record->meta(SB_META_SUBJECT_REF)) subject_ref = std::string(*v);
            if (external_id.empty())
                if (auto v = req.record->meta(SB_META_EXTERNAL_ID)) external_id = std::string(*v);
        }
        if (external_id.empty() && subject_ref.empty())
            throw sb::Error(SB_ERR_PERMANENT, "erase of record " + record_id +
                                                  ": the request names neither external_id nor "
                                                  "subject_ref, so no copy can be found");
        std::set<std::string> bases;
        if (plain_name(subject_ref)) bases.insert(base_of(subject_ref));
        std::string key_hash, key;
        if (!external_id.empty()) {
            key_hash = sha256_hex(external_id).substr(0, 32);
            key = "m." + key_hash;
            if (auto known = host().state(key.c_str()))
                for (const auto& n : split_list(*known))
                    if (plain_name(n)) bases.insert(base_of(n));
        }
        std::size_t removed = 0;
        std::string failure;
        for (const fs::path& dir : {cur_dir_, new_dir_}) {
            bool changed = false, listed = false;
            auto entries = list(dir, &listed);
            if (!listed) failure = "cannot list " + dir.string(); // not confirmed: retried
            for (const auto& entry : entries) {
                if (!bases.count(base_of(entry))) continue;
                if (::unlink((dir / entry).c_str()) == 0) {
                    ++removed;
                    changed = true;
                } else if (errno != ENOENT) {
                    failure = "cannot remove " + (dir / entry).string() + ": " + os_error();
                }
            }
            if (changed && !fsync_path(dir)) failure = "cannot sync " + dir.string() + ": " + os_error();
        }
        std::size_t attachment_files = 0;
        if (!key_hash.empty()) {
            std::error_code ec;
            fs::path dir = attachments_ / key_hash;
            if (fs::exists(dir, ec)) {
                attachment_files = static_cast<std::size_t>(fs::remove_all(dir, ec));
                if (ec) failure = "cannot remove " + dir.string() + ": " + ec.message();
                else fsync_path(attachments_);
            }
        }
        if (!failure.empty())
            throw sb::Error(SB_ERR_TRANSIENT, "erase of record " + record_id + ": " + failure);
        if (!key.empty() && host().clear_state(key.c_str()) != SB_OK)
            throw sb::Error(SB_ERR_TRANSIENT, "erase of record " + record_id +
                                                  ": files removed, but the state could not be updated");
        if (removed) host().count("files_erased", removed);
        host().info("erased record " + record_id + ": " + std::to_string(removed) +
                    " message file(s) and " + std::to_string(attachment_files ? attachment_files - 1 : 0) +
                    " attachment file(s) removed");
        return SB_OK;
    }

private:
    // Regular-looking entries of `dir` (no dot files), sorted: maildir names
    // start with the delivery time, so this is roughly arrival order.
    std::vector<std::string> list(const fs::path& dir, bool* ok = nullptr) {
        std::vector<std::string> names;
        DIR* d = ::opendir(dir.c_str());
        if (ok) *ok = d != nullptr;
        if (!d) {
            if (!list_error_logged_) host().error("cannot list " + dir.string() + ": " + os_error());
            list_error_logged_ = true;
            return names;
        }
        list_error_logged_ = false;
        while (dirent* e = ::readdir(d)) {
            if (!plain_name(e->d_name) || e->d_type == DT_DIR) continue;
            names.emplace_back(e->d_name);
        }
        ::closedir(d);
        std::sort(names.begin(), names.end());
        return names;
    }

    void unreadable(const std::string& name, const std::string& why) {
        host().count("read_errors");
        if (unreadable_.insert(name).second)
            host().error("cannot read message " + name + " (" + why + "); it stays in new/");
    }

    // A failure of the journal or the disk stops the poll (the message stays
    // for the next one); a failure of this one message must not block the
    // messages behind it, so it is quarantined instead.
    bool take_guarded(const std::string& name) {
        std::string why;
        try {
            return take(name);
        } catch (const sb::Error& e) {
            if (e.status() == SB_ERR_UNAVAILABLE || e.status() == SB_ERR_TRANSIENT) throw;
            why = e.what();
        } catch (const std::exception& e) {
            why = e.what();
        }
        host().count("messages_failed");
        host().error("message " + name + " could not be made into a record: " + why);
        std::string head;
        int fd = ::open((new_dir_ / name).c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0) return false;
        {
            Fd guard(fd);
            if (!read_up_to(fd, kQuarantineHead, head)) return false;
        }
        return quarantine_and_remove(name, head, "could not be made into a record (first " +
                                                     std::to_string(head.size()) + " bytes kept)");
    }

    // Takes one message from new/. True when the drop changed.
    bool take(const std::string& name) {
        fs::path path = new_dir_ / name;
        int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0) {
            if (errno != ENOENT) unreadable(name, os_error()); // ENOENT: gone meanwhile
            return false;
        }
        Fd guard(fd);
        struct stat st {};
        if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
            unreadable(name, "not a regular file");
            return false;
        }
        auto size = static_cast<std::uint64_t>(st.st_size);
        std::string raw;
        if (size > max_message_) {
            if (!read_up_to(fd, kQuarantineHead, raw)) {
                unreadable(name, os_error());
                return false;
            }
            host().count("messages_oversized");
            return quarantine_and_remove(name, raw,
                                         "message of " + std::to_string(size) +
                                             " bytes exceeds max_message (" +
                                             std::to_string(max_message_) + " bytes); first " +
                                             std::to_string(raw.size()) + " bytes kept");
        }
        if (!read_up_to(fd, static_cast<std::size_t>(max_message_) + 1, raw)) {
            unreadable(name, os_error());
            return false;
        }
        if (raw.size() > max_message_) { // grew since fstat
            host().count("messages_oversized");
            raw.resize(std::min(raw.size(), kQuarantineHead));
            return quarantine_and_remove(name, raw, "message exceeds max_message (" +
                                                        std::to_string(max_message_) +
                                                        " bytes); first " +
                                                        std::to_string(raw.size()) + " bytes kept");
        }
        host().count("messages_read");
        sbmail::Message msg = sbmail::parse_message(raw, limits_);
        if (!msg.refused.empty()) {
            host().count("messages_over_limits");
            return quarantine_and_remove(name, raw, "message refused: " + msg.refused);
        }

        // An empty file or bare headers: nothing a department could act on.
        if (!(msg.from && !msg.from->address.empty()) && msg.subject.empty() && msg.text.empty() &&
            msg.attachments.empty()) {
            host().count("messages_unusable");
            return quarantine_and_remove(name, raw, "no sender, subject, text or attachment");
        }

        const std::string external_id =
            msg.message_id.empty() ? "sha256:" + sha256_hex(raw) : msg.message_id;
        const std::string key_hash = sha256_hex(external_id).substr(0, 32);
        const std::string key = "m." + key_hash;
        const std::string tag = " (record key " + key_hash.substr(0, 12) + ")";

        // Already taken by this instance: a redelivery. Note where this copy
        // goes, so that the erase hook finds it too, then move it.
        if (auto known = host().state(key.c_str())) {
            std::vector<std::string> names = split_list(*known);
            std::string target = free_base(base_of(name));
            if (std::find(names.begin(), names.end(), target) == names.end()) names.push_back(target);
            if (host().set_state(key.c_str(), join_list(names)) != SB_OK)
                throw sb::Error(SB_ERR_UNAVAILABLE, "state not saved for message " + name +
                                                        "; it stays in new/");
            host().count("records_duplicate");
            host().info("message " + name + " repeats one already taken" + tag + "; moved to cur/");
            move_to_cur(name, target, key, names);
            return true;
        }

        std::string target = free_base(base_of(name));
        fs::path dir = attachments_ / key_hash;
        std::vector<WrittenFile> files;
        std::vector<std::string> extra_defects;
        std::string text = msg.text;
        if (text.size() > max_text_) {
            // The whole text is kept as an attachment, so nothing is lost.
            sbmail::Attachment whole;
            whole.filename = "body.txt";
            whole.media_type = "text/plain";
            whole.data = text;
            msg.attachments.push_back(std::move(whole));
            text = utf8_prefix(text, max_text_);
            extra_defects.push_back("text cut at " + std::to_string(max_text_) +
                                    " bytes; the whole text is attachment " +
                                    std::to_string(msg.attachments.size()));
        }
        write_attachments(name, dir, msg.attachments, files);

        sb::Status result;
        try {
            result = emit(msg, text, external_id, target, key, files, extra_defects, true);
            if (result != SB_OK && result != SB_DUPLICATE && msg.date) {
                // A Date header the host will not take (older than the
                // retention period, e.g. a sender's clock set years back): the
                // contact is real and arrived now, so it is kept from now.
                extra_defects.push_back("Date header refused as occurred_at (before the retention "
                                        "period?); left out");
                result = emit(msg, text, external_id, target, key, files, extra_defects, false);
            }
        } catch (...) {
            remove_tree(dir); // not committed: nothing refers to them
            throw;
        }
        switch (result) {
        case SB_OK:
            host().count("records_emitted");
            if (!files.empty()) host().count("attachments_written", files.size());
            if (!msg.defects.list().empty()) host().count("defects", msg.defects.list().size());
            host().info("took message " + name + tag + ": " + std::to_string(files.size()) +
                        " attachment(s), " +
                        std::to_string(msg.defects.list().size() + extra_defects.size()) +
                        " defect(s)");
            move_to_cur(name, target, key, {target});
            return true;
        case SB_DUPLICATE: {
            // The journal holds this key but this instance has no note of it:
            // its record was erased (retention or a subject's request) while
            // the key is still remembered. A copy left in the drop would
            // outlive the erasure, so this one goes too.
            remove_tree(dir);
            host().clear_state(key.c_str());
            host().count("duplicates_of_erased");
            host().info("message " + name + " repeats a message whose record was erased" + tag +
                        "; removed from the drop");
            remove_from_new(name);
            return true;
        }
        default:
            remove_tree(dir);
            host().clear_state(key.c_str());
            host().count("records_refused");
            return quarantine_and_remove(name, raw,
                                         std::string("record refused by the host (") +
                                             sb::status_name(result) + ")");
        }
    }

    struct WrittenFile {
        std::string name, uri, media_type, sha256, filename;
        std::int64_t size;
        const char* category;
    };

    // Writes the attachments durably under `dir` (replacing what a failed
    // earlier attempt left there); throws (the message stays in new/) if it
    // cannot.
    void write_attachments(const std::string& message, const fs::path& dir,
                           const std::vector<sbmail::Attachment>& attachments,
                           std::vector<WrittenFile>& files) {
        remove_tree(dir);
        if (attachments.empty()) return;
        std::error_code ec;
        fs::create_directories(dir, ec);
        std::string error = ec ? ec.message() : "";
        for (std::size_t i = 0; error.empty() && i < attachments.size(); ++i) {
            const auto& a = attachments[i];
            std::string file = std::to_string(i + 1) + "-" + sbmail::safe_filename(a.filename, a.media_type);
            fs::path path = dir / file;
            if (!write_durably(path, a.data, error)) break;
            std::string media = a.media_type.empty() ? "application/octet-stream" : a.media_type;
            files.push_back({"attachment-" + std::to_string(i + 1), "file://" + path.string(), media,
                             sha256_hex(a.data), a.filename, static_cast<std::int64_t>(a.data.size()),
                             attachment_category(media)});
        }
        if (error.empty() && !(fsync_path(dir) && fsync_path(attachments_))) error = os_error();
        if (!error.empty()) {
            remove_tree(dir);
            files.clear();
            host().count("attachment_errors");
            throw sb::Error(SB_ERR_TRANSIENT, "cannot write the attachments of message " + message +
                                                  " under " + dir.string() + ": " + error +
                                                  "; it stays in new/");
        }
    }

    // Builds the record and commits it with its state note. Throws when the
    // journal did not commit (the message stays in new/).
    sb::Status emit(const sbmail::Message& msg, const std::string& text,
                    const std::string& external_id, const std::string& target,
                    const std::string& key, const std::vector<WrittenFile>& files,
                    const std::vector<std::string>& extra_defects, bool with_date) {
        sb::Record r = host().record();
        r.meta(SB_META_CHANNEL, "email");
        r.meta(SB_META_EXTERNAL_ID, external_id);
        r.meta(SB_META_SUBJECT_REF, target);
        if (with_date && msg.date) r.meta(SB_META_OCCURRED_AT, sb::format_time(*msg.date));
        std::vector<std::string> defects = msg.defects.list();
        if (msg.from) {
            if (!msg.from->name.empty()) r.set("citizen.name", msg.from->name, "identity.name");
            if (msg.from->address.find('@') != std::string::npos)
                r.set("contact.email", msg.from->address, "contact.email");
        }
        if (!msg.subject.empty()) {
            std::string subject = utf8_prefix(msg.subject, kMaxSubject);
            if (subject.size() < msg.subject.size())
                defects.push_back("Subject cut at " + std::to_string(kMaxSubject) + " bytes");
            r.set("content.subject", subject, "content.free_text");
            r.set("hints.subject", subject, "classification.hint");
        }
        if (!text.empty()) r.set("content.text", text, "content.free_text");
        if (!msg.message_id.empty()) r.set("content.message_id", msg.message_id, "content.meta");
        std::string thread = msg.thread_id();
        r.set("content.thread_id", thread.empty() ? external_id : thread, "content.meta");
        if (!msg.in_reply_to.empty()) r.set("content.in_reply_to", msg.in_reply_to.front(), "content.meta");
        for (std::size_t i = 0; i < files.size(); ++i) {
            const auto& f = files[i];
            if (!f.filename.empty())
                r.set("content.attachments[" + std::to_string(i) + "].filename", f.filename,
                      "content.free_text");
            r.set("content.attachments[" + std::to_string(i) + "].name", f.name, "content.meta");
            sb_attachment a{};
            a.struct_size = sizeof a;
            a.name = f.name.c_str();
            a.uri = f.uri.c_str();
            a.media_type = f.media_type.c_str();
            a.size = f.size;
            a.sha256 = f.sha256.c_str();
            a.category = f.category;
            r.attach(a);
        }
        defects.insert(defects.end(), extra_defects.begin(), extra_defects.end());
        for (std::size_t i = 0; i < defects.size(); ++i)
            r.set("defects[" + std::to_string(i) + "]", defects[i], "operational.defect");

        std::vector<sb::Record> batch;
        batch.push_back(std::move(r));
        std::vector<sb::Status> results;
        sb::Status s = host().emit_batch(batch, key.c_str(), target.c_str(), &results);
        if (s != SB_OK) {
            host().count("emit_unavailable");
            throw sb::Error(s, "journal did not commit the record of message " + target +
                                   "; it stays in new/");
        }
        return results.empty() ? SB_ERR_INTERNAL : results.front();
    }

    // A base name for cur/ that no file there has yet (maildir names are
    // unique, but the same file may be delivered twice under one name).
    std::string free_base(const std::string& base) {
        std::set<std::string> taken;
        for (const auto& n : list(cur_dir_)) taken.insert(base_of(n));
        if (!taken.count(base)) return base;
        for (int k = 1;; ++k) {
            std::string candidate = base + "_" + std::to_string(k);
            if (!taken.count(candidate)) return candidate;
        }
    }

    // new/<name> -> cur/<target>:2, without replacing anything there.
    void move_to_cur(const std::string& name, std::string target, const std::string& key,
                     std::vector<std::string> names) {
        fs::path from = new_dir_ / name;
        for (int attempt = 0; attempt < 3; ++attempt) {
            fs::path to = cur_dir_ / (target + ":2,");
            int rc = ::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE);
            if (rc != 0 && errno == EINVAL) {
                // A file system without RENAME_NOREPLACE: check, then rename.
                struct stat st {};
                if (::lstat(to.c_str(), &st) == 0)
                    errno = EEXIST;
                else
                    rc = ::rename(from.c_str(), to.c_str());
            }
            if (rc == 0) return;
            if (errno == ENOENT) return; // erased or removed meanwhile
            if (errno != EEXIST) break;
            // Someone made that name since: pick another and note it.
            target = free_base(target);
            names.push_back(target);
            host().set_state(key.c_str(), join_list(names));
        }
        host().count("move_failed");
        host().error("cannot move message " + name + " to cur/: " + os_error() +
                     "; it will be moved at the next poll");
    }

    bool quarantine_and_remove(const std::string& name, std::string_view bytes, const std::string& reason) {
        sb::Status s = host().quarantine(bytes, reason, name.c_str());
        if (s != SB_OK) {
            host().count("quarantine_failed");
            throw sb::Error(s, "could not quarantine message " + name + "; it stays in new/");
        }
        host().count("messages_quarantined");
        host().warn("quarantined message " + name + ": " + reason + "; removed from the drop");
        // The quarantine holds it now, and expires; a copy left in the drop would not.
        remove_from_new(name);
        return true;
    }

    void remove_from_new(const std::string& name) {
        if (::unlink((new_dir_ / name).c_str()) != 0 && errno != ENOENT)
            host().error("cannot remove message " + name + " from new/: " + os_error());
    }

    static void remove_tree(const fs::path& dir) {
        std::error_code ec;
        fs::remove_all(dir, ec);
    }

    const fs::path maildir_, new_dir_, cur_dir_;
    const std::uint64_t max_message_;
    const std::size_t max_text_;
    sbmail::Limits limits_;
    fs::path attachments_;
    std::mutex mutex_;              // one message or one erase at a time
    std::set<std::string> unreadable_; // names already logged as unreadable
    std::atomic<bool> list_error_logged_{false}; // poll and erase threads
};

} // namespace

SB_PLUGIN(EmailSource)
