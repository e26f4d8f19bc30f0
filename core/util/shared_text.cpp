#include "util/shared_text.hpp"

#include <memory>
#include <mutex>
#include <unordered_map>

namespace switchboard::util {

const std::string& SharedText::none() {
    static const std::string none;
    return none;
}

const std::string* SharedText::intern(std::string_view text) {
    if (text.empty()) return &none();
    // The last text this thread asked for: most runs of entries (a
    // destination's, read back from the store) share theirs.
    thread_local const std::string* last = nullptr;
    if (last && *last == text) return last;
    static std::mutex mutex;
    static std::unordered_map<std::string_view, std::unique_ptr<const std::string>> texts; // keys view the values
    std::lock_guard lock(mutex);
    auto it = texts.find(text);
    if (it == texts.end()) {
        auto kept = std::make_unique<const std::string>(text);
        const std::string_view key = *kept;
        it = texts.emplace(key, std::move(kept)).first;
    }
    return last = it->second.get();
}

} // namespace switchboard::util
