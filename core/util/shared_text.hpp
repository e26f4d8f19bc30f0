#pragma once

// An immutable text kept once for the life of the process (interned), and
// copied as a pointer: for the few texts that very many objects carry, such
// as the purpose and profile of each outbox entry. Copying one allocates
// nothing, and freeing one frees nothing, whichever thread made it.
//
// Only for texts from a small set (configuration, the store's own entries):
// every distinct text made stays in memory until the process ends.

#include <string>
#include <string_view>

namespace switchboard::util {

class SharedText {
public:
    SharedText() : text_(&none()) {}
    SharedText(std::string_view text) : text_(intern(text)) {}
    SharedText(const std::string& text) : text_(intern(text)) {}
    SharedText(const char* text) : text_(intern(text)) {}

    const std::string& str() const { return *text_; }
    operator const std::string&() const { return *text_; }
    operator std::string_view() const { return *text_; }
    const char* c_str() const { return text_->c_str(); }
    std::size_t size() const { return text_->size(); }
    bool empty() const { return text_->empty(); }

    friend bool operator==(const SharedText& a, const SharedText& b) { return a.text_ == b.text_; }
    friend bool operator==(const SharedText& a, std::string_view b) { return std::string_view(*a.text_) == b; }
    friend bool operator==(const SharedText& a, const char* b) { return std::string_view(*a.text_) == b; }
    friend bool operator==(const SharedText& a, const std::string& b) { return *a.text_ == b; }

private:
    static const std::string& none();
    // The process's one copy of `text` (made on first sight).
    static const std::string* intern(std::string_view text);

    const std::string* text_;
};

} // namespace switchboard::util
