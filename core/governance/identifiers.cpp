#include "governance/identifiers.hpp"

#include <cctype>

namespace switchboard::governance {

namespace {

bool digit(char c) { return c >= '0' && c <= '9'; }
bool letter(char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'); }
char upper(char c) { return static_cast<char>(std::toupper(static_cast<unsigned char>(c))); }
char lower(char c) { return static_cast<char>(std::tolower(static_cast<unsigned char>(c))); }

std::string_view trim(std::string_view s) {
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
    return s;
}

} // namespace

std::string normal_phone(std::string_view text) {
    text = trim(text);
    std::string digits;
    bool plus = false;
    for (std::size_t i = 0; i < text.size(); ++i) {
        char c = text[i];
        if (digit(c)) {
            digits.push_back(c);
        } else if (c == '+' && digits.empty() && !plus) {
            plus = true;
        } else if (c == '(' && i + 2 < text.size() && text[i + 1] == '0' && text[i + 2] == ')') {
            i += 2; // the "(0)" of "+44 (0)20 ..." is not dialled
        } else if (c == ' ' || c == '-' || c == '.' || c == '(' || c == ')' || c == '\t') {
            continue;
        } else {
            return {}; // letters or other text: not a phone number
        }
    }
    if (!plus && digits.rfind("00", 0) == 0) {
        digits.erase(0, 2);
        plus = true;
    }
    if (!plus && digits.size() == 12 && digits.rfind("44", 0) == 0) plus = true; // 447700900123
    if (plus && digits.rfind("44", 0) == 0) {
        digits = "0" + digits.substr(2);
        plus = false;
    }
    if (digits.size() < 7 || digits.size() > 15) return {};
    return plus ? "+" + digits : digits;
}

std::string normal_nino(std::string_view text) {
    std::string out;
    for (char c : text)
        if (!std::isspace(static_cast<unsigned char>(c)) && c != '-') out.push_back(upper(c));
    if (out.size() != 8 && out.size() != 9) return {};
    if (!letter(out[0]) || !letter(out[1])) return {};
    for (std::size_t i = 2; i < 8; ++i)
        if (!digit(out[i])) return {};
    if (out.size() == 9 && !(out[8] >= 'A' && out[8] <= 'D')) return {};
    return out;
}

bool nino_matches(std::string_view a, std::string_view b) {
    return a.size() >= 8 && b.size() >= 8 && a.substr(0, 8) == b.substr(0, 8);
}

std::string normal_postcode(std::string_view text) {
    std::string out;
    for (char c : text) {
        if (std::isspace(static_cast<unsigned char>(c))) continue;
        if (!digit(c) && !letter(c)) return {};
        out.push_back(upper(c));
    }
    if (out.size() < 5 || out.size() > 7 || !letter(out[0])) return {};
    return out;
}

std::string normal_email(std::string_view text) {
    text = trim(text);
    if (text.size() >= 2 && text.front() == '<' && text.back() == '>') text = text.substr(1, text.size() - 2);
    auto at = text.find('@');
    if (at == std::string_view::npos || at == 0 || at + 1 >= text.size() ||
        text.find('@', at + 1) != std::string_view::npos)
        return {};
    std::string out;
    for (char c : text) {
        if (std::isspace(static_cast<unsigned char>(c))) return {};
        out.push_back(lower(c));
    }
    return out;
}

std::string normal_name(std::string_view text) {
    std::string out;
    bool space = false;
    for (char c : text) {
        unsigned char u = static_cast<unsigned char>(c);
        if (std::isalnum(u) || c == '-' || c == '\'' || u >= 0x80) {
            if (space && !out.empty()) out.push_back(' ');
            space = false;
            out.push_back(lower(c));
        } else {
            space = true; // whitespace, commas, dots: word breaks
        }
    }
    return out;
}

std::string normal_reference(std::string_view text) {
    std::string out;
    for (char c : text) {
        if (std::isspace(static_cast<unsigned char>(c)) || c == '-' || c == '/') continue;
        out.push_back(upper(c));
    }
    return out;
}

} // namespace switchboard::governance
